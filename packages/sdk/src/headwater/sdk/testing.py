"""Helpers for testing applications that emit events.

- `RecordingClient`: a `Client` that keeps events in memory instead of sending them;
  the pytest fixture `headwater_recorder` hands one to each test.
- `LoopbackReceiver`: a real HTTP server on 127.0.0.1 that speaks the native protocol,
  records what it receives and answers with the statuses a test scripts, or 413 to a
  body over its `max_body_bytes`.
"""

from __future__ import annotations

import gzip
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import msgspec

from ._client import Client
from ._event import Event, event_name
from ._options import ClientOptions
from ._transport import Response
from ._wire import AnyMessage, Batch, BatchResult, Track

E = TypeVar("E", bound=Event)

_json_batch = msgspec.json.Decoder(Batch)
_msgpack_batch = msgspec.msgpack.Decoder(Batch)

TOO_LARGE_BODY = b'{"error":"payload too large"}'  # what LoopbackReceiver answers with 413


def _decompressed(body: bytes, headers: Mapping[str, str]) -> bytes:
    lowered = {k.lower(): v for k, v in headers.items()}
    return gzip.decompress(body) if lowered.get("content-encoding") == "gzip" else body


def decode_body(body: bytes, headers: Mapping[str, str]) -> Batch:
    """Decode a native request body (gzip, JSON or MessagePack) as a `Batch`."""
    lowered = {k.lower(): v for k, v in headers.items()}
    body = _decompressed(body, headers)
    if lowered.get("content-type", "").startswith("application/msgpack"):
        return _msgpack_batch.decode(body)
    return _json_batch.decode(body)


def _accepted(count: int) -> bytes:
    return msgspec.json.encode(BatchResult(accepted=count))


class RecordingTransport:
    """A `Transport` that decodes each request and keeps it, answering 200."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        batch = decode_body(body, headers)
        self.batches.append(batch)
        return Response(200, {}, _accepted(len(batch.batch)))

    def close(self) -> None:
        return None


class RecordingClient(Client):
    """A `Client` for tests: every event is encoded as for real, then kept in memory."""

    def __init__(self, *, options: ClientOptions | None = None, debug: bool = True) -> None:
        self.recorder = RecordingTransport()
        super().__init__(
            "test-write-key", options=options, sync_mode=True, debug=debug, transport=self.recorder
        )

    @property
    def messages(self) -> list[AnyMessage]:
        """Every message recorded so far, in order."""
        return [m for batch in self.recorder.batches for m in batch.batch]

    def events(self, name: str | None = None) -> list[AnyMessage]:
        """Recorded messages, only those named `name` when given."""
        return [m for m in self.messages if name is None or m.event == name]

    def tracked(self, event_type: type[E]) -> list[E]:
        """Recorded typed events of `event_type`, decoded back into that class."""
        name = event_name(event_type)
        return [
            msgspec.convert(m.properties, event_type)
            for m in self.messages
            if isinstance(m, Track) and m.event == name
        ]

    def clear(self) -> None:
        """Forget what was recorded."""
        self.recorder.batches.clear()


class LoopbackReceiver:
    """A native-protocol HTTP server on 127.0.0.1 for tests and demos.

    `script` holds (status, headers) answers used in order before the default 200;
    every request is recorded, decoded when it is a success. Like the gateway, a body
    over `max_body_bytes` (as sent or decompressed) is answered 413 before the script
    is consulted.
    """

    def __init__(self, *, max_body_bytes: int | None = None) -> None:
        self.max_body_bytes = max_body_bytes
        self.requests: list[tuple[int, dict[str, str], bytes]] = []
        self.batches: list[Batch] = []
        self.script: deque[tuple[int, dict[str, str]]] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """Where to point a client's `host`."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def messages(self) -> list[AnyMessage]:
        """Every message received with a 2xx answer, in order."""
        with self._lock:
            return [m for batch in self.batches for m in batch.batch]

    def answer(self, status: int, *, times: int = 1, headers: dict[str, str] | None = None) -> None:
        """Answer the next `times` requests with `status` (and `headers`)."""
        for _ in range(times):
            self.script.append((status, headers or {}))

    def _respond(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            if self._too_large(headers, body):
                self.requests.append((413, headers, body))
                return 413, {}, TOO_LARGE_BODY
            status, extra = self.script.popleft() if self.script else (200, {})
            self.requests.append((status, headers, body))
            if status != 200:
                return status, extra, b'{"error":"scripted"}'
            batch = decode_body(body, headers)
            self.batches.append(batch)
            return 200, extra, _accepted(len(batch.batch))

    def _too_large(self, headers: dict[str, str], body: bytes) -> bool:
        limit = self.max_body_bytes
        return limit is not None and (
            len(body) > limit or len(_decompressed(body, headers)) > limit
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body leave at once, not after an ACK

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, headers, reply = receiver._respond(dict(self.headers.items()), body)
                self.send_response(status)
                for key, value in {**headers, "Content-Type": "application/json"}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler

    def __enter__(self) -> LoopbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional for applications
    pass
else:

    @pytest.fixture
    def headwater_recorder() -> Iterator[RecordingClient]:
        """A `RecordingClient` that lives for one test."""
        client = RecordingClient()
        yield client
        client.shutdown()
