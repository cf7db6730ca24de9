"""Refused events on their way to `ingest_errors`: on a thread of their own, bounded."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import msgspec

from ._events import Context
from ._metrics import Metrics

logger = logging.getLogger("headwater.gateway")

MAX_BYTES = 64 << 20  # refused events waiting for ClickHouse, at most (and `max_rows`)
_encode = msgspec.json.Encoder().encode


class ErrorRow(msgspec.Struct, array_like=True):
    """A row of `ingest_errors`, in column order (encoded as JSONCompactEachRow)."""

    error_id: str
    project: str
    received_at: datetime
    source: str
    event_index: int
    reason: str
    payload: str


def error_row(ctx: Context, index: int, reason: str, raw: bytes) -> ErrorRow:
    """The dead letter of the request's event at `index` (-1: the whole body)."""
    return ErrorRow(
        error_id=str(uuid.uuid4()),
        project=ctx.project,
        received_at=ctx.received_at,
        source=ctx.source,
        event_index=index,
        reason=reason,
        payload=raw.decode("utf-8", "replace"),
    )


class DeadLetters:
    """Writes refused events to `ingest_errors`; a failure there never fails a request.

    A request waits for its dead letters as long as it would for an insert (`wait`), no
    longer: past it, they are written when ClickHouse frees, or counted as failed. They
    wait on a thread of their own, never in the default executor (whose few threads the
    readiness probe needs), at most `max_rows` rows or `MAX_BYTES` of them; beyond, and
    once closed, more are counted as failed at once.
    """

    def __init__(
        self, insert: Callable[[bytes], None], *, metrics: Metrics, wait: float, max_rows: int
    ) -> None:
        self._insert = insert
        self._metrics = metrics
        self._wait = wait
        self._max_rows = max_rows
        self._rows = 0  # waiting
        self._bytes = 0
        self._closed = False
        self._writes: set[asyncio.Future[None]] = set()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="headwater-dead")

    async def keep(self, rows: list[ErrorRow]) -> None:
        count = len(rows)
        body = b"\n".join(_encode(row) for row in rows)
        full = self._rows and (
            self._rows + count > self._max_rows or self._bytes + len(body) > MAX_BYTES
        )
        if full or self._closed:
            self._metrics.dead_letter_failures.inc(count)
            logger.error(
                "could not keep %d refused events in ingest_errors: %s"
                " (%d rows, %d bytes wait for ClickHouse)",
                count,
                "the gateway is stopping" if self._closed else "the queue is full",
                self._rows,
                self._bytes,
            )
            return
        self._rows += count
        self._bytes += len(body)
        pending = asyncio.wrap_future(self._thread.submit(self._insert, body))
        self._writes.add(pending)
        pending.add_done_callback(functools.partial(self._done, count, len(body)))
        await asyncio.wait([pending], timeout=self._wait)

    def _done(self, count: int, size: int, written: asyncio.Future[None]) -> None:
        self._rows -= count
        self._bytes -= size
        self._writes.discard(written)
        failure = "cancelled" if written.cancelled() else written.exception()
        if failure is None:
            self._metrics.dead_letters.inc(count)
            return
        self._metrics.dead_letter_failures.inc(count)
        logger.error("could not keep %d refused events in ingest_errors: %r", count, failure)

    async def close(self) -> None:
        """Wait for the writes under way as long as a request would (graceful shutdown).
        Later ones (a request answered by the last flush) are counted as failed, and
        those still queued behind a hung insert are cancelled, counted the same way."""
        if self._writes:
            await asyncio.wait(self._writes, timeout=self._wait)
        self._closed = True
        self._thread.shutdown(wait=False, cancel_futures=True)
