"""Counters of what a client did with its events, and their snapshot."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Literal

import msgspec

DropReason = Literal[
    "queue_full",  # the overflow policy refused it, or evicted it (drop_oldest)
    "invalid",  # an EventError: it could never be sent
    "rejected",  # the gateway refused it (4xx, or listed as rejected)
    "retries_exhausted",  # 408/429/5xx/network until the retry budget ran out
    "shutdown",  # still queued when shutdown's timeout passed, or sent after shutdown
    "spool_full",  # the spool refused it (full, or its disk), or evicted it (drop_oldest)
    "disabled",  # the client is disabled
]


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a client's counters (`Client.stats()`).

    `dropped` counts every event lost, by reason, whether refused by the call that made it
    (which returned None) or given up on after the call returned its id. `given_up` counts
    only the latter: refused for good by the gateway, out of retries, evicted by
    `on_full="drop_oldest"`, or left behind by a shutdown; `given_up_reason` says why the
    last of them was lost. A `flush()` returns False when any was given up on since the
    previous `flush()`.
    """

    queued: int
    queued_bytes: int
    spooled: int
    enqueued: int
    sent: int
    duplicates: int
    retried: int
    filtered: int
    dropped: int
    dropped_by_reason: dict[str, int]
    last_error: str | None
    last_error_at: float | None
    given_up: int = 0
    given_up_reason: str | None = None


class Counters:
    """Mutable counters: caller-side ones under a lock, consumer-side ones by its one thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.enqueued = 0  # sync mode's count; queued events are counted by the queue
        self.sent = 0
        self.duplicates = 0
        self.retried = 0
        self.filtered = 0
        self.drops: Counter[str] = Counter()
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.given_up = 0
        self.given_up_reason: str | None = None
        self._given_up_at_flush = 0

    def drop(self, reason: DropReason, count: int = 1) -> None:
        """Count `count` events lost for `reason` (any thread)."""
        with self._lock:
            self.drops[reason] += count

    def give_up(self, reason: DropReason, count: int, detail: str) -> None:
        """Count `count` accepted events lost for `reason`, `detail` saying how (any thread)."""
        with self._lock:
            self.drops[reason] += count
            self.given_up += count
            self.given_up_reason = f"{reason}: {detail}"

    def clean_since_last_flush(self) -> bool:
        """Whether no event was given up on since the previous call (one per `flush()`)."""
        with self._lock:
            clean = self.given_up == self._given_up_at_flush
            self._given_up_at_flush = self.given_up
        return clean

    def filter(self) -> None:
        """Count an event that `before_send` dropped (any thread)."""
        with self._lock:
            self.filtered += 1

    def error(self, exc: BaseException) -> None:
        """Remember the latest failure for `stats()`."""
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.last_error_at = time.time()

    def snapshot(self, *, queued: int, queued_bytes: int, spooled: int, enqueued: int) -> Stats:
        """The counters as an immutable value."""
        drops = {reason: n for reason, n in self.drops.items() if n}
        return Stats(
            queued=queued,
            queued_bytes=queued_bytes,
            spooled=spooled,
            enqueued=self.enqueued + enqueued,
            sent=self.sent,
            duplicates=self.duplicates,
            retried=self.retried,
            filtered=self.filtered,
            dropped=sum(drops.values()),
            dropped_by_reason=drops,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            given_up=self.given_up,
            given_up_reason=self.given_up_reason,
        )
