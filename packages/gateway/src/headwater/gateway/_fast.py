"""`POST /v1/events` answered in plain ASGI, in front of the Litestar application.

The SDK's endpoint carries most of the traffic, and most of its requests are small.
Litestar's request and response objects, its middleware chain and its exception handling
cost about 100 µs a request (measured with httptools and uvloop; BENCHMARKS.md), as much
as everything else a one-event request needs. This wrapper answers that one route itself
with the same handler (`Handlers.native`), the same errors, headers, metrics and access
log, and hands every other request (a browser's too, for its CORS headers), and the
lifespan, to Litestar, which still documents the route in its OpenAPI document.
`tests/gateway/test_fast_path.py` holds the two to the same answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

from ._errors import RequestError, Unavailable
from ._logging import first_values, log_access, new_request_id, request_id

if TYPE_CHECKING:
    from ._app import Handlers

logger = logging.getLogger("headwater.gateway")

ROUTE = "native_events"  # the Litestar handler's name: one label in the request metrics
_encode = msgspec.json.Encoder().encode
_SERVER_ERROR = b'{"status_code":500,"detail":"Internal Server Error"}'


class ClientDisconnected(Exception):
    """The client went away before its body arrived."""


class NativeFastPath:
    """The gateway's ASGI app: `POST /v1/events` here, the rest in `litestar`."""

    def __init__(self, litestar: ASGIApp, handlers: Handlers) -> None:
        self.litestar = litestar
        self._handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != ScopeType.HTTP
            or scope["path"] != "/v1/events"
            or scope["method"] != "POST"
        ):
            await self.litestar(scope, receive, send)
            return
        headers = first_values(scope["headers"])
        if b"origin" in headers:  # a browser's: Litestar adds the CORS headers
            await self.litestar(scope, receive, send)
            return
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or new_request_id()
        token = request_id.set(rid)
        started = time.perf_counter()
        try:
            status, body, extra = await self._answer(headers, receive)
            if status == 0:  # the client left: nobody to answer
                return
            start: HTTPResponseStartEvent = {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                    (b"x-request-id", rid.encode()),
                ],
            }
            await send(start)
            end: HTTPResponseBodyEvent = {
                "type": "http.response.body",
                "body": body,
                "more_body": False,
            }
            await send(end)
            self._handlers.count_response(ROUTE, status, time.perf_counter() - started)
            log_access(scope, status, started)
        finally:
            request_id.reset(token)

    async def _answer(
        self, headers: dict[bytes, bytes], receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """(status, JSON body, extra headers); status 0 when the client disconnected."""
        try:
            result = await self._handlers.native(
                authorization=headers.get(b"authorization", b"").decode("latin-1"),
                content_type=_text(headers.get(b"content-type")),
                content_encoding=_text(headers.get(b"content-encoding")),
                content_length=_text(headers.get(b"content-length")),
                chunks=_chunks(receive),
            )
        except RequestError as exc:
            return exc.status, _encode({"error": str(exc)}), []
        except Unavailable as exc:
            self._handlers.count_unavailable(exc)
            retry = str(exc.retry_after).encode()
            return 503, _encode({"error": str(exc)}), [(b"retry-after", retry)]
        except ClientDisconnected:
            return 0, b"", []
        except Exception:
            logger.exception("POST /v1/events failed")
            return 500, _SERVER_ERROR, []
        return 200, _encode(result), []


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The request body as it arrives."""
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return
