"""Real servers on loopback for the alert channels: an HTTP webhook and an SMTP server."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections import deque
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Post:
    """One request the webhook received, and what it answered."""

    path: str
    headers: dict[str, str]
    body: Any  # the decoded JSON
    status: int


class WebhookServer:
    """Records every POSTed JSON body; answers 200, or the statuses `fail` scripts first."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self._script: deque[int] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/alerts"

    @property
    def delivered(self) -> list[Any]:
        """The bodies answered with 200, in order."""
        with self._lock:
            return [post.body for post in self.posts if post.status == 200]

    def fail(self, times: int, status: int = 500) -> None:
        """Answer the next `times` requests with `status`."""
        with self._lock:
            self._script.extend([status] * times)

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            status = self._script.popleft() if self._script else 200
            self.posts.append(Post(path, headers, json.loads(body), status))
            return status

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = webhook._record(self.path, dict(self.headers.items()), body)
                reply = b"ok" if status == 200 else b"scripted failure"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()  # joins the request threads
        self._thread.join()


@dataclass
class Mail:
    """One message the SMTP server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


class MailServer:
    """An aiosmtpd server on a free loopback port; `reply` is its answer to DATA."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.reply = "250 OK"
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(  # noqa: N802 - the name aiosmtpd calls
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.reply.startswith("250"):
            content = envelope.content
            raw = content if isinstance(content, bytes) else (content or "").encode()
            message = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            self.mails.append(Mail(envelope.mail_from or "", list(envelope.rcpt_tos), message))
        return self.reply

    def __enter__(self) -> MailServer:
        self._controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._controller.stop()


def free_port() -> int:
    """A loopback port nothing listens on (just now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
