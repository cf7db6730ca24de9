"""What to send next and what an answer means: the consumer's logic, free of I/O.

The thread consumer (`Client`) and the asyncio consumer (`AsyncClient`) both drive a
`Dispatcher`: take a batch, send `request()`, hand the answer to `on_response()` or
the failure to `on_failure()`, and sleep for the delay they return (None: done).
Only the durable spool, when configured, touches the disk from here.

An event given up on (refused for good, out of retries) is counted in `stats()` with the
reason, logged, and passed to `on_error`; a refused write key (401, 403) is logged once
per client, since every later batch meets the same answer.

A batch the gateway refuses as too large (413) is split in two halves, sent in order
before anything else (see `Dispatcher._too_large`).
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
    refuses_write_key,
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
_TOO_LARGE = 413


@dataclass
class Outbound:
    """A batch being delivered."""

    items: list[bytes]
    spool_ids: list[int] = field(default_factory=list)  # the spool positions of the items
    attempt: int = 0
    body_bytes: int = 0  # size of the last request body, as sent

    def halves(self) -> tuple[Outbound, Outbound]:
        """The first and the second half of the events (and their spool rows), in order."""
        middle = (len(self.items) + 1) // 2
        ids = self.spool_ids
        return (
            Outbound(self.items[:middle], ids[:middle]),
            Outbound(self.items[middle:], ids[middle:]),
        )


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
        self._halves: list[Outbound] = []  # what splits left to send; the next one last
        self._key_refused = False  # a refused write key is logged once
        self.url = options.endpoint
        self._headers = {
            **codec.headers(),
            "Authorization": f"Bearer {write_key}",
            "User-Agent": lib,
        }

    # -- choosing what to send -------------------------------------------------

    def adopt_orphans(self) -> None:
        """Spool mode: take over what processes that are gone left in the spool directory."""
        if self.spool is not None:
            self.spool.adopt_orphans()

    def waiting(self) -> int:
        """Events accepted and not yet settled (queued, or in the spool)."""
        return len(self.queue) + (len(self.spool) if self.spool is not None else 0)

    def clean_since_last_flush(self) -> bool:
        """Whether no accepted event was given up on since the previous flush asked."""
        return self._counters.clean_since_last_flush()

    def next_batch(self, *, partial: bool) -> Outbound | None:
        """The next batch to send: only a full one unless `partial`; None when there is none."""
        if self._halves:
            return self._halves.pop()  # already taken: they go before anything new
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
        return self.spool.end_position() if self.spool is not None else self.queue.last_sequence

    def settled(self, mark: int) -> bool:
        """Whether every event up to `mark` was delivered or given up on."""
        if self.spool is not None:
            return self.spool.settled_before(mark)
        return self.queue.resolved_through() >= mark

    # -- one attempt -----------------------------------------------------------

    def request(self, batch: Outbound) -> tuple[bytes, Mapping[str, str]]:
        """The body and headers for the next attempt at `batch` (stamped with `sent_at`)."""
        body = self._codec.encode_batch(batch.items, sent_at=datetime.now(UTC), lib=self._lib)
        batch.body_bytes = len(body)
        return body, self._headers

    def on_response(self, batch: Outbound, response: Response) -> float | None:
        """Account for an HTTP answer; returns seconds until a retry, or None when done.

        After a 413 on several events (None too) the batch's halves are what `next_batch`
        returns next (see `_too_large`).
        """
        status = response.status
        if 200 <= status < 300:
            self._delivered(batch, response.body)
            return None
        detail = response.body[:300].decode("utf-8", "replace")
        if status == _TOO_LARGE:
            self._too_large(batch, detail)
            return None
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

    def abandon(self, batch: Outbound | None = None) -> None:
        """Stop at shutdown: `batch` and the halves of a split batch still waiting.

        The spool keeps their events for the next process; memory loses them (`shutdown`).
        """
        batches = [*self._halves, *([batch] if batch is not None else [])]
        self._halves.clear()
        if not batches:
            return
        if self.spool is not None:
            for b in batches:
                self.spool.release(b.spool_ids, b.items, count_attempt=False)
        else:
            count = sum(len(b.items) for b in batches)
            self._counters.give_up("shutdown", count, "still being sent when shutdown stopped")
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

    def _too_large(self, batch: Outbound, detail: str) -> None:
        """The gateway refused `batch` as over its body limit (413): halve it, or give up on it.

        The halves go before anything else, first half first: each is sent with its own
        retries and halved again while it is refused, so the events keep their order and
        none is lost to a limit the client cannot know. Only an event refused alone is
        given up on: it goes to `on_error` with its size and counts as `rejected`. In the
        spool the halves keep their leases; each half's rows are deleted once it is
        delivered, so a restart sends only what was not.

        For comparison, segment's analytics-python and posthog-python treat 413 as a final
        4xx and hand the whole batch to `on_error`; they avoid it with limits below the
        server's (32 KB an event and 475 KB a batch for 500 KB; 900 KiB and 5 MiB for
        20 MiB). posthog-js halves its batch size for good and tries again. Halving only the
        refused batch keeps one large event from shrinking every later batch; a gateway
        whose limit is under `max_batch_bytes` costs a 413 a batch, which the log names.
        """
        if len(batch.items) > 1:
            first, second = batch.halves()
            self._halves += [second, first]
            logger.warning(
                "gateway answered 413 to a batch of %d events (%d bytes sent): sending it"
                " in halves; a max_batch_bytes under the gateway's body limit avoids this",
                len(batch.items),
                batch.body_bytes,
            )
            return
        [item] = batch.items
        name = self._codec.decode_message(item).event
        exc = Rejected(
            _TOO_LARGE,
            f"event {name!r} is {len(item)} bytes encoded ({batch.body_bytes} bytes as sent),"
            f" over the gateway's body limit: {detail}",
        )
        self._give_up(batch, exc, "rejected")

    def _give_up(self, batch: Outbound, exc: DeliveryError, reason: DropReason) -> None:
        if self.spool is not None and reason == "retries_exhausted":
            spent = self.spool.release(batch.spool_ids, batch.items, count_attempt=True)
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
        elif not self._halves:  # the taken batch is settled once its last half is
            self.queue.settle()

    def _report(self, exc: DeliveryError, items: list[bytes], reason: DropReason) -> None:
        self._counters.give_up(reason, len(items), f"{type(exc).__name__}: {exc}")
        self._counters.error(exc)
        self._log_given_up(exc, len(items), reason)
        if self._on_error is None:
            return
        try:
            self._on_error(exc, [self._codec.decode_message(item) for item in items])
        except Exception:
            logger.exception("on_error callback raised")

    def _log_given_up(self, exc: DeliveryError, count: int, reason: DropReason) -> None:
        if not refuses_write_key(exc):
            logger.warning("dropped %d events (%s): %s", count, reason, exc)
        elif not self._key_refused:
            self._key_refused = True
            logger.warning(
                "the gateway refused the write key: %s; every event is given up on"
                " (logged once; stats() and on_error see each batch)",
                exc,
            )
        else:
            logger.debug("dropped %d events (%s): %s", count, reason, exc)
