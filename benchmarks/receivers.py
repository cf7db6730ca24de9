"""HTTP receivers on 127.0.0.1 for the load benchmarks.

- `FastReceiver`: the least an HTTP/1.1 keep-alive server must do to take native batches
  (read, gunzip, decode the envelope leaving each message raw, answer `{"accepted": n}`),
  on one asyncio loop, so that the client rather than the receiver is measured.
- `ReceiverProcess`: runs the `FastReceiver` or the SDK's `LoopbackReceiver` in a child
  process, so that the receiver does not compete with the client for its GIL.
- `InProcessLoopback`: the `LoopbackReceiver` in the client's own process, as tests use it.
- `closed_port_url()`: where nothing listens, for a client that must not deliver.

`python -m benchmarks.receivers fast|loopback` prints the receiver's URL on the first line,
serves until its stdin is closed, then prints how many events it received.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import msgspec

from headwater.sdk.testing import LoopbackReceiver

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("fast", "loopback")

_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"


class _Envelope(msgspec.Struct):
    """A native batch whose messages are counted, not decoded."""

    batch: list[msgspec.Raw]


_json_envelope = msgspec.json.Decoder(_Envelope)
_msgpack_envelope = msgspec.msgpack.Decoder(_Envelope)


def _parse_headers(head: bytes) -> dict[str, str]:
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return headers


def count_events(body: bytes, headers: dict[str, str]) -> int:
    """How many messages a native request body carries (gzip, JSON or MessagePack)."""
    if headers.get("content-encoding") == "gzip":
        body = zlib.decompress(body, wbits=31)
    if headers.get("content-type", "").startswith("application/msgpack"):
        return len(_msgpack_envelope.decode(body).batch)
    return len(_json_envelope.decode(body).batch)


class FastReceiver:
    """A minimal native-protocol HTTP/1.1 server on 127.0.0.1, on its own asyncio thread."""

    def __init__(self) -> None:
        self.received = 0
        self.url = ""
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self._started.set()
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            return  # closed by __exit__

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                headers = _parse_headers(await reader.readuntil(b"\r\n\r\n"))
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                count = count_events(body, headers)
                self.received += count
                reply = b'{"accepted":%d}' % count
                writer.write(_RESPONSE % (len(reply), reply))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the client closed its keep-alive connection
        finally:
            writer.close()

    def __enter__(self) -> FastReceiver:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the fast receiver did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._thread.join(10)


class ReceiverProcess:
    """A receiver (`fast` or `loopback`) in a child process; `received` is set on exit."""

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"receiver must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.url = ""
        self.received = -1
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> ReceiverProcess:
        command = [sys.executable, "-m", "benchmarks.receivers", self.kind]
        process = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._process = process
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            process.kill()
            process.communicate()
            raise RuntimeError(f"the {self.kind} receiver did not start: {line!r}")
        self.url = line
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._process is not None
        try:
            out, _ = self._process.communicate(timeout=60)  # closing stdin stops it
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.communicate()
            raise
        self.received = int(out.strip() or "-1")


class InProcessLoopback:
    """The SDK's `LoopbackReceiver` in this process; `received` is set on exit."""

    def __init__(self) -> None:
        self.kind = "loopback-inproc"
        self._receiver = LoopbackReceiver()
        self.url = self._receiver.url
        self.received = -1

    def __enter__(self) -> InProcessLoopback:
        self._receiver.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.received = len(self._receiver.messages)
        self._receiver.__exit__(*exc_info)


def closed_port_url() -> str:
    """A URL on 127.0.0.1 whose port was free a moment ago: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _serve_until_stdin_closes(url: str, received: Callable[[], int]) -> None:
    print(url, flush=True)
    sys.stdin.read()
    print(received(), flush=True)


def main(kind: str) -> None:
    """Serve as a child process of `ReceiverProcess`."""
    if kind == "fast":
        with FastReceiver() as fast:
            _serve_until_stdin_closes(fast.url, lambda: fast.received)
    elif kind == "loopback":
        with LoopbackReceiver() as loopback:
            _serve_until_stdin_closes(loopback.url, lambda: len(loopback.messages))
    else:
        raise SystemExit(f"usage: python -m benchmarks.receivers {{{','.join(KINDS)}}}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
