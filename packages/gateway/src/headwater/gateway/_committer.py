"""Group commit: rows of concurrent requests become one ClickHouse insert.

A request hands its rows (one block, whatever the insert takes) to `submit()` and waits;
the flusher task takes every waiting request (up to `max_rows`/`max_bytes`) once
`max_delay` has passed since the previous insert started, or enough rows are in, inserts
their blocks as one (with a deduplication token, so a retry of the same insert is a
no-op), and answers every waiter.
Past `deadline` the waiters get `SinkUnavailable`; beyond `queue_rows` waiting rows new
requests get `Overloaded` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ._errors import Overloaded, SinkUnavailable

logger = logging.getLogger("headwater.gateway")

Block = TypeVar("Block")


@dataclass
class _Waiter(Generic[Block]):
    block: Block
    rows: int
    size: int  # bytes, about
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommitter(Generic[Block]):
    """Coalesces concurrent inserts into one; one insert in flight at a time."""

    def __init__(
        self,
        insert: Callable[[list[Block], str], None],  # (blocks, token); blocking
        *,
        max_rows: int,
        max_bytes: int,
        max_delay: float,
        queue_rows: int,
        deadline: float,
        on_flush: Callable[[int, float], None] = lambda rows, seconds: None,
    ) -> None:
        self._insert = insert
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self._max_delay = max_delay
        self._queue_rows = queue_rows
        self._deadline = deadline
        self._on_flush = on_flush
        self._waiting: deque[_Waiter[Block]] = deque()
        self._rows = 0
        self._bytes = 0
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_start = float("-inf")
        self._in_flight: asyncio.Future[None] | None = None  # the latest insert's thread
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="headwater-insert")

    @property
    def queued_rows(self) -> int:
        """Rows waiting for an insert (not counting the block in flight)."""
        return self._rows

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    def admit(self) -> None:
        """Refuse a request at once, before its body is read, when nothing more can wait."""
        self._refuse_when(full=self._rows >= self._queue_rows)

    def _refuse_when(self, *, full: bool) -> None:
        if self._stopping:
            raise Overloaded("the gateway is shutting down", retry_after=5)
        if full:
            raise Overloaded(f"{self._rows} rows already wait for ClickHouse", retry_after=1)

    async def submit(self, block: Block, rows: int, size: int) -> None:
        """Return once the `rows` rows of `block` (about `size` bytes) are stored; raise
        `Unavailable` when they were not."""
        if not rows:
            return
        # one request larger than the queue goes alone
        self._refuse_when(full=bool(self._rows) and self._rows + rows > self._queue_rows)
        waiter = _Waiter(block, rows, size)
        self._waiting.append(waiter)
        self._rows += rows
        self._bytes += size
        self._arrived.set()
        if self._rows >= self._max_rows or self._bytes >= self._max_bytes:
            self._full.set()
        await asyncio.shield(waiter.done)

    async def _run(self) -> None:
        while not (self._stopping and not self._waiting):
            await self._arrived.wait()
            # Inserts start at least `max_delay` apart (a bound on ClickHouse parts per
            # second): rows arriving meanwhile, or during the insert in flight, join the
            # next one. After a quiet spell the first rows go at once: no waiter ever waits
            # `max_delay` beyond the insert it arrived during.
            loop = asyncio.get_running_loop()
            remaining = self._last_start + self._max_delay - loop.time()
            if not self._full.is_set() and not self._stopping and remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), remaining)
            batch = self._take()
            if batch:
                self._last_start = loop.time()
                await self._commit(batch)

    def _fits(self, waiter: _Waiter[Block], rows: int, size: int) -> bool:
        return rows + waiter.rows <= self._max_rows and size + waiter.size <= self._max_bytes

    def _take(self) -> list[_Waiter[Block]]:
        """The oldest waiters whose rows fit one block (at least one)."""
        taken: list[_Waiter[Block]] = []
        rows = size = 0
        while self._waiting and (not taken or self._fits(self._waiting[0], rows, size)):
            waiter = self._waiting.popleft()
            taken.append(waiter)
            rows += waiter.rows
            size += waiter.size
        self._rows -= rows
        self._bytes -= size
        if not self._waiting:
            self._arrived.clear()
        if self._rows < self._max_rows and self._bytes < self._max_bytes:
            self._full.clear()
        return taken

    async def _commit(self, batch: list[_Waiter[Block]]) -> None:
        blocks = [waiter.block for waiter in batch]
        rows = sum(waiter.rows for waiter in batch)
        token = uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        started = loop.time()
        error = await self._insert_within_deadline(blocks, token, started + self._deadline)
        self._on_flush(rows, loop.time() - started)
        for waiter in batch:
            if waiter.done.done():
                continue
            if error is None:
                waiter.done.set_result(None)
            else:
                waiter.done.set_exception(error)

    async def _insert_within_deadline(
        self, blocks: list[Block], token: str, deadline: float
    ) -> SinkUnavailable | None:
        loop = asyncio.get_running_loop()
        delay = 0.05
        while True:
            begun = loop.time()
            try:
                if not await self._attempt(blocks, token, deadline):
                    return SinkUnavailable(
                        f"ClickHouse did not finish an insert within {self._deadline:g} s",
                        retry_after=2,
                    )
            except Exception as raised:  # anything unexpected also means: not stored  # noqa: BLE001
                exc = (
                    raised if isinstance(raised, SinkUnavailable) else SinkUnavailable(repr(raised))
                )
                # no retry that would likely still be running at the deadline: the answer
                # then names the insert's own error, not the deadline
                if loop.time() + delay + (loop.time() - begun) >= deadline:
                    return exc
                logger.warning("insert failed, retrying in %.2fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            else:
                return None

    async def _attempt(self, blocks: list[Block], token: str, deadline: float) -> bool:
        """Insert once; False when the insert did not end by `deadline`.

        A thread cannot be stopped: an insert given up on may still store its block (the
        requests were answered 503, their retries are collapsed by the table's dedupe).
        The next insert waits for it first, as ClickHouse would make it wait anyway.
        """
        loop = asyncio.get_running_loop()
        earlier = self._in_flight
        if earlier is not None and not earlier.done():
            await asyncio.wait([earlier], timeout=deadline - loop.time())
            if not earlier.done():
                return False
        # A thread of its own: inserts never queue behind other blocking calls (a hung
        # insert leaves the default executor's threads waiting for ClickHouse).
        attempt = loop.run_in_executor(self._executor, self._insert, blocks, token)
        attempt.add_done_callback(_retrieved)
        self._in_flight = attempt
        await asyncio.wait([attempt], timeout=deadline - loop.time())
        if not attempt.done():
            return False
        attempt.result()  # the insert's own error, if any
        return True

    async def drain(self) -> None:
        """Commit everything waiting, then stop (graceful shutdown)."""
        self._stopping = True
        self._arrived.set()
        self._full.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=False)


def _retrieved(attempt: asyncio.Future[None]) -> None:
    """An insert given up on may fail later, with nobody awaiting it: not an error then."""
    if not attempt.cancelled():
        attempt.exception()
