"""The bounded in-memory queue between the caller's thread and the consumer."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from ._options import OverflowPolicy
from ._stats import Counters


class EventQueue:
    """Encoded events, bounded by count and bytes, with an overflow policy.

    Every event gets a sequence number when it enters; events leave in order, either
    taken by the consumer or evicted by `drop_oldest`. `resolved_through()` tells how
    far every event has left the queue and its fate is settled, which is what
    `flush()` waits for.
    """

    def __init__(
        self,
        *,
        max_events: int,
        max_bytes: int,
        batch_events: int,
        batch_bytes: int,
        policy: OverflowPolicy,
        block_timeout: float,
        counters: Counters,
    ) -> None:
        self._items: deque[bytes] = deque()
        self._bytes = 0
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._batch_events = batch_events
        self._batch_bytes = batch_bytes
        self._policy = policy
        self._block_timeout = block_timeout
        self._counters = counters
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._removed = 0  # sequence number of the last event that left the queue
        self._in_flight_from: int | None = None  # first sequence number of the taken batch
        self.on_batch_ready: Callable[[], None] = _nothing

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes of the queued events."""
        return self._bytes

    @property
    def last_sequence(self) -> int:
        """Sequence number of the newest event that entered."""
        return self._removed + len(self._items)

    def put(self, item: bytes) -> bool:
        """Append an encoded event; False when the overflow policy refused it."""
        size = len(item)
        with self._lock:
            if (
                len(self._items) >= self._max_events or self._bytes + size > self._max_bytes
            ) and not self._make_room(size):
                self._counters.drop("queue_full")
                return False
            self._items.append(item)
            self._bytes += size
            ready = len(self._items) >= self._batch_events or self._bytes >= self._batch_bytes
        if ready:
            self.on_batch_ready()
        return True

    def _make_room(self, size: int) -> bool:
        if self._policy == "drop_newest":
            return False
        if self._policy == "drop_oldest":
            while self._items and not self._fits(size):
                self._bytes -= len(self._items.popleft())
                self._removed += 1
                self._counters.give_up(
                    "queue_full", 1, "evicted for newer events (on_full='drop_oldest')"
                )
            return True
        deadline = time.monotonic() + self._block_timeout
        while not self._fits(size):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._space.wait(remaining):
                return self._fits(size)
        return True

    def _fits(self, size: int) -> bool:
        return len(self._items) < self._max_events and self._bytes + size <= self._max_bytes

    def ready(self) -> bool:
        """Whether a full batch is waiting."""
        return len(self._items) >= self._batch_events or self._bytes >= self._batch_bytes

    def take(self, max_events: int, max_bytes: int) -> list[bytes]:
        """Remove the oldest events, up to the limits, as the batch in flight."""
        batch: list[bytes] = []
        size = 0
        with self._lock:
            self._in_flight_from = self._removed + 1
            while self._items and len(batch) < max_events:
                item_size = len(self._items[0])
                if batch and size + item_size > max_bytes:
                    break
                batch.append(self._items.popleft())
                size += item_size
            self._bytes -= size
            self._removed += len(batch)
            if not batch:
                self._in_flight_from = None
            self._space.notify_all()
        return batch

    def settle(self) -> None:
        """The batch in flight was delivered or given up on."""
        with self._lock:
            self._in_flight_from = None

    def resolved_through(self) -> int:
        """Every event up to this sequence number has left the queue and is settled."""
        with self._lock:
            if self._in_flight_from is not None:
                return self._in_flight_from - 1
            return self._removed

    def clear(self) -> int:
        """Forget every queued event (after a fork, or at an aborted shutdown); returns how many."""
        with self._lock:
            count = len(self._items)
            self._items.clear()
            self._removed += count
            self._bytes = 0
            self._space.notify_all()
            return count


def _nothing() -> None:
    return None
