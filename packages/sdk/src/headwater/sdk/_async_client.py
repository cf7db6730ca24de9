"""`AsyncClient`: the same surface for asyncio applications, delivering from a task."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
from collections.abc import Callable
from types import TracebackType

from ._base import BeforeSend, ClientBase
from ._consumer import Consumer
from ._delivery import Dispatcher, Outbound
from ._errors import DeliveryError, TransportError
from ._options import ClientOptions
from ._transport import AsyncHttpTransport, AsyncTransport, HttpTransport
from ._version import LIB
from ._wire import AnyMessage

logger = logging.getLogger("headwater.sdk")


class AsyncClient(ClientBase):
    """Queues events without awaiting and delivers them from a task on the running loop.

    `track`, `capture`, `identify` and `alias` are plain calls (nothing to await); the
    delivery task starts with the first event queued inside a running loop, and the
    client belongs to that loop. Call `await flush()` and `await shutdown()` (or use
    `async with`) before the loop ends.
    """

    def __init__(
        self,
        write_key: str,
        *,
        host: str | None = None,
        options: ClientOptions | None = None,
        on_error: Callable[[Exception, list[AnyMessage]], object] | None = None,
        before_send: BeforeSend | None = None,
        disabled: bool = False,
        debug: bool = False,
        transport: AsyncTransport | None = None,
    ) -> None:
        super().__init__(
            write_key,
            host=host,
            options=options,
            on_error=on_error,
            before_send=before_send,
            disabled=disabled,
            debug=debug,
        )
        self._given_transport = transport
        self._reset_runtime()
        self._deliver_at_exit()

    def _reset_runtime(self) -> None:
        self._spool = self._open_spool()
        self._transport: AsyncTransport | None = self._given_transport
        self._dispatcher = Dispatcher(
            options=self.options,
            codec=self._codec,
            queue=self._queue,
            spool=self._spool,
            counters=self._counters,
            on_error=self._on_error,
            lib=LIB,
            write_key=self._write_key,
        )
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake = asyncio.Event()
        self._abort = asyncio.Event()
        self._closing = False
        self._flush_asked = 0
        self._flush_done = 0
        self._flushed = asyncio.Condition()
        self._queue.on_batch_ready = self._wake_up
        if self._spool is not None:
            self._spool.on_batch_ready = self._wake_up
        self._shutdown_result: bool | None = None

    # -- the task --------------------------------------------------------------

    def _enqueue(self, data: bytes) -> bool:
        accepted = super()._enqueue(data)
        if self._task is None:
            self._start()
        return accepted

    def _start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the task starts with the next call made inside one
        self._loop = loop
        self._loop_thread = threading.get_ident()
        if self._transport is None:
            self._transport = AsyncHttpTransport(timeout=self.options.request_timeout)
        self._task = loop.create_task(self._run(), name="headwater-consumer")

    def _wake_up(self) -> None:
        loop = self._loop
        if loop is None or self._wake.is_set():
            return
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        interval = self.options.flush_interval
        while not self._abort.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
                timed_out = False
            except TimeoutError:
                timed_out = True
            self._wake.clear()
            closing = self._closing
            try:
                await self._cycle(partial=timed_out or closing)
            except Exception:  # a dead task loses every later event: log, go on
                logger.exception("headwater consumer cycle failed")
            if closing:
                return

    async def _cycle(self, *, partial: bool) -> None:
        dispatcher = self._dispatcher
        asked = self._flush_asked
        dispatcher.adopt_orphans()
        mark = dispatcher.watermark() if asked > self._flush_done else None
        while not self._abort.is_set():
            if mark is not None and dispatcher.settled(mark):
                await self._mark_flushed(asked)
                mark = None
            batch = dispatcher.next_batch(partial=partial or mark is not None)
            if batch is None:
                return
            await self._deliver(batch)
        dispatcher.abandon()  # aborted: the halves of a split batch wait no more

    async def _deliver(self, batch: Outbound) -> None:
        dispatcher = self._dispatcher
        assert self._transport is not None  # set by _start, before the task exists
        while True:
            body, headers = dispatcher.request(batch)
            try:
                response = await self._transport.send(dispatcher.url, body, headers)
            except DeliveryError as exc:
                delay = dispatcher.on_failure(batch, exc)
            except Exception as exc:  # a third-party transport's own error  # noqa: BLE001
                delay = dispatcher.on_failure(batch, TransportError(repr(exc)))
            else:
                delay = dispatcher.on_response(batch, response)
            if delay is None:
                return
            if not await self._pause(delay):
                dispatcher.abandon(batch)
                return

    async def _pause(self, delay: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._abort.wait(), delay)
        return not self._abort.is_set()

    async def _mark_flushed(self, asked: int) -> None:
        async with self._flushed:
            self._flush_done = max(self._flush_done, asked)
            self._flushed.notify_all()

    def _at_exit(self) -> None:
        # The loop is gone at interpreter exit: deliver the rest from a short-lived thread.
        if self._closed or (not len(self._queue) and self._spool is None):
            return
        transport = HttpTransport(timeout=self.options.request_timeout)
        consumer = Consumer(self._dispatcher, transport, interval=self.options.flush_interval)
        consumer.start()
        consumer.stop(self.options.shutdown_timeout)
        transport.close()
        if self._spool is not None:
            self._spool.close()

    # -- the public calls ------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now; True when all of it was delivered within `timeout`.

        False on timeout, or when an event was given up on since the previous flush
        (`stats().given_up_reason` says why).
        """
        if self._task is None:
            self._start()
        task = self._task
        if task is None or task.done() or asyncio.current_task() is task:
            settled = self._dispatcher.waiting() == 0  # nobody else will send: say what is left
        else:
            settled = await self._wait_for_flush(timeout)
        clean = self._dispatcher.clean_since_last_flush()
        return settled and clean

    async def _wait_for_flush(self, timeout: float | None) -> bool:
        self._flush_asked += 1
        asked = self._flush_asked
        self._wake.set()
        async with self._flushed:
            try:
                await asyncio.wait_for(
                    self._flushed.wait_for(lambda: self._flush_done >= asked), timeout
                )
            except TimeoutError:
                return False
            else:
                return True

    async def shutdown(self, timeout: float | None = None) -> bool:
        """Refuse new events, deliver what is queued within `timeout`, and stop. Idempotent."""
        if self._shutdown_result is not None:
            return self._shutdown_result
        self._closed = True
        atexit.unregister(self._exit_hook)
        wait = self.options.shutdown_timeout if timeout is None else timeout
        clean = await self._stop(wait)
        left = self._queue.clear()
        if left:
            self._counters.give_up("shutdown", left, "still queued when shutdown stopped")
        if self._spool is not None:
            self._spool.close()
        if self._given_transport is None and self._transport is not None:
            await self._transport.aclose()
        self._shutdown_result = clean and not left
        return self._shutdown_result

    async def _stop(self, timeout: float) -> bool:
        if self._task is None and len(self._queue):
            self._start()
        task = self._task
        if task is None:
            return True
        self._closing = True
        self._wake.set()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if done:
            return True
        self._abort.set()
        await asyncio.wait({task}, timeout=self.options.flush_interval + 1.0)
        return False

    aclose = shutdown

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.shutdown()

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._reset_runtime()
