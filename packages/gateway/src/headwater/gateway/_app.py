"""The Litestar application: routes, exception handlers and the lifespan.

Handlers stay short: read the body within limits, find the project, parse with the
endpoint family's adapter, and hand the events to the `Ingestor`. Domain errors become
HTTP answers only in the exception handlers at the bottom.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

from litestar import Litestar, Request, Response, get, post, route
from litestar.config.cors import CORSConfig
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.types import ASGIApp, Receive, Scope, Send

from headwater.sdk import BatchResult

from ._body import decode_content, read_body, require_media
from ._errors import BadPayload, RequestError, Unauthorized, Unavailable
from ._events import Columns, Context, Incoming, Invalid, now
from ._fast import NativeFastPath
from ._flags import FLAGS_PATHS, NO_FLAGS, NO_FLAGS_WITH_ERRORS, parse_flags
from ._gateway import Gateway
from ._logging import request_id_middleware
from ._native import body_format, parse_native
from ._posthog import MEDIA as POSTHOG_MEDIA
from ._posthog import parse_posthog, unwrap
from ._segment import MEDIA as SEGMENT_MEDIA
from ._segment import basic_auth_user, parse_segment
from ._settings import Settings

POSTHOG_PATHS = [
    f"{base}{slash}"
    for base in ("/e", "/i/v0/e", "/capture", "/track", "/batch")
    for slash in ("", "/")
]
SEGMENT_KINDS = {"batch": None, "track": "track", "identify": "identify", "page": "page",
                 "screen": "screen", "alias": "alias", "group": "group"}  # fmt: skip
# analytics.js (analytics-next) posts to the first letter of a message's type, and its
# batching mode to `/b`: the same API under short names.
SEGMENT_KINDS |= {kind[0]: SEGMENT_KINDS[kind] for kind in SEGMENT_KINDS}


# The ingestion routes' description in the OpenAPI document.
INGESTION = (
    "Valid events are stored; an invalid one is listed by index with its reason and kept in"
    " `ingest_errors`. An event's time, corrected by the sender's clock skew"
    " (`received_at - sent_at`), must lie within HEADWATER_EVENT_MAX_AGE_DAYS before its"
    " arrival and HEADWATER_EVENT_MAX_FUTURE_HOURS after it (default 3650 days, 23 hours), and"
    " within [1900-01-01, 2300-01-01): outside, it is refused, never clamped."
)
GC_THRESHOLDS = (50_000, 20, 100)  # young objects, then collections of each generation


class Handlers:
    """The route handlers of one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.settings = gateway.settings

    async def _body(self, request: Request[Any, Any, Any], *, limit: int) -> bytes:
        headers = request.headers
        return await self._read(
            request.stream(),
            headers.get("content-encoding"),
            headers.get("content-length"),
            limit=limit,
        )

    async def _read(
        self,
        chunks: AsyncIterator[bytes],
        content_encoding: str | None,
        content_length: str | None,
        *,
        limit: int,
    ) -> bytes:
        """The body, within `limit` bytes (decompressed too) and the read timeout."""
        raw = await read_body(
            chunks,
            limit=limit,
            timeout=self.settings.body_timeout_seconds,
            declared=content_length,
        )
        return decode_content(raw, content_encoding, limit=limit)

    def _project(self, key: str | None) -> str:
        if not key:
            raise Unauthorized("missing write key")
        project = self.settings.project_for(key)
        if project is None:
            raise Unauthorized("unknown write key")
        return project

    def _context(self, *, project: str, source: str, lib: str, sent_at: Any) -> Context:
        """What the events of a request arriving now share (the event-time window too)."""
        return Context(
            project=project,
            source=source,
            lib=lib[:200],
            received_at=now(),
            sent_at=sent_at,
            max_event_bytes=self.settings.max_event_bytes,
            window=self.gateway.window,
        )

    async def _keep_unreadable(
        self, project: str, source: str, exc: BadPayload, body: bytes
    ) -> None:
        """A body that cannot be parsed is kept whole in ingest_errors (event_index -1)."""
        ctx = self._context(project=project, source=source, lib="", sent_at=None)
        await self.gateway.ingestor.unreadable(ctx, reason=str(exc), body=body)

    async def _ingest(
        self,
        *,
        project: str,
        source: str,
        lib: str,
        sent_at: Any,
        items: list[Incoming | Invalid] | Columns,
    ) -> BatchResult:
        ctx = self._context(project=project, source=source, lib=lib, sent_at=sent_at)
        return await self.gateway.ingestor.ingest(ctx, items)

    async def native(
        self,
        *,
        authorization: str,
        content_type: str | None,
        content_encoding: str | None,
        chunks: AsyncIterator[bytes],
        content_length: str | None = None,
    ) -> BatchResult:
        """`POST /v1/events`, from its headers and body; served by `NativeFastPath`."""
        project = self._project(
            authorization[7:].strip() if authorization.lower().startswith("bearer ") else None
        )
        fmt = body_format(content_type)
        self.gateway.ingestor.admit()
        body = await self._read(
            chunks, content_encoding, content_length, limit=self.settings.max_batch_body_bytes
        )
        try:
            items, sent_at, lib = parse_native(body, fmt)
        except BadPayload as exc:
            await self._keep_unreadable(project, "native", exc, body)
            raise
        return await self._ingest(
            project=project, source="native", lib=lib or "native", sent_at=sent_at, items=items
        )

    async def _posthog_text(self, request: Request[Any, Any, Any], *, limit: int) -> bytes:
        """The JSON text a PostHog SDK sent, however it wrapped it (form, base64, gzip)."""
        body = b""
        if request.method == "POST":
            require_media(request.headers.get("content-type"), POSTHOG_MEDIA)
            body = await self._body(request, limit=limit)
        return unwrap(
            body,
            query=dict(request.query_params),
            content_type=request.headers.get("content-type", ""),
            limit=limit,
        )

    async def posthog(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        self.gateway.ingestor.admit()
        text = await self._posthog_text(request, limit=self.settings.max_batch_body_bytes)
        parsed = parse_posthog(text)
        project = self._project(parsed.api_key)
        result = await self._ingest(
            project=project,
            source="posthog",
            lib=parsed.lib,
            sent_at=parsed.sent_at or _query_sent_at(request.query_params.get("_")),
            items=parsed.items,
        )
        return {
            "status": 1,
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": result.rejected,
        }

    async def segment(self, request: Request[Any, Any, Any], kind: str | None) -> dict[str, Any]:
        limit = (
            self.settings.max_batch_body_bytes
            if kind is None
            else self.settings.max_single_body_bytes
        )
        self.gateway.ingestor.admit()
        require_media(request.headers.get("content-type"), SEGMENT_MEDIA)
        body = await self._body(request, limit=limit)
        key = basic_auth_user(request.headers.get("authorization")) or request.headers.get(
            "x-write-key"
        )
        try:
            parsed = parse_segment(body, kind=kind)
        except BadPayload as exc:
            if key and (known := self.settings.project_for(key)):
                await self._keep_unreadable(known, "segment", exc, body)
            raise
        project = self._project(key or parsed.write_key)
        result = await self._ingest(
            project=project,
            source="segment",
            lib=parsed.lib,
            sent_at=parsed.sent_at,
            items=parsed.items,
        )
        return {
            "success": True,
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": result.rejected,
        }

    async def flags(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """PostHog's feature flags for the request's user: PostHog's answer, or none."""
        text = await self._posthog_text(request, limit=self.settings.max_single_body_bytes)
        asked = parse_flags(text)
        posthog = self.gateway.routes.target(self._project(asked.key))
        proxy = self.gateway.flags
        counted = self.gateway.metrics.flags
        if proxy is None or posthog is None:
            counted.labels("none").inc()
            return Response(NO_FLAGS, status_code=200, media_type="application/json")
        path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        query = request.scope.get("query_string", b"").decode("latin-1")
        answer = await proxy.ask(
            posthog,
            path,
            parse_qsl(query, keep_blank_values=True),  # in the order sent
            asked,
            client_ip=request.client.host if request.client else None,
        )
        counted.labels("failed" if answer is None else "posthog").inc()
        return Response(
            NO_FLAGS_WITH_ERRORS if answer is None else answer,
            status_code=200,
            media_type="application/json",
        )

    def count_response(self, route: str, status: int, seconds: float) -> None:
        self.gateway.metrics.answered(route, status, seconds)

    def count_unavailable(self, exc: Unavailable) -> None:
        self.gateway.metrics.unavailable.labels(type(exc).__name__).inc()

    def unavailable(
        self, request: Request[Any, Any, Any], exc: Unavailable
    ) -> Response[dict[str, str]]:
        self.count_unavailable(exc)
        return _unavailable(request, exc)

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        clickhouse = await asyncio.to_thread(self.gateway.clickhouse.ping)
        redis = await self.gateway.dedupe.ping() if self.settings.redis_url else None
        details = {
            "clickhouse": "ok" if clickhouse else "unreachable",
            "redis": "in-process" if redis is None else ("ok" if redis else "unreachable"),
            "dedupe_degraded": self.gateway.ingestor.dedupe_degraded,
            "queued_rows": self.gateway.queued_rows,
        }
        return clickhouse and redis is not False, details


def create_app(
    settings: Settings,
    *,
    gateway: Gateway | None = None,
    fast_path: bool = True,
    freeze_heap: bool = False,
) -> ASGIApp:
    """The gateway as an ASGI app; pass `gateway` to share parts (tests, embedded modeler).

    `fast_path=False` serves `POST /v1/events` through Litestar too (tests compare the
    two). `freeze_heap` tunes the garbage collector of a process that serves only this
    app: what start-up allocated leaves its view (`gc.freeze()`), so a full collection
    takes ~2 ms instead of ~70 ms, a pause every request in flight would wait out; and
    it runs after `GC_THRESHOLDS`, not Python's 700 allocations. Under load the requests
    in flight hold tens of thousands of young objects, which every collection walked
    again: 10-15% of the event loop at 700, under 1% at 50,000 (BENCHMARKS.md).
    """
    gateway = gateway or Gateway(settings)
    handlers = Handlers(gateway)

    @post(
        "/v1/events",
        status_code=200,
        summary="Native batch (headwater SDK)",
        description=INGESTION,
    )
    async def native_events(request: Request[Any, Any, Any]) -> BatchResult:
        # Served by `NativeFastPath` in front of this app; the route documents it in the
        # OpenAPI document and serves it when the app is mounted without that wrapper.
        return await handlers.native(
            authorization=request.headers.get("authorization", ""),
            content_type=request.headers.get("content-type"),
            content_encoding=request.headers.get("content-encoding"),
            content_length=request.headers.get("content-length"),
            chunks=request.stream(),
        )

    @route(
        POSTHOG_PATHS,
        http_method=["GET", "POST"],
        status_code=200,
        summary="PostHog capture API",
        description=INGESTION,
    )
    async def posthog_capture(request: Request[Any, Any, Any]) -> dict[str, Any]:
        return await handlers.posthog(request)

    @route(
        FLAGS_PATHS, http_method=["GET", "POST"], status_code=200, summary="PostHog feature flags"
    )
    async def posthog_flags(request: Request[Any, Any, Any]) -> Response[bytes]:
        return await handlers.flags(request)

    @post(
        [f"/v1/{kind}" for kind in SEGMENT_KINDS],
        status_code=200,
        summary="Segment tracking API",
        description=INGESTION,
    )
    async def segment_track(request: Request[Any, Any, Any]) -> dict[str, Any]:
        kind = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        return await handlers.segment(request, SEGMENT_KINDS[kind])

    @get("/healthz", summary="Alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", summary="Ready: ClickHouse and (when configured) Redis reachable")
    async def readyz() -> Response[dict[str, Any]]:
        ready, details = await handlers.readiness()
        return Response({"ready": ready, **details}, status_code=200 if ready else 503)

    @get("/metrics", summary="Prometheus metrics", media_type="text/plain; version=0.0.4")
    async def metrics() -> bytes:
        gateway.metrics.commit_queue.set(gateway.queued_rows)
        return gateway.metrics.render()

    app = Litestar(
        route_handlers=[
            native_events,
            posthog_capture,
            posthog_flags,
            segment_track,
            healthz,
            readyz,
            metrics,
        ],
        middleware=[partial(request_id_middleware, on_response=handlers.count_response)],
        lifespan=[partial(_lifespan, gateway, freeze_heap)],
        exception_handlers={RequestError: _request_error, Unavailable: handlers.unavailable},
        request_max_body_size=None,  # each route enforces its own limit while streaming
        logging_config=None,  # the process configures logging (JSON lines under `serve`)
        openapi_config=OpenAPIConfig(title="Headwater gateway", version="0.1.0"),
        cors_config=_cors(settings.cors_origin_list),
        debug=False,
    )
    senders = _SendersOnlyCORS(app)
    if not fast_path:
        return senders
    return NativeFastPath(senders, handlers)


class _SendersOnlyCORS:
    """Litestar's CORS covers every route, but only the ingestion routes serve browsers.
    A browser's `Origin` is dropped on the way to the others (`/metrics`, `/readyz`, the
    OpenAPI document), so they answer without CORS headers: a page elsewhere cannot read
    them through the browser of someone who can reach the gateway."""

    PATHS = frozenset(
        path.rstrip("/")
        for path in (
            "/v1/events",
            *POSTHOG_PATHS,
            *FLAGS_PATHS,
            *(f"/v1/{kind}" for kind in SEGMENT_KINDS),
        )
    )

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["path"].rstrip("/") not in self.PATHS:
            headers = scope["headers"]
            if any(name == b"origin" for name, _ in headers):
                scope["headers"] = [(name, value) for name, value in headers if name != b"origin"]
        await self._app(scope, receive, send)


def _cors(origins: list[str]) -> CORSConfig | None:
    """Answers a browser may read, from the allowed origins (None: no CORS headers).

    posthog-js falls back to `XMLHttpRequest` with credentials, and `sendBeacon` always
    sends them, so a browser accepts only its own origin echoed back, never "*": an origin
    that is allowed is echoed, with `Access-Control-Allow-Credentials`, as PostHog's own
    capture endpoint does. The write key, not the origin, decides what is stored.
    """
    if not origins:
        return None
    return CORSConfig(
        allow_origins=[origin for origin in origins if origin != "*"],
        allow_origin_regex=".*" if "*" in origins else None,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
        allow_credentials=True,
        expose_headers=["Retry-After", "X-Request-Id"],
        max_age=86_400,
    )


@asynccontextmanager
async def _lifespan(gateway: Gateway, freeze_heap: bool, _: Litestar) -> AsyncIterator[None]:
    await gateway.start()
    if freeze_heap:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        await gateway.stop()


def _query_sent_at(millis: str | None) -> datetime | None:
    """posthog-js sends its clock as `?_=<epoch milliseconds>`."""
    if not millis or not millis.isdigit():
        return None
    try:
        return datetime.fromtimestamp(int(millis) / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def app_from_env() -> ASGIApp:
    """The app for each worker process of `headwater serve --workers N`."""
    return create_app(Settings.from_env(), freeze_heap=True)


def _request_error(_: Request[Any, Any, Any], exc: RequestError) -> Response[dict[str, str]]:
    return Response({"error": str(exc)}, status_code=exc.status)


def _unavailable(_: Request[Any, Any, Any], exc: Unavailable) -> Response[dict[str, str]]:
    return Response(
        {"error": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)}
    )
