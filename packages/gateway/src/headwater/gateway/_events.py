"""One event on its way in: what every endpoint family parses into, and the checks that
turn it into an `events` row or a named rejection."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

MAX_NAME_LENGTH = 200
MAX_FUTURE = timedelta(hours=23)
MAX_SHOWN = 80  # characters of a rejected value quoted in its reason
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)  # DateTime64's lower bound
_FIRST, _LAST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
_UUID = re.compile(r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ID_NAMESPACE = uuid.UUID("6f1d1b6e-8d2c-4c55-9c43-1f0c6a1e2a10")  # Headwater's UUIDv5 namespace


class RawBatch:
    """A batch body whose events' own encoded forms are cut out of it only when one is
    asked for (a derived id, a size check, a dead letter): most requests never ask."""

    def __init__(self, body: bytes, cut: Callable[[bytes], list[bytes]]) -> None:
        self.size = len(body)
        self._body = body
        self._cut = cut
        self._events: list[bytes] | None = None

    def event(self, index: int) -> bytes:
        if self._events is None:
            self._events = self._cut(self._body)
        return self._events[index]


class Incoming(msgspec.Struct, kw_only=True):
    """An event as a sender described it, before any check."""

    event: Any
    distinct_id: Any
    properties: Any  # a dict, or a JSON object's text (msgspec.Raw) to keep as it is
    event_id: Any = None
    timestamp: Any = None
    raw: bytes = b""  # its encoded form: size limit, deterministic id, dead letters
    batch: RawBatch | None = None  # or the body that holds it, at `index`
    index: int = 0

    def text(self) -> bytes:
        """The event as its sender encoded it (as JSON)."""
        return self.raw if self.batch is None else self.batch.event(self.index)

    def size_over(self, limit: int) -> int | None:
        """The event's encoded size when it is over `limit`."""
        if self.batch is not None and self.batch.size <= limit:
            return None  # the whole body is within it
        size = len(self.text())
        return size if size > limit else None


class EventRow(msgspec.Struct, array_like=True, kw_only=True, gc=False):
    """A row of the `events` table, in column order (encoded as JSONCompactEachRow).

    `properties` is a JSON object's text, written into the line as an object: ClickHouse
    reads it into the String column as it is (`input_format_json_read_objects_as_strings`),
    so it is neither escaped here nor unescaped there.
    """

    project: str
    event_id: str
    event: str
    distinct_id: str
    timestamp: datetime
    received_at: datetime
    properties: msgspec.Raw
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
    # derived once per request: what every event's time is corrected by, and its bound
    skew: timedelta = timedelta(0)
    latest: datetime = EARLIEST

    def __post_init__(self) -> None:  # whatever was passed for them
        # the device's clock skew
        self.skew = timedelta(0) if self.sent_at is None else self.received_at - self.sent_at
        self.latest = self.received_at + MAX_FUTURE


_properties_encoder = msgspec.json.Encoder()
_OBJECTS = (dict, msgspec.Raw)  # a Raw is an object's text (`_native` checks it)


def to_row(incoming: Incoming, ctx: Context) -> EventRow | str:
    """The `events` row for `incoming`, or the reason it cannot be one."""
    problem = _envelope_problem(incoming, ctx)
    if problem is not None:
        return problem
    event_id = _event_id(incoming)
    if event_id is None:
        return f"event_id {_shown(incoming.event_id)} is not a UUID"
    timestamp = _timestamp(incoming.timestamp, ctx)
    if isinstance(timestamp, str):
        return timestamp
    properties = incoming.properties
    if not isinstance(properties, msgspec.Raw):
        try:
            properties = msgspec.Raw(_properties_encoder.encode(properties))
        except (TypeError, ValueError) as exc:  # e.g. a MessagePack extension type
            return f"properties cannot be stored as JSON: {exc}"
        except RecursionError:
            return "properties are nested too deeply"
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
    event, distinct_id = incoming.event, incoming.distinct_id
    if not (  # what nearly every event is, checked at once
        type(event) is str
        and type(distinct_id) is str
        and 0 < len(event) <= MAX_NAME_LENGTH
        and 0 < len(distinct_id) <= MAX_NAME_LENGTH
        and "\x00" not in event
        and "\x00" not in distinct_id
    ):
        problem = _name_problem("event", event) or _name_problem("distinct_id", distinct_id)
        if problem is not None:
            return problem
    if not isinstance(incoming.properties, _OBJECTS):
        return "properties must be a JSON object"
    size = incoming.size_over(ctx.max_event_bytes)
    if size is not None:
        return f"event is {size} bytes, over the limit of {ctx.max_event_bytes}"
    return None


def _name_problem(field: str, value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return f"{field} is required and must be a non-empty string"
    if len(value) > MAX_NAME_LENGTH:
        return f"{field} is {len(value)} characters, over {MAX_NAME_LENGTH}"
    if "\x00" in value:
        return f"{field} contains a NUL character"
    return None


def id_from(text: str) -> str:
    """A stable UUID for a sender's id that is not one (Segment's `ajs-next-…` message ids)."""
    return text if _UUID.fullmatch(text) else str(uuid.uuid5(_ID_NAMESPACE, f"id:{text}"))


def _event_id(incoming: Incoming) -> str | None:
    value = incoming.event_id
    if value is None or value == "":
        # No id from the sender: derive one from the content, so a retried body dedupes.
        return str(uuid.uuid5(_ID_NAMESPACE, incoming.text().decode("utf-8", "replace")))
    if not isinstance(value, str):
        return None
    if _CANONICAL.fullmatch(value):  # what the SDKs send: already the dedupe key's spelling
        return value
    if not _UUID.fullmatch(value):
        return None  # `uuid.UUID()` alone would take " 1_2…" or non-ASCII digits
    return str(uuid.UUID(value))  # one spelling (lower case, hyphens) for the dedupe key


def _timestamp(value: Any, ctx: Context) -> datetime | str:
    """The clock-skew corrected time of an event, or the reason it has none."""
    if value is None or value == "":
        return ctx.received_at
    aware = type(value) is datetime and value.tzinfo is not None  # as msgspec reads most
    parsed = value if aware else _parse_time(value)
    if parsed is None:
        return f"timestamp {_shown(value)} is not an ISO 8601 date-time"
    try:
        corrected = parsed + ctx.skew
    except OverflowError:  # past the year 9999 or before the year 1: as far as it goes
        corrected = _LAST if ctx.skew > timedelta(0) else _FIRST
    if corrected > ctx.latest:
        return ctx.received_at
    if corrected < EARLIEST:
        return f"timestamp {_shown(value)} is before {EARLIEST:%Y-%m-%d}, the earliest kept"
    if corrected.tzinfo is not UTC:
        corrected = corrected.astimezone(UTC)
    # The column keeps milliseconds: so must everything that reports or forwards the row.
    if corrected.microsecond % 1000:
        return corrected.replace(microsecond=corrected.microsecond // 1000 * 1000)
    return corrected


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_sent_at(value: Any) -> datetime | None:
    """A sender's `sent_at`, when it is a usable date-time."""
    return _parse_time(value)


def _shown(value: Any) -> str:
    """A sender's value in a reason: its repr, cut short (a reason is no copy of the event)."""
    shown = repr(value.isoformat() if isinstance(value, datetime) else value)
    return shown if len(shown) <= MAX_SHOWN else shown[: MAX_SHOWN - 1] + "…"


def now() -> datetime:
    """The gateway's clock, in UTC with millisecond precision (the column's)."""
    current = datetime.now(UTC)
    return current.replace(microsecond=current.microsecond // 1000 * 1000)
