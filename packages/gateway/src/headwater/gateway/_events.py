"""One event on its way in: what every endpoint family parses into, and the checks that
turn it into an `events` row or a named rejection.

An event's time is corrected by its sender's clock skew (`received_at - sent_at`), then
must lie in the window around its arrival that `EventWindow` draws: outside it the event
is refused and kept in `ingest_errors`, never clamped. A clamped time is a time the event
did not have (it would count as activity at its arrival); a refused event can be stored by
`headwater replay-errors` once the window is widened.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from ._clickhouse import EVENT_COLUMNS
from ._errors import PayloadTooLarge

if TYPE_CHECKING:
    from ._settings import Settings

MAX_NAME_LENGTH = 200
# Events in one request, whatever their size. Without it a body of `1,`s is millions of
# events, each refused with a reason of its own: 2 MB of them took 21 s of the event loop
# and answered 57 MB (a probe of 1,000,000 on 2026-12-02). 20 times the SDK's batch; a 413
# is what the SDK halves a batch on.
MAX_BATCH_EVENTS = 10_000
MAX_SHOWN = 80  # characters of a rejected value quoted in its reason
# The times `events.timestamp` (DateTime64(3, 'UTC')) holds: [COLUMN_FIRST, COLUMN_END).
COLUMN_FIRST = datetime(1900, 1, 1, tzinfo=UTC)
COLUMN_END = datetime(2300, 1, 1, tzinfo=UTC)
_COLUMN_LAST = COLUMN_END - timedelta(microseconds=1)  # the last time before COLUMN_END
_COLUMN_SPAN = COLUMN_END - COLUMN_FIRST
_HOUR, _DAY = timedelta(hours=1), timedelta(days=1)
_FIRST, _LAST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
_UUID = re.compile(r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")
_CANONICAL_TEXT = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_CANONICAL = re.compile(_CANONICAL_TEXT)
_CANONICAL_IDS = re.compile(rf"{_CANONICAL_TEXT}(?:\n{_CANONICAL_TEXT})*")  # one per line
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


class Incoming(msgspec.Struct, kw_only=True, gc=False):
    """An event as a sender described it, before any check. (Untracked by the garbage
    collector: nothing it holds refers back to it.)"""

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


class Invalid(msgspec.Struct, kw_only=True, gc=False):
    """An event of a request that could not even be read as one."""

    reason: str
    raw: bytes
    event_id: str | None = None


class EventWindow:
    """The event times the gateway stores, around each event's arrival (`received_at`):
    from `max_age_days` before it to `max_future_hours` after it, both included, and only
    what the column holds ([1900-01-01, 2300-01-01) UTC) whatever the settings say.

    Built once from the settings (`HEADWATER_EVENT_MAX_AGE_DAYS`,
    `HEADWATER_EVENT_MAX_FUTURE_HOURS`) by the `Gateway`; a request's `Context` derives its
    bounds from it.
    """

    __slots__ = ("_max_age", "_max_future", "max_age_days", "max_future_hours")

    def __init__(self, *, max_age_days: int, max_future_hours: float) -> None:
        self.max_age_days = max_age_days
        self.max_future_hours = max_future_hours
        # A window wider than the column's span is bounded by the column alone: so limited,
        # no arrival time that the column holds moves out of the calendar.
        self._max_age = timedelta(days=min(max_age_days, _COLUMN_SPAN.days))
        self._max_future = timedelta(hours=min(max_future_hours, _COLUMN_SPAN / _HOUR))

    @classmethod
    def of(cls, settings: Settings) -> EventWindow:
        """The window `settings` draw."""
        return cls(
            max_age_days=settings.event_max_age_days,
            max_future_hours=settings.event_max_future_hours,
        )

    def bounds(self, received_at: datetime) -> tuple[datetime, datetime]:
        """The earliest and the latest time stored for an event that arrived at `received_at`."""
        earliest = max(COLUMN_FIRST, received_at - self._max_age)
        return earliest, min(_COLUMN_LAST, received_at + self._max_future)

    def refusal(self, shown: str, corrected: datetime, received_at: datetime) -> str:
        """Why a time outside the window is refused: the bound it crosses, and the setting
        that widens it."""
        if corrected < COLUMN_FIRST:
            return (
                f"timestamp {shown} is before {COLUMN_FIRST:%Y-%m-%d},"
                " the earliest time the events table holds"
            )
        if corrected >= COLUMN_END:
            return (
                f"timestamp {shown} is from {COLUMN_END:%Y-%m-%d} on,"
                " past the latest time the events table holds"
            )
        if corrected < received_at:
            return (
                f"timestamp {shown} is {_distance(received_at - corrected, _DAY, 'day')} before"
                f" its arrival, over the window of {_counted(self.max_age_days, 'day')}"
                " (HEADWATER_EVENT_MAX_AGE_DAYS)"
            )
        return (
            f"timestamp {shown} is {_distance(corrected - received_at, _HOUR, 'hour')} after"
            f" its arrival, over the window of {_counted(self.max_future_hours, 'hour')}"
            " (HEADWATER_EVENT_MAX_FUTURE_HOURS)"
        )


def _distance(delta: timedelta, unit: timedelta, name: str) -> str:
    """`delta` in whole units, exactly: "20,423 days", "more than 23 hours" when a part of
    a unit is left over (a time just over a 23 h window is not "23 hours" ahead)."""
    whole, part = divmod(delta, unit)
    if not whole:
        return f"less than 1 {name}"
    counted = f"{whole:,} {name}{'s' if whole != 1 else ''}"
    return f"more than {counted}" if part else counted


def _counted(setting: float, name: str) -> str:
    """A setting as its user would write it, with its unit: "23 hours", not "23.0 hours"."""
    number = str(int(setting)) if float(setting).is_integer() else str(setting)
    return f"{number} {name}{'s' if number != '1' else ''}"


class Context(msgspec.Struct, kw_only=True):
    """What one request's events share."""

    project: str
    source: str
    lib: str
    received_at: datetime
    sent_at: datetime | None
    max_event_bytes: int
    window: EventWindow
    # derived once per request: what every event's time is corrected by, and its bounds
    skew: timedelta = timedelta(0)
    earliest: datetime = COLUMN_FIRST
    latest: datetime = COLUMN_FIRST

    def __post_init__(self) -> None:  # whatever was passed for them
        # the device's clock skew
        self.skew = timedelta(0) if self.sent_at is None else self.received_at - self.sent_at
        self.earliest, self.latest = self.window.bounds(self.received_at)


