"""One batch to PostHog: stored rows made capture messages, posted to its `/batch/`
endpoint, and its answer read as sent, to try again, or refused for good.

The body is what posthog-python posts (`{"api_key", "batch", "sent_at"}`, gzipped JSON,
each message with its `uuid`), built with msgspec: the stored properties go out as the
JSON text they are stored as, checked but not re-encoded. posthog-python's own `batch_post`
re-encodes every message through a pure-Python walk and gzips at level 9, which held the
forwarder to a tenth of the gateway's ingestion rate (BENCHMARKS.md, session 10).
"""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from typing import Any, NamedTuple

import httpx
import msgspec

from headwater.sdk._retry import parse_retry_after

from ._forward_store import StoredEvent
from ._settings import PostHogTarget

# Answers worth the same batch again: PostHog is busy, slow or down, not refusing it.
RETRIED_STATUSES = frozenset({408, 429})
TOO_LARGE = 413
TIMEOUT_SECONDS = 10.0
GZIP_LEVEL = 1  # a third of level 6's CPU; PostHog's bodies are text and shrink well anyway
USER_AGENT = "headwater-forwarder"

_decode = msgspec.json.Decoder(dict[str, Any])
_encode = msgspec.json.Encoder().encode


class Capture(msgspec.Struct, omit_defaults=True):
    """A PostHog capture message, as posthog-python writes one."""

    event: str
    distinct_id: str
    properties: msgspec.Raw
    timestamp: str
    uuid: str
    type: str
    set: dict[str, Any] | None = msgspec.field(default=None, name="$set")
    set_once: dict[str, Any] | None = msgspec.field(default=None, name="$set_once")


class _Batch(msgspec.Struct):
    api_key: str
    batch: list[Capture]
    sent_at: str


def capture(row: StoredEvent) -> Capture:
    """The PostHog capture message of a stored row: same uuid, time, user and properties.
    Raises ValueError when its properties do not read as a JSON object PostHog can read."""
    try:
        properties = _decode.decode(row.properties)
    except msgspec.DecodeError as exc:  # e.g. 1e999, which no float holds
        raise ValueError(f"properties do not read: {exc}") from exc
    sets, sets_once = properties.get("$set"), properties.get("$set_once")
    return Capture(
        event=row.event,
        distinct_id=row.distinct_id,
        properties=msgspec.Raw(row.properties.encode()),
        timestamp=iso_utc(row.timestamp),
        uuid=row.event_id,
        type="capture",
        set=sets if isinstance(sets, dict) else None,
        set_once=sets_once if isinstance(sets_once, dict) else None,
    )


def encode(capture: Capture) -> str:
    """One message as JSON text (kept with a dead letter)."""
    return _encode(capture).decode()


def iso_utc(clickhouse_time: str) -> str:
    """`2026-12-01 09:30:00.250` (ClickHouse's text of a UTC time) in ISO 8601 with its
    offset: `2026-12-01T09:30:00.250+00:00`."""
    return clickhouse_time.replace(" ", "T", 1) + "+00:00"


class Answer(NamedTuple):
    """What became of a post: `status` 200 sent; `final` refused for good (status, why);
    otherwise worth trying again (after `retry_after` seconds when PostHog said)."""

    status: int  # 0: no answer (the network, a timeout)
    final: bool
    reason: str
    retry_after: float | None = None

    @property
    def sent(self) -> bool:
        """Whether PostHog took the batch."""
        return self.status == 200

    @property
    def too_large(self) -> bool:
        """Whether PostHog refused the batch for its size (halves may go)."""
        return self.status == TOO_LARGE


class PostHogBatches:
    """Posts batches to PostHog over one pooled HTTP client (of the forwarder's thread)."""

    def __init__(self, *, timeout: float = TIMEOUT_SECONDS) -> None:
        self._http = httpx.Client(timeout=timeout, headers={"User-Agent": USER_AGENT})

    def post(self, target: PostHogTarget, messages: list[Capture]) -> Answer:
        """Post `messages` to `target`; never raises: the answer says what happened."""
        sent_at = datetime.now(UTC).isoformat()
        body = _encode(_Batch(api_key=target.api_key, batch=messages, sent_at=sent_at))
        try:
            response = self._http.post(
                target.host.rstrip("/") + "/batch/",
                content=gzip.compress(body, compresslevel=GZIP_LEVEL),
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            )
        except httpx.HTTPError as exc:
            return Answer(0, final=False, reason=f"{type(exc).__name__}: {exc}"[:500])
        return _answer(response)

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()


def _answer(response: httpx.Response) -> Answer:
    status = response.status_code
    if status == 200:
        return Answer(200, final=False, reason="")
    final = 400 <= status < 500 and status not in RETRIED_STATUSES
    reason = f"PostHog answered {status}: {_detail(response)}"[:500]
    return Answer(status, final, reason, parse_retry_after(response.headers.get("Retry-After")))


def _detail(response: httpx.Response) -> str:
    """PostHog's `detail`, else the body's text."""
    try:
        found = response.json()
    except ValueError:
        return response.text
    detail = found.get("detail") if isinstance(found, dict) else None
    return detail if isinstance(detail, str) else response.text
