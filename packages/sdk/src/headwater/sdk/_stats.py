"""Counters of what a client did with its events, and their snapshot."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Literal

import msgspec

DropReason = Literal[
    "queue_full",  # the overflow policy refused or evicted it
    "invalid",  # an EventError: it could never be sent
    "rejected",  # the gateway refused it (4xx, or listed as rejected)
    "retries_exhausted",  # 408/429/5xx/network until the retry budget ran out
    "shutdown",  # still queued when shutdown's timeout passed, or sent after shutdown
    "spool_full",  # evicted from the durable spool to stay under its size
    "disabled",  # the client is disabled
]


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a client's counters (`Client.stats()`)."""

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

    def drop(self, reason: DropReason, count: int = 1) -> None:
        """Count `count` events lost for `reason` (any thread)."""
        with self._lock:
            self.drops[reason] += count

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
        )
