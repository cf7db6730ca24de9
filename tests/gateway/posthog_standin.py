"""A stand-in for PostHog's cloud on loopback: its `/batch/` endpoint, recording batches."""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class PostHogStandIn:
    """Records what arrives at `/batch/`; `status` is what it answers (200 by default),
    with `retry_after` as its Retry-After header when set. A batch holding an event whose
    name is in `refuse` is answered 400, as PostHog answers a payload it will never take;
    `answers` lists the status of every `/batch/` answer in order. While `down` is set,
    a `/batch/` request is read and its connection closed unanswered (PostHog away).
    `posts` counts the `/batch/` requests as they arrive; while `answering` is clear, they
    wait for it before they are recorded and answered (a slow PostHog).

    Feature flag requests (`/flags`, `/decide`) are read as PostHog reads them (the body
    unwrapped as `?compression=` says), recorded as (path with query, body, the
    `X-Forwarded-For` header) in `flag_requests`, and answered with `flags`; a body that
    does not read is a 400, as at PostHog.
    """

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = 200
        self.retry_after: str | None = None
        self.refuse: set[str] = set()
        self.down = False
        self.answers: list[int] = []
        self.posts = 0
        self.answering = threading.Event()
        self.answering.set()
        self.flags: dict[str, Any] = {"flags": {}, "errorsWhileComputingFlags": False}
        self.flag_requests: list[tuple[str, dict[str, Any], str | None]] = []
        self.arrived = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def events(self) -> list[dict[str, Any]]:
        with self.arrived:
            return [event for body in self.bodies for event in body["batch"]]

    def wait_for_posts(self, count: int, timeout: float = 20.0) -> None:
        """Until `count` `/batch/` requests have arrived (answered or not)."""
        with self.arrived:
            self.arrived.wait_for(lambda: self.posts >= count, timeout)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The events once `count` have arrived (or what arrived by `timeout`)."""
        with self.arrived:
            self.arrived.wait_for(
                lambda: sum(len(b["batch"]) for b in self.bodies) >= count, timeout
            )
        return self.events

    def take(self, body: dict[str, Any], status: int, reply: bytes) -> tuple[int, bytes]:
        """Answer one `/batch/` body: record it when the answer is 200."""
        if status == 200 and any(e.get("event") in self.refuse for e in body["batch"]):
            status, reply = 400, b'{"type": "validation_error", "detail": "invalid payload"}'
        with self.arrived:
            self.answers.append(status)
            if status == 200:
                self.bodies.append(body)
            self.arrived.notify_all()
        return status, reply

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return type("Handler", (_Handler,), {"standin": self})


class _Handler(BaseHTTPRequestHandler):
    """Answers as the `standin` of its subclass says."""

    standin: PostHogStandIn

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path == "/batch/":
            self._batch(body)
        elif self.path.startswith(("/flags", "/decide")):
            self._flags(body)
        else:
            self._answer(self.standin.status, b'{"status": 1}')

    def _batch(self, body: bytes) -> None:
        if self.standin.down:  # away: the connection drops unanswered
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        with self.standin.arrived:
            self.standin.posts += 1
            self.standin.arrived.notify_all()
        self.standin.answering.wait(30)
        status = self.standin.status
        reply = b'{"status": 1}' if status == 200 else b'{"error": "down"}'
        self._answer(*self.standin.take(json.loads(body), status, reply))

    def _flags(self, body: bytes) -> None:
        try:
            asked = json.loads(_unwrap(self.path, body))
        except (ValueError, binascii.Error, OSError):
            self.send_error(400, "cannot decode the request body")
            return
        forwarded_for = self.headers.get("X-Forwarded-For")
        self.standin.flag_requests.append((self.path, asked, forwarded_for))
        status = self.standin.status
        reply = json.dumps(self.standin.flags).encode() if status == 200 else b'{"error": "down"}'
        self._answer(status, reply)

    def _answer(self, status: int, reply: bytes) -> None:
        self.send_response(status)
        if self.standin.retry_after is not None and status != 200:
            self.send_header("Retry-After", self.standin.retry_after)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def _unwrap(path: str, body: bytes) -> bytes:
    """A flags body as PostHog reads it: per the `compression` query parameter."""
    compression = parse_qs(urlsplit(path).query).get("compression", [""])[0]
    if compression == "base64":
        return base64.b64decode(body, validate=True)
    if compression in ("gzip", "gzip-js"):
        return gzip.decompress(body)
    return body


@contextmanager
def posthog_standin() -> Iterator[PostHogStandIn]:
    standin = PostHogStandIn()
    thread = threading.Thread(
        target=standin._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield standin
    finally:
        standin._server.shutdown()
        standin._server.server_close()