ROW_BYTES = 140  # what a row of `events` takes besides its properties and names, about


class RowBlock(msgspec.Struct, kw_only=True, gc=False):
    """One request's rows of `events`, as columns: what the group commit inserts.

    Its times may hold microseconds; the column keeps milliseconds (see `Columns`).

    Every row of a request shares its project, arrival time, library and source, so those
    are kept once. Columns cost no Python per event to build, take or encode (msgspec
    encodes a list in C), where a row each did (BENCHMARKS.md, gateway section 1).
    """

    project: str
    received_at: datetime
    lib: str
    source: str
    event_ids: list[str]
    events: list[str]
    distinct_ids: list[str]
    timestamps: list[datetime]
    properties: list[msgspec.Raw]  # each a JSON object's text

    def __len__(self) -> int:
        return len(self.event_ids)

    @property
    def size(self) -> int:
        """About the bytes its rows take as JSON (the group commit's `max_bytes`)."""
        texts = map(len, [*self.properties, *self.events, *self.distinct_ids])
        return sum(texts) + ROW_BYTES * len(self.event_ids)

    @classmethod
    def of(
        cls,
        ctx: Context,
        *,
        event_ids: list[str],
        events: list[str],
        distinct_ids: list[str],
        timestamps: list[datetime],
        properties: list[msgspec.Raw],
    ) -> RowBlock:
        """The rows of `ctx`'s request, from its events' columns."""
        return cls(
            project=ctx.project,
            received_at=ctx.received_at,
            lib=ctx.lib,
            source=ctx.source,
            event_ids=event_ids,
            events=events,
            distinct_ids=distinct_ids,
            timestamps=timestamps,
            properties=properties,
        )

    @classmethod
    def of_rows(cls, ctx: Context, rows: list[EventRow]) -> RowBlock:
        return cls.of(
            ctx,
            event_ids=[row.event_id for row in rows],
            events=[row.event for row in rows],
            distinct_ids=[row.distinct_id for row in rows],
            timestamps=[row.timestamp for row in rows],
            properties=[row.properties for row in rows],
        )

    def take(self, indices: list[int]) -> RowBlock:
        """The rows at `indices`, in that order."""
        return msgspec.structs.replace(
            self,
            event_ids=[self.event_ids[i] for i in indices],
            events=[self.events[i] for i in indices],
            distinct_ids=[self.distinct_ids[i] for i in indices],
            timestamps=[self.timestamps[i] for i in indices],
            properties=[self.properties[i] for i in indices],
        )

    def rows(self) -> list[EventRow]:
        """Row by row (for PostHog), as stored: times in whole milliseconds."""
        return [
            EventRow(
                project=self.project,
                event_id=event_id,
                event=event,
                distinct_id=distinct_id,
                timestamp=timestamp.replace(microsecond=timestamp.microsecond // 1000 * 1000),
                received_at=self.received_at,
                properties=properties,
                lib=self.lib,
                source=self.source,
            )
            for event_id, event, distinct_id, timestamp, properties in zip(
                self.event_ids,
                self.events,
                self.distinct_ids,
                self.timestamps,
                self.properties,
                strict=True,
            )
        ]


def encode_blocks(blocks: Sequence[RowBlock]) -> bytes:
    """Rows of `events` as one `JSONColumns` object (ClickHouse reads each properties
    object into its String column as it is: `input_format_json_read_objects_as_strings`)."""
    columns: dict[str, list[Any]] = {name: [] for name in EVENT_COLUMNS}  # the table's order
    for block in blocks:
        count = len(block.event_ids)
        columns["project"] += [block.project] * count
        columns["event_id"] += block.event_ids
        columns["event"] += block.events
        columns["distinct_id"] += block.distinct_ids
        columns["timestamp"] += block.timestamps
        columns["received_at"] += [block.received_at] * count
        columns["properties"] += block.properties
        columns["lib"] += [block.lib] * count
        columns["source"] += [block.source] * count
    return _columns_encoder.encode(columns)


_columns_encoder = msgspec.json.Encoder()


class Columns(msgspec.Struct, kw_only=True, gc=False):
    """A batch whose every message decoded whole, read as columns: taken at once when
    all of its events pass the checks together (`block`), else one by one (`items`)."""

    event_ids: list[str]
    events: list[str]
    distinct_ids: list[str]
    timestamps: list[datetime | None]
    properties: list[msgspec.Raw]  # each checked to be an object's text
    body_size: int  # no event is larger than its body
    items: Callable[[], list[Incoming | Invalid]]  # the same events, to check one by one

    def block(self, ctx: Context) -> RowBlock | None:
        """The rows, when each event would pass `to_row` unchanged but for the common
        clock-skew correction (and microseconds, which the column drops as `to_row`
        does); None when any might not (its own check names why)."""
        timestamps = self._corrected(ctx) if self._envelopes_pass(ctx) else None
        if timestamps is None:
            return None
        return RowBlock.of(
            ctx,
            event_ids=self.event_ids,
            events=self.events,
            distinct_ids=self.distinct_ids,
            timestamps=timestamps,
            properties=self.properties,
        )

    def _envelopes_pass(self, ctx: Context) -> bool:
        """Names, sizes and ids: every one as `to_row` takes it without a second look."""
        return (
            bool(self.event_ids)
            and self.body_size <= ctx.max_event_bytes
            and _names_pass(self.events)
            and _names_pass(self.distinct_ids)
            and _canonical(self.event_ids)
        )

    def _corrected(self, ctx: Context) -> list[datetime] | None:
        """Every time in UTC, corrected by the skew, within the window (`ctx.earliest`
        to `ctx.latest`, as `to_row` checks it); None when any is not.

        Microseconds are kept: ClickHouse reads a time's first three fractional digits
        into the column and ignores the rest, which is what `to_row` truncates to, and
        `RowBlock.rows` truncates alike (`tests/gateway/test_columns.py` holds both)."""
        stamps = self.timestamps
        if None in stamps or not all(stamp.tzinfo is UTC for stamp in stamps):  # type: ignore[union-attr]
            return None
        timestamps: list[datetime] = stamps  # type: ignore[assignment]
        skew = ctx.skew
        if skew:
            try:
                timestamps = [stamp + skew for stamp in timestamps]
            except OverflowError:
                return None
        if max(timestamps) > ctx.latest or min(timestamps) < ctx.earliest:
            return None
        return timestamps


def check_batch_size(count: int) -> None:
    """A request of more than `MAX_BATCH_EVENTS` events is refused whole (413), before any
    of them is looked at."""
    if count > MAX_BATCH_EVENTS:
        raise PayloadTooLarge(
            f"batch holds {count:,} events, over the limit of {MAX_BATCH_EVENTS:,}"
        )


def _canonical(ids: list[str]) -> bool:
    """Whether every id is a UUID as the dedupe key spells it: one scan in C. (No id
    missing, derived from the event's text; none spelled otherwise.) The length rules out
    an id holding a newline and two UUIDs."""
    joined = "\n".join(ids)
    return len(joined) == 37 * len(ids) - 1 and _CANONICAL_IDS.fullmatch(joined) is not None


def _names_pass(values: list[str]) -> bool:
    """Whether every name is 1-200 characters without NUL: three scans in C."""
    lengths = list(map(len, values))
    return min(lengths) > 0 and max(lengths) <= MAX_NAME_LENGTH and "\x00" not in "".join(values)


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
    """The clock-skew corrected time of an event, or the reason it has none: refused
    outside the request's window, never clamped into it (`EventWindow`)."""
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
    if not ctx.earliest <= corrected <= ctx.latest:
        return _outside(value, corrected, ctx)
    if corrected.tzinfo is not UTC:
        corrected = corrected.astimezone(UTC)
    # The column keeps milliseconds: so must everything that reports or forwards the row.
    if corrected.microsecond % 1000:
        return corrected.replace(microsecond=corrected.microsecond // 1000 * 1000)
    return corrected


def _outside(value: Any, corrected: datetime, ctx: Context) -> str:
    """The reason for a time outside the window; a corrected time is named beside the one
    sent, since the window judged the corrected one."""
    shown = _shown(value)
    if ctx.skew:
        to = "out of the calendar" if corrected in (_FIRST, _LAST) else f"to {_shown(corrected)}"
        shown += f", corrected by the sender's clock {to},"
    return ctx.window.refusal(shown, corrected, ctx.received_at)


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
    """A sender's value in a reason: its repr, cut short (a reason is no copy of the event).
    A time is shown as the SDKs send one: milliseconds, unless it has finer digits; `Z`
    for UTC."""
    if isinstance(value, datetime):
        milliseconds = value.microsecond and value.microsecond % 1000 == 0
        value = value.isoformat(timespec="milliseconds" if milliseconds else "auto")
        if value.endswith("+00:00"):
            value = value[:-6] + "Z"
    shown = repr(value)
    return shown if len(shown) <= MAX_SHOWN else shown[: MAX_SHOWN - 1] + "…"


def now() -> datetime:
    """The gateway's clock, in UTC with millisecond precision (the column's)."""
    current = datetime.now(UTC)
    return current.replace(microsecond=current.microsecond // 1000 * 1000)
