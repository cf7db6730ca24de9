"""`Client`: the thread-based client for ordinary (WSGI, worker, script) applications."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from types import TracebackType

from ._base import BeforeSend, ClientBase
from ._consumer import Consumer
from ._delivery import Dispatcher, Outbound
from ._errors import ConfigError
from ._options import ClientOptions
from ._transport import HttpTransport, Transport
from ._version import LIB
from ._wire import AnyMessage


class Client(ClientBase):
    """Queues events on the caller's thread and delivers them from a background thread.

    `track`, `capture`, `identify` and `alias` never block on I/O and never raise
    (unless `debug=True`); they return the event id, or None when the event was not
    accepted (the reason is counted in `stats()` and logged on `headwater.sdk`).
    With `sync_mode=True` each call sends its event before returning, for scripts and
    serverless functions that may be frozen as soon as they return.
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
        sync_mode: bool = False,
        transport: Transport | None = None,
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
        if sync_mode and self.options.spool_dir is not None:
            raise ConfigError("sync_mode sends at once and keeps no spool: drop one of them")
        self.sync_mode = sync_mode
        self._given_transport = transport
        self._send_lock = threading.Lock()
        self._shutdown_result: bool | None = None
        self._consumer = self._start_consumer()
        self._deliver_at_exit()

    def _at_exit(self) -> None:
        self.shutdown()

    def _start_consumer(self) -> Consumer:
        self._spool = self._open_spool()
        transport = self._given_transport or HttpTransport(timeout=self.options.request_timeout)
        dispatcher = Dispatcher(
            options=self.options,
            codec=self._codec,
            queue=self._queue,
            spool=self._spool,
            counters=self._counters,
            on_error=self._on_error,
            lib=LIB,
            write_key=self._write_key,
        )
        consumer = Consumer(dispatcher, transport, interval=self.options.flush_interval)
        self._transport = transport
        self._dispatcher = dispatcher
        if not self.sync_mode and not self.disabled:
            consumer.start()
        return consumer

    def _enqueue(self, data: bytes) -> bool:
        if not self.sync_mode:
            return super()._enqueue(data)
        with self._send_lock:
            self._counters.enqueued += 1
            self._consumer.deliver(Outbound([data]))
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now; True when all of it was delivered within `timeout`.

        False on timeout, or when an event was given up on since the previous flush
        (`stats().given_up_reason` says why).
        """
        return self._consumer.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Refuse new events, deliver what is queued within `timeout`, and stop. Idempotent.

        Returns True when nothing was left behind. Events still queued at the timeout are
        counted as dropped (`shutdown`), or stay in the spool when there is one.
        """
        if self._shutdown_result is not None:
            return self._shutdown_result
        self._closed = True
        atexit.unregister(self._exit_hook)
        wait = self.options.shutdown_timeout if timeout is None else timeout
        clean = self._consumer.stop(wait)
        left = self._queue.clear()
        if left:
            self._counters.give_up("shutdown", left, "still queued when shutdown stopped")
        if self._spool is not None:
            self._spool.close()
        if self._given_transport is None:
            self._transport.close()
        self._shutdown_result = clean and not left
        return self._shutdown_result

    close = shutdown

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._send_lock = threading.Lock()
        if not self._closed:
            self._consumer = self._start_consumer()
