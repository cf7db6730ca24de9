"""The background thread that drives a `Dispatcher` for the thread client."""

from __future__ import annotations

import logging
import threading

from ._delivery import Dispatcher, Outbound
from ._errors import DeliveryError, TransportError
from ._transport import Transport

logger = logging.getLogger("headwater.sdk")


class Consumer:
    """Delivers batches on its own daemon thread; `deliver()` also serves sync mode."""

    def __init__(self, dispatcher: Dispatcher, transport: Transport, *, interval: float) -> None:
        self._dispatcher = dispatcher
        self._transport = transport
        self._interval = interval
        self._wake = threading.Event()
        self._abort = threading.Event()
        self._closing = False
        self._flushes = threading.Condition()
        self._flush_asked = 0
        self._flush_done = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread; the queue (or the spool) wakes it when a batch is full."""
        self._dispatcher.queue.on_batch_ready = self._wake_up
        if self._dispatcher.spool is not None:
            self._dispatcher.spool.on_batch_ready = self._wake_up
        self._thread = threading.Thread(target=self._run, name="headwater-consumer", daemon=True)
        self._thread.start()

    def _wake_up(self) -> None:
        if not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while not self._abort.is_set():
            timed_out = not self._wake.wait(self._interval)
            self._wake.clear()
            closing = self._closing
            try:
                self.cycle(partial=timed_out or closing)
            except Exception:  # a consumer that dies loses every later event: log, go on
                logger.exception("headwater consumer cycle failed")
                self._abort.wait(self._interval)
            if closing:
                return

    def cycle(self, *, partial: bool) -> None:
        """Send what is due: full batches, or everything when `partial` or a flush is asked."""
        dispatcher = self._dispatcher
        asked = self._flush_asked
        dispatcher.adopt_orphans()
        mark = dispatcher.watermark() if asked > self._flush_done else None
        while not self._abort.is_set():
            if mark is not None and dispatcher.settled(mark):
                self._flushed(asked)
                mark = None
            batch = dispatcher.next_batch(partial=partial or mark is not None)
            if batch is None:
                return
            self.deliver(batch)
        dispatcher.abandon()  # aborted: the halves of a split batch wait no more

    def deliver(self, batch: Outbound) -> None:
        """Send `batch`, retrying as the dispatcher says, until it is settled."""
        dispatcher = self._dispatcher
        while True:
            body, headers = dispatcher.request(batch)
            try:
                response = self._transport.send(dispatcher.url, body, headers)
            except DeliveryError as exc:
                delay = dispatcher.on_failure(batch, exc)
            except Exception as exc:  # a third-party transport's own error  # noqa: BLE001
                delay = dispatcher.on_failure(batch, TransportError(repr(exc)))
            else:
                delay = dispatcher.on_response(batch, response)
            if delay is None:
                return
            if not self._pause(delay):
                dispatcher.abandon(batch)
                return

    def _pause(self, delay: float) -> bool:
        """Wait before a retry; False when aborted."""
        return not self._abort.wait(delay)

    def _flushed(self, asked: int) -> None:
        with self._flushes:
            self._flush_done = max(self._flush_done, asked)
            self._flushes.notify_all()

    def flush(self, timeout: float | None) -> bool:
        """Wait until everything queued before the call is settled.

        False on timeout, or when an event was given up on since the previous flush.
        """
        thread = self._thread
        if thread is None or not thread.is_alive() or threading.current_thread() is thread:
            settled = self._dispatcher.waiting() == 0  # nobody else will send: say what is left
        else:
            settled = self._wait_for_flush(timeout)
        clean = self._dispatcher.clean_since_last_flush()
        return settled and clean

    def _wait_for_flush(self, timeout: float | None) -> bool:
        with self._flushes:
            self._flush_asked += 1
            asked = self._flush_asked
        self._wake.set()
        with self._flushes:
            return self._flushes.wait_for(lambda: self._flush_done >= asked, timeout)

    def stop(self, timeout: float) -> bool:
        """Drain and end the thread within `timeout`; False when events were left behind."""
        if self._thread is None:
            return True
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)
        clean = not self._thread.is_alive()
        if not clean:
            self._abort.set()
            self._thread.join(self._interval + 1.0)
        return clean
