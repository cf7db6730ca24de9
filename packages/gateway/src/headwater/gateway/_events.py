"""One event on its way in: what every endpoint family parses into, and the checks that
turn it into an `events` row or a named rejection."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

MAX_NAME_LENGTH = 200
MAX_FUTURE = timedelta(hours=23)
_ID_NAMESPACE = uuid.UUID("6f1d1b6e-8d2c-4c55-9c43-1f0c6a1e2a10")  # Headwater's UUIDv5 namespace


class Incoming(msgspec.Struct, kw_only=True):
    """An event as a sender described it, before any check."""

    event: Any
    distinct_id: Any
    properties: Any
    event_id: Any = None
    timestamp: Any = None
    raw: bytes = b""  # its encoded form: size limit, deterministic id, dead letters


class EventRow(msgspec.Struct, array_like=True, kw_only=True, gc=False):
    """A row of the `events` table, in column order (encoded as JSONCompactEachRow)."""

    project: str
    event_id: str
    event: str
    distinct_id: str
    timestamp: datetime
    received_at: datetime
    properties: str
    lib: str
    source: str


class Invalid(msgspec.Struct, kw_only=True):
    """An event of a request that could not even be read as one."""

    reason: str
    raw: bytes
    event_id: str | None = None


class Context(msgspec.Struct, kw_only=True):
    """What one request's events share."""

    project: str
    source: str
    lib: str
    received_at: datetime
    sent_at: datetime | None
    max_event_bytes: int


_properties_encoder = msgspec.json.Encoder()


def to_row(incoming: Incoming, ctx: Context) -> EventRow | str:
    """The `events` row for `incoming`, or the reason it cannot be one."""
    problem = _envelope_problem(incoming, ctx)
    if problem is not None:
        return problem
    event_id = _event_id(incoming)
    if event_id is None:
        return f"event_id {incoming.event_id!r} is not a UUID"
    timestamp = _timestamp(incoming.timestamp, ctx)
    if timestamp is None:
        return f"timestamp {incoming.timestamp!r} is not an ISO 8601 date-time"
    try:
        properties = _properties_encoder.encode(incoming.properties).decode()
    except (TypeError, ValueError) as exc:  # e.g. NaN from a MessagePack body
        return f"properties cannot be stored as JSON: {exc}"
    return EventRow(
        project=ctx.project,
        event_id=event_id,
        event=incoming.event,
        distinct_id=incoming.distinct_id,
        timestamp=timestamp,
        received_at=ctx.received_at,
        properties=properties,
        lib=ctx.lib,
        source=ctx.source,
    )


def _envelope_problem(incoming: Incoming, ctx: Context) -> str | None:
    for field, value in (("event", incoming.event), ("distinct_id", incoming.distinct_id)):
        if not isinstance(value, str) or not value:
            return f"{field} is required and must be a non-empty string"
        if len(value) > MAX_NAME_LENGTH:
            return f"{field} is {len(value)} characters, over {MAX_NAME_LENGTH}"
        if "\x00" in value:
            return f"{field} contains a NUL character"
    if not isinstance(incoming.properties, dict):
        return "properties must be a JSON object"
    if len(incoming.raw) > ctx.max_event_bytes:
        return f"event is {len(incoming.raw)} bytes, over the limit of {ctx.max_event_bytes}"
    return None


def _event_id(incoming: Incoming) -> str | None:
    value = incoming.event_id
    if value is None or value == "":
        # No id from the sender: derive one from the content, so a retried body dedupes.
        return str(uuid.uuid5(_ID_NAMESPACE, incoming.raw.decode("utf-8", "replace")))
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _timestamp(value: Any, ctx: Context) -> datetime | None:
    if value is None or value == "":
        return ctx.received_at
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if ctx.sent_at is not None:
        value = value + (ctx.received_at - ctx.sent_at)  # the device's clock skew
    if value > ctx.received_at + MAX_FUTURE:
        return ctx.received_at
    corrected: datetime = value.astimezone(UTC)
    # The column keeps milliseconds: so must everything that reports or forwards the row.
    return corrected.replace(microsecond=corrected.microsecond // 1000 * 1000)


def parse_sent_at(value: Any) -> datetime | None:
    """A sender's `sent_at`, when it is a usable date-time."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def now() -> datetime:
    """The gateway's clock, in UTC with millisecond precision (the column's)."""
    current = datetime.now(UTC)
    return current.replace(microsecond=current.microsecond // 1000 * 1000)
