"""Uvicorn's HTTP protocol with bounds on a request's headers, which the app never sees.

uvicorn's httptools protocol buffers a header block of any size and count, and gives a
client that never finishes its headers as long as it likes (a socket held, not the worker,
but enough of them exhaust the process's file descriptors). This protocol answers
431 once a request's line and headers pass `MAX_HEADER_BYTES` or `MAX_HEADERS`, and 408
when they have not all arrived `HEADER_TIMEOUT_SECONDS` after the connection opened (or
after the previous response), closing the connection either way. PostHog's and Segment's
SDKs send a few hundred bytes of headers; browsers a few kilobytes.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024  # the request line and every header, as received
MAX_HEADERS = 100
HEADER_TIMEOUT_SECONDS = 10.0  # nginx waits 60 s, Apache 20-40 s; API clients send at once

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class HeadersRefused(Exception):
    """A request's headers broke a bound (raised inside the parser's callback)."""


class BoundedHttpTools(HttpToolsProtocol):
    """`HttpToolsProtocol` that refuses oversized or endless header blocks."""

    _header_bytes = 0
    _refusal: tuple[int, str] | None = None
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request's headers."""
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock."""
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        """A request begins: count its header bytes from zero."""
        super().on_message_begin()
        self._header_bytes = 0
        if self._header_timer is None:  # a pipelined request: the clock starts now
            self._arm()

    def on_url(self, url: bytes) -> None:
        """Count the request line."""
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count one header; refuse past a bound."""
        self._count(len(name) + len(value) + 4)
        if len(self.headers) >= MAX_HEADERS:
            self._refuse(431, f"more than {MAX_HEADERS} headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """The headers are in: the clock stops (the body has its own deadline)."""
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        """The next request's headers are timed from now (keep-alive)."""
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error; ours when it was one of our bounds."""
        if self._refusal is None:
            super().send_400_response(msg)
            return
        status, reason = self._refusal
        self._send_and_close(status, reason)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(431, f"request headers over {MAX_HEADER_BYTES} bytes")

    def _refuse(self, status: int, reason: str) -> None:
        self._refusal = (status, reason)
        raise HeadersRefused(reason)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(HEADER_TIMEOUT_SECONDS, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self._send_and_close(408, f"headers not received within {HEADER_TIMEOUT_SECONDS:g} s")

    def _send_and_close(self, status: int, reason: str) -> None:
        body = f'{{"error": "{reason}"}}'.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, _REASONS[status], len(body), body)
        )
        self.transport.close()
