"""Structured JSON logs with a request id; write keys, tokens and bodies are never logged."""

from __future__ import annotations

import contextvars
import itertools
import logging
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from litestar.types import ASGIApp, Message, Receive, Send

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

_encode = msgspec.json.Encoder()
_STANDARD = {*vars(logging.makeLogRecord({})), "color_message"}  # uvicorn adds color_message


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if rid := request_id.get():
            entry["request_id"] = rid
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode.encode(entry).decode()


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for the gateway process (the `serve` command calls this)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request it sends, URL and query whole, at INFO: the flags proxy's
    # carry the sender's query, and a write key in it would be logged.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))


access_log = logging.getLogger("headwater.gateway.access")

_RID_BASE = secrets.token_hex(8)  # this process's, random: ids unique across workers
_rid_count = itertools.count()


def new_request_id() -> str:
    """32 hex digits, as a UUID's: the process's random half and a counter (no system
    call per request, as `uuid4()` makes)."""
    return f"{_RID_BASE}{next(_rid_count):016x}"


def first_values(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Each header by its first value, as Litestar's `request.headers.get` reads one sent
    twice: the fast path and Litestar's routes take the same write key from a request."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        found.setdefault(name, value)
    return found


def request_id_middleware(
    app: ASGIApp, *, on_response: Callable[[str, int, float], None] | None = None
) -> ASGIApp:
    """Give each request an id (its `X-Request-Id`, or a new one), echo it, log the access;
    `on_response(route handler name, status, seconds)` counts it."""

    async def middleware(scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        sent = first_values(scope["headers"]).get(b"x-request-id", b"")
        incoming = sent.decode("latin-1")[:64]
        rid = incoming or new_request_id()
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            if on_response is not None:
                handler = scope.get("route_handler")
                seconds = time.perf_counter() - started
                on_response(getattr(handler, "handler_name", "unmatched"), status, seconds)
            log_access(scope, status, started)
            request_id.reset(token)

    return middleware


def log_access(scope: Any, status: int, started: float) -> None:
    """One access-log line: at DEBUG for a success, at INFO otherwise.

    A line per accepted batch would cost ~55 µs a request (a third of a small request's
    CPU) and fill the logs with what `/metrics` already counts; failures stay visible.
    """
    level = logging.DEBUG if 200 <= status < 300 else logging.INFO
    if not access_log.isEnabledFor(level):
        return
    access_log.log(
        level,
        "%s %s %d",
        scope["method"],
        scope["path"],  # never the query string: PostHog's `data=` carries the token
        status,
        extra={"status": status, "duration_ms": round((time.perf_counter() - started) * 1000, 2)},
    )
