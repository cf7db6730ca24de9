"""What to send next and what an answer means: the consumer's logic, free of I/O.

The thread consumer (`Client`) and the asyncio consumer (`AsyncClient`) both drive a
`Dispatcher`: take a batch, send `request()`, hand the answer to `on_response()` or
the failure to `on_failure()`, and sleep for the delay they return (None: done).
Only the durable spool, when configured, touches the disk from here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ._errors import (
    DeliveryError,
    Rejected,
    ServerError,
    counts_against_batch,
)
from ._options import ClientOptions
from ._queue import EventQueue
from ._retry import backoff_delay, parse_retry_after
from ._spool import Spool
from ._stats import Counters, DropReason
from ._transport import Response
from ._wire import AnyMessage, WireCodec, decode_batch_result

logger = logging.getLogger("headwater.sdk")

ErrorCallback = Callable[[Exception, list[AnyMessage]], object]

_RETRY_STATUSES = frozenset({408, 429})


@dataclass
class Outbound:
    """A batch being delivered."""

    items: list[bytes]
    spool_ids: list[int] = field(default_factory=list)
    attempt: int = 0


class Dispatcher:
    """Batches from the queue (or the spool) and the fate of each answer."""

    def __init__(
        self,
        *,
        options: ClientOptions,
        codec: WireCodec,
        queue: EventQueue,
        spool: Spool | None,
        counters: Counters,
        on_error: ErrorCallback | None,
        lib: str,
        write_key: str,
    ) -> None:
        self._options = options
        self._codec = codec
        self.queue = queue
        self.spool = spool
        self._counters = counters
        self._on_error = on_error
        self._lib = lib
        self.url = options.endpoint
        self._headers = {
            **codec.headers(),
            "Authorization": f"Bearer {write_key}",
            "User-Agent": lib,
        }

    # -- choosing what to send -------------------------------------------------

    def absorb(self) -> None:
        """Spool mode: move everything queued in memory to the durable spool."""
        if self.spool is None:
            return
        items = self.queue.take(len(self.queue) or 1, self._options.max_queue_bytes)
        try:
            self.spool.put_many(items)
        finally:
            self.queue.settle()

    def next_batch(self, *, partial: bool) -> Outbound | None:
        """The next batch to send: only a full one unless `partial`; None when there is none."""
        limits = (self._options.max_batch_events, self._options.max_batch_bytes)
        if self.spool is not None:
            ids, items = self.spool.take(*limits)
            return Outbound(items, ids) if items else None
        if not partial and not self.queue.ready():
            return None
        items = self.queue.take(*limits)
        return Outbound(items) if items else None

    def watermark(self) -> int:
        """A mark covering every event accepted so far (see `settled`)."""
        return self.spool.last_id() if self.spool is not None else self.queue.last_sequence

    def settled(self, mark: int) -> bool:
        """Whether every event up to `mark` was delivered or given up on."""
        if self.spool is not None:
            return not self.spool.holds_through(mark)
        return self.queue.resolved_through() >= mark

    # -- one attempt -----------------------------------------------------------

    def request(self, batch: Outbound) -> tuple[bytes, Mapping[str, str]]:
        """The body and headers for the next attempt at `batch` (stamped with `sent_at`)."""
        body = self._codec.encode_batch(batch.items, sent_at=datetime.now(UTC), lib=self._lib)
        return body, self._headers

    def on_response(self, batch: Outbound, response: Response) -> float | None:
        """Account for an HTTP answer; returns seconds until a retry, or None when done."""
        status = response.status
        if 200 <= status < 300:
            self._delivered(batch, response.body)
            return None
        detail = response.body[:300].decode("utf-8", "replace")
        if status in _RETRY_STATUSES or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            return self.on_failure(batch, ServerError(status, detail, retry_after))
        self._give_up(batch, Rejected(status, detail), "rejected")
        return None

    def on_failure(self, batch: Outbound, exc: DeliveryError) -> float | None:
        """Account for a failed attempt; returns seconds until a retry, or None when done."""
        self._counters.error(exc)
        keep_trying = self.spool is not None and not counts_against_batch(exc)
        if batch.attempt >= self._options.max_retries and not keep_trying:
            self._give_up(batch, exc, "retries_exhausted")
            return None
        delay = backoff_delay(
            batch.attempt, base=self._options.backoff_base, cap=self._options.backoff_cap
        )
        if isinstance(exc, ServerError) and exc.retry_after is not None:
            delay = min(exc.retry_after, self._options.max_retry_after)
        batch.attempt += 1
        self._counters.retried += 1
        logger.info("batch of %d events: %s; retry in %.2fs", len(batch.items), exc, delay)
        return delay

    def abandon(self, batch: Outbound) -> None:
        """Stop working on `batch` at shutdown: the spool keeps it, memory loses it."""
        if self.spool is not None:
            self.spool.release(batch.spool_ids, count_attempt=False)
        else:
            self._counters.drop("shutdown", len(batch.items))
            self.queue.settle()

    # -- outcomes --------------------------------------------------------------

    def _delivered(self, batch: Outbound, body: bytes) -> None:
        result = decode_batch_result(body)
        rejected = result.rejected if result is not None else []
        self._counters.sent += len(batch.items) - len(rejected)
        self._counters.duplicates += result.duplicates if result is not None else 0
        if rejected:
            reasons = "; ".join(f"#{r.index}: {r.reason}" for r in rejected[:5])
            exc = Rejected(200, f"{len(rejected)} of {len(batch.items)} events: {reasons}")
            failed = [batch.items[r.index] for r in rejected if 0 <= r.index < len(batch.items)]
            self._report(exc, failed, "rejected")
        self._finish(batch)

    def _give_up(self, batch: Outbound, exc: DeliveryError, reason: DropReason) -> None:
        if self.spool is not None and reason == "retries_exhausted":
            spent = self.spool.release(batch.spool_ids, count_attempt=True)
            lost = [
                item for i, item in zip(batch.spool_ids, batch.items, strict=True) if i in spent
            ]
            if lost:
                self._report(exc, lost, reason)
            return
        self._report(exc, batch.items, reason)
        self._finish(batch)

    def _finish(self, batch: Outbound) -> None:
        if self.spool is not None:
            self.spool.ack(batch.spool_ids)
        else:
            self.queue.settle()

    def _report(self, exc: DeliveryError, items: list[bytes], reason: DropReason) -> None:
        self._counters.drop(reason, len(items))
        self._counters.error(exc)
        logger.warning("dropped %d events (%s): %s", len(items), reason, exc)
        if self._on_error is None:
            return
        try:
            self._on_error(exc, [self._codec.decode_message(item) for item in items])
        except Exception:
            logger.exception("on_error callback raised")
