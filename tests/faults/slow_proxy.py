"""A slow network: a TCP proxy on loopback between the application and the gateway.

Requests pass at once; while `delay` is above zero, each chunk of the gateway's answers
is held back `delay` seconds before it goes on. With `delay` past the SDK's
`request_timeout`, the gateway stores a batch and answers 200, the SDK gives up waiting
and sends the same batch again: the retry of a request that succeeded.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

CHUNK = 65536
ACCEPT_POLL_SECONDS = 0.05  # closing a socket does not wake a thread blocked in accept()


class SlowProxy:
    """Listens on 127.0.0.1:`port` and forwards to 127.0.0.1:`upstream_port`."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(ACCEPT_POLL_SECONDS)
        self._stopping = threading.Event()
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.delay = 0.0
        self.answers_held = 0  # chunks of answers held back, over the proxy's life
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="slow-proxy", daemon=True)

    def __enter__(self) -> SlowProxy:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._acceptor.join()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _close(sock)
            threads = list(self._threads)
        for thread in threads:
            thread.join()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
            except OSError:  # the gateway is down: so is the connection
                _close(client)
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = (client, upstream)
            with self._lock:
                self._sockets.update(pair)
                self._threads = [t for t in self._threads if t.is_alive()]
                for source, target, held in ((client, upstream, False), (upstream, client, True)):
                    thread = threading.Thread(
                        target=self._pump, args=(source, target, held, pair), daemon=True
                    )
                    self._threads.append(thread)
                    thread.start()

    def _pump(
        self,
        source: socket.socket,
        target: socket.socket,
        held: bool,
        pair: tuple[socket.socket, socket.socket],
    ) -> None:
        try:
            while data := source.recv(CHUNK):
                delay = self.delay
                if held and delay > 0:
                    with self._lock:
                        self.answers_held += 1
                    time.sleep(delay)
                target.sendall(data)
        except OSError:
            pass  # either side went away: the connection ends
        finally:
            with self._lock:
                for sock in pair:
                    _close(sock)
                    self._sockets.discard(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # not connected (any more)
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
