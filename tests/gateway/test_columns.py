"""A native batch taken as columns (`Columns.block`) stores exactly what the checks one
event at a time (`to_row`) would, and is taken whenever the batch is what the SDK sends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import msgspec
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from headwater.gateway._events import (
    Columns,
    Context,
    EventRow,
    EventWindow,
    Incoming,
    RowBlock,
    encode_blocks,
    to_row,
)
from headwater.gateway._native import parse_native

from .conftest import WRITE_KEY, GatewayFactory, metric

RECEIVED = datetime(2026, 11, 26, 12, 0, 0, 250_000, tzinfo=UTC)
WINDOW = EventWindow(max_age_days=3650, max_future_hours=23)  # the default settings'
WIDEST = EventWindow(max_age_days=100_000, max_future_hours=2_000_000)  # the column's range
EXAMPLES = settings(max_examples=300, deadline=None)
AUTH = f"Bearer {WRITE_KEY}"

# -- what the SDK sends ------------------------------------------------------------------

names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=200)
ids = st.uuids().map(str)
times = st.builds(  # with microseconds, as the SDK's `datetime.now(UTC)`
    lambda day, second, micro: (
        datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=day, seconds=second, microseconds=micro)
    ),
    st.integers(min_value=0, max_value=320),
    st.integers(min_value=0, max_value=86_399),
    st.integers(min_value=0, max_value=999_999),
)
skews = st.builds(  # the device's clock against the gateway's
    lambda seconds, micro: timedelta(seconds=seconds, microseconds=micro),
    st.integers(min_value=-3 * 86_400, max_value=3 * 86_400),
    st.integers(min_value=0, max_value=999_999),
)
properties = st.dictionaries(
    st.text(max_size=5), st.integers() | st.text(max_size=5) | st.booleans(), max_size=3
)

# -- near it: one field made different -----------------------------------------------------

odd_names = st.sampled_from(["", "x" * 201, "a\x00b"])  # strings: others are not columns
odd_ids = st.sampled_from(
    [
        "",
        "not-a-uuid",
        "0193C6A2-7A1E-7CC1-8F3E-2B9D1D7E4A10",
        "0193c6a27a1e7cc18f3e2b9d1d7e4a10",
        "0193c6a2-7a1e-7cc1-8f3e-2b9d1d7e4a10\n0193c6a2-7a1e-7cc1-8f3e-2b9d1d7e4a11",
    ]
)
odd_times = st.sampled_from(
    [
        None,
        "",
        "yesterday",
        "2026-03-01T10:00:00.123456Z",  # microseconds: kept, and stored as milliseconds
        "2026-03-01T10:00:00",  # no zone: read as UTC one by one
        "2026-03-01T12:00:00+02:00",  # another zone: converted one by one
        "1899-12-31T23:59:59Z",  # before the earliest time the column holds
        "1970-01-01T00:00:00Z",  # before the window (ten years): refused
        "2016-11-28T12:00:00.250Z",  # the window's first moment: stored
        "2016-11-28T12:00:00.249Z",  # a millisecond before it: refused
        "2026-11-27T11:00:00.250Z",  # 23 h after the arrival: stored
        "2026-11-27T11:00:00.251Z",  # a millisecond over 23 h: refused
        "2030-01-01T00:00:00Z",  # in the future: refused, not clamped
    ]
)


def message(
    name: Any, distinct_id: Any, event_id: Any, timestamp: Any, props: Any
) -> dict[str, Any]:
    found = {"type": "track", "event": name, "distinct_id": distinct_id, "properties": props}
    if event_id is not None:
        found["event_id"] = event_id
    if timestamp is not None:
        found["timestamp"] = timestamp.isoformat() if isinstance(timestamp, datetime) else timestamp
    return found


clean = st.builds(message, names, names, ids, times, properties)
near = st.builds(
    message,
    names | odd_names,
    names | odd_names,
    ids | odd_ids,
    times | odd_times,
    properties,
)


def context(
    sent_at: datetime | None,
    *,
    max_event_bytes: int = 1_000_000,
    window: EventWindow = WINDOW,
    received_at: datetime = RECEIVED,
) -> Context:
    return Context(
        project="shop",
        source="native",
        lib="headwater-python",
        received_at=received_at,
        sent_at=sent_at,
        max_event_bytes=max_event_bytes,
        window=window,
    )


def parsed(messages: list[dict[str, Any]], sent_at: datetime | None) -> Any:
    body = msgspec.json.encode(
        {"batch": messages, "sent_at": None if sent_at is None else sent_at.isoformat()}
    )
    return parse_native(body, "json")[0]


def columns_of(messages: list[dict[str, Any]], sent_at: datetime | None) -> Columns:
    found = parsed(messages, sent_at)
    assert isinstance(found, Columns)
    return found


def one_by_one(columns: Columns, ctx: Context) -> list[EventRow | str]:
    found: list[EventRow | str] = []
    for item in columns.items():
        assert isinstance(item, Incoming)  # a batch that decoded whole has no unreadable one
        found.append(to_row(item, ctx))
    return found


@EXAMPLES
@given(st.lists(near, min_size=1, max_size=6), st.none() | skews)
def test_a_block_holds_what_the_checks_one_by_one_store(
    messages: list[dict[str, Any]], skew: timedelta | None
) -> None:
    """Whenever a batch is taken as columns, its rows are the rows `to_row` makes of its
    events, field for field; a batch with any event refused or changed is not taken."""
    sent_at = None if skew is None else RECEIVED - skew
    ctx = context(sent_at)
    columns = parsed(messages, sent_at)
    assume(isinstance(columns, Columns))  # not a time or not a string: read one by one anyway
    block = columns.block(ctx)
    expected = one_by_one(columns, ctx)
    if block is not None:
        assert block.rows() == expected


@EXAMPLES
@given(st.lists(clean, min_size=1, max_size=6), st.none() | skews)
def test_what_the_sdk_sends_is_taken_as_columns(
    messages: list[dict[str, Any]], skew: timedelta | None
) -> None:
    """Times within 2026-11-17 and skews within 3 days: none is refused."""
    sent_at = None if skew is None else RECEIVED - skew
    columns = columns_of(messages, sent_at)
    ctx = context(sent_at)
    block = columns.block(ctx)
    assert block is not None
    assert block.rows() == one_by_one(columns, ctx)


# -- the event-time window ------------------------------------------------------------------

COLUMN_FIRST, COLUMN_END = datetime(1900, 1, 1, tzinfo=UTC), datetime(2300, 1, 1, tzinfo=UTC)
arrivals = st.datetimes(  # now, or the first arrival of a replayed event: whole milliseconds
    datetime(1900, 1, 1), datetime(2299, 12, 31, 23, 59, 59, 999_000)
).map(lambda at: at.replace(microsecond=at.microsecond // 1000 * 1000, tzinfo=UTC))
windows = st.builds(
    EventWindow,
    max_age_days=st.integers(min_value=1, max_value=200_000),
    max_future_hours=st.integers(min_value=1, max_value=4_000_000)
    | st.floats(min_value=0.001, max_value=4e6),
)
nudges = st.timedeltas(timedelta(microseconds=-2000), timedelta(microseconds=2000))
edges = st.sampled_from(["age", "future", "first", "end", "anywhere"])


def _window_edge(edge: str, at: datetime, window: EventWindow) -> datetime:
    """Where `edge` of `window` lies for an event that arrived `at` (as the settings say
    it, without the column's range: that bounds it too)."""
    return {
        "age": at - timedelta(days=window.max_age_days),
        "future": at + timedelta(hours=window.max_future_hours),
        "first": COLUMN_FIRST,
        "end": COLUMN_END,
        "anywhere": at,
    }[edge]


@EXAMPLES
@given(
    arrivals,
    windows,
    edges,
    nudges | st.timedeltas(timedelta(days=-200_000), timedelta(days=200_000)),
    st.none() | skews,
)
def test_an_event_is_stored_iff_its_corrected_time_is_in_the_window(
    at: datetime, window: EventWindow, edge: str, nudge: timedelta, skew: timedelta | None
) -> None:
    """Near each edge of the window and anywhere: the event (beside one at its arrival) is
    stored iff its skew-corrected time lies within `max_age_days` before its arrival,
    `max_future_hours` after it and the column's range; the columns and the checks one by
    one agree, and a refusal names the bound crossed."""
    corrected = _window_edge(edge, at, window) + nudge
    sent_at = None if skew is None else at - skew
    stamp = corrected - (skew or timedelta(0))  # what the device's clock said
    messages = [
        sdk_event(event_id=str(uuid.uuid4()), timestamp=(at - (skew or timedelta(0))).isoformat()),
        sdk_event(event_id=str(uuid.uuid4()), timestamp=stamp.isoformat()),
    ]
    ctx = context(sent_at, window=window, received_at=at)
    columns = columns_of(messages, sent_at)
    block, (beside, row) = columns.block(ctx), one_by_one(columns, ctx)

    inside = (
        COLUMN_FIRST <= corrected < COLUMN_END
        and at - corrected <= timedelta(days=window.max_age_days)
        and corrected - at <= timedelta(hours=window.max_future_hours)
    )
    assert isinstance(beside, EventRow)
    assert beside.timestamp == at
    if inside:
        assert isinstance(row, EventRow)
        assert row.timestamp == corrected.replace(microsecond=corrected.microsecond // 1000 * 1000)
        assert block is not None
        assert block.rows() == [beside, row]
        return
    assert block is None
    assert isinstance(row, str)
    assert row.startswith(f"timestamp '{stamp.isoformat(timespec='auto')[:19]}")
    if corrected < COLUMN_FIRST:
        assert row.endswith(" is before 1900-01-01, the earliest time the events table holds")
    elif corrected >= COLUMN_END:
        assert row.endswith(" is from 2300-01-01 on, past the latest time the events table holds")
    elif corrected < at:
        assert row.endswith(" (HEADWATER_EVENT_MAX_AGE_DAYS)")
        assert f" before its arrival, over the window of {window.max_age_days} day" in row
    else:
        assert row.endswith(" (HEADWATER_EVENT_MAX_FUTURE_HOURS)")
        assert " after its arrival, over the window of " in row


def test_the_window_bounds_the_columns_as_the_checks_one_by_one() -> None:
    """A batch with one time a millisecond outside the default window goes one by one,
    where that event alone is refused, naming the setting; at the edges it is taken."""
    first, last = "2016-11-28T12:00:00.250Z", "2026-11-27T11:00:00.250Z"
    edges = [sdk_event(event_id=str(uuid.uuid4()), timestamp=at) for at in (first, last)]
    block = columns_of(edges, None).block(context(None))
    assert block is not None
    assert [row.timestamp.isoformat() for row in block.rows()] == [
        "2016-11-28T12:00:00.250000+00:00",
        "2026-11-27T11:00:00.250000+00:00",
    ]
    for outside, reason in (
        (
            "2016-11-28T12:00:00.249Z",
            "timestamp '2016-11-28T12:00:00.249Z' is more than 3,650 days before its arrival,"
            " over the window of 3650 days (HEADWATER_EVENT_MAX_AGE_DAYS)",
        ),
        (
            "2026-11-27T11:00:00.251Z",
            "timestamp '2026-11-27T11:00:00.251Z' is more than 23 hours after its arrival,"
            " over the window of 23 hours (HEADWATER_EVENT_MAX_FUTURE_HOURS)",
        ),
    ):
        batch = [*edges, sdk_event(event_id=str(uuid.uuid4()), timestamp=outside)]
        columns = columns_of(batch, None)
        assert columns.block(context(None)) is None
        assert one_by_one(columns, context(None))[2] == reason


def sdk_event(**changes: Any) -> dict[str, Any]:
    event = {
        "type": "track",
        "event": "Order Completed",
        "distinct_id": "user-1",
        "event_id": "0193c6a2-7a1e-7cc1-8f3e-2b9d1d7e4a10",
        "timestamp": "2026-11-26T11:59:58.125Z",
        "properties": {"revenue": 42.5},
    }
    return {**event, **changes}


def test_a_clean_batch_becomes_columns_with_every_field() -> None:
    second = sdk_event(event_id="0193c6a2-7a1e-7cc1-8f3e-2b9d1d7e4a11", distinct_id="user-2")
    sent_at = RECEIVED - timedelta(seconds=10)  # the device's clock is 10 s behind
    block = columns_of([sdk_event(), second], sent_at).block(context(sent_at))
    corrected = datetime(2026, 11, 26, 12, 0, 8, 125_000, tzinfo=UTC)
    assert block == RowBlock(
        project="shop",
        received_at=RECEIVED,
        lib="headwater-python",
        source="native",
        event_ids=["0193c6a2-7a1e-7cc1-8f3e-2b9d1d7e4a10", "0193c6a2-7a1e-7cc1-8f3e-2b9d1d7e4a11"],
        events=["Order Completed", "Order Completed"],
        distinct_ids=["user-1", "user-2"],
        timestamps=[corrected, corrected],
        properties=[msgspec.Raw(b'{"revenue":42.5}')] * 2,
    )
    assert msgspec.json.decode(encode_blocks([block, block.take([1])])) == {
        "project": ["shop"] * 3,
        "event_id": [
            "0193c6a2-7a1e-7cc1-8f3e-2b9d1d7e4a10",
            "0193c6a2-7a1e-7cc1-8f3e-2b9d1d7e4a11",
            "0193c6a2-7a1e-7cc1-8f3e-2b9d1d7e4a11",
        ],
        "event": ["Order Completed"] * 3,
        "distinct_id": ["user-1", "user-2", "user-2"],
        "timestamp": ["2026-11-26T12:00:08.125000Z"] * 3,
        "received_at": ["2026-11-26T12:00:00.250000Z"] * 3,
        "properties": [{"revenue": 42.5}] * 3,
        "lib": ["headwater-python"] * 3,
        "source": ["native"] * 3,
    }


def test_any_event_the_checks_would_change_or_refuse_sends_the_batch_one_by_one() -> None:
    """Each of these events alone, next to a clean one, makes the batch go event by event,
    where its own check answers for it."""
    for odd in (
        sdk_event(event="x" * 201),
        sdk_event(distinct_id=""),
        sdk_event(distinct_id="a\x00b"),
        sdk_event(event_id=""),  # derived from the event's text
        sdk_event(event_id="0193C6A2-7A1E-7CC1-8F3E-2B9D1D7E4A12"),  # spelled otherwise
        sdk_event(event_id=f"{uuid.uuid4()}\n{uuid.uuid4()}"),  # two lines of ids: refused
        sdk_event(timestamp=None),  # the arrival time
        sdk_event(timestamp="2026-11-26T13:59:58.125+02:00"),  # converted to UTC
        sdk_event(timestamp="2026-11-26T11:59:58.125"),  # no zone: read as UTC
        sdk_event(timestamp="2026-11-27T12:00:00Z"),  # over 23 h ahead: refused
        sdk_event(timestamp="2016-11-01T00:00:00Z"),  # over ten years back: refused
        sdk_event(timestamp="1899-12-31T23:59:59Z"),  # refused
    ):
        clean_one = sdk_event(event_id=str(uuid.uuid4()))
        assert columns_of([clean_one, odd], None).block(context(None)) is None, odd
    lone = columns_of([sdk_event()], None)
    assert lone.block(context(None, max_event_bytes=lone.body_size - 1)) is None  # size


def test_microseconds_are_kept_in_the_block_and_truncated_in_its_rows() -> None:
    """A time and a skew with microseconds, as the SDK sends them: the block keeps the
    corrected time whole (ClickHouse reads its milliseconds), its rows truncate it."""
    sent_at = RECEIVED - timedelta(seconds=1, microseconds=500)
    columns = columns_of([sdk_event(timestamp="2026-11-26T11:59:58.125999Z")], sent_at)
    block = columns.block(context(sent_at))
    assert block is not None
    assert block.timestamps == [datetime(2026, 11, 26, 11, 59, 59, 126_499, tzinfo=UTC)]
    expected = datetime(2026, 11, 26, 11, 59, 59, 126_000, tzinfo=UTC)
    assert [row.timestamp for row in block.rows()] == [expected]
    assert block.rows() == one_by_one(columns, context(sent_at))


def test_msgspec_reads_only_utc_times_with_the_utc_tzinfo() -> None:
    """What the check `tzinfo is UTC` relies on: `Z` and `+00:00` read alike, any other
    offset (or none) as another tzinfo."""
    stamps = [
        msgspec.json.decode(f'"{text}"', type=datetime)
        for text in (
            "2026-11-26T10:00:00Z",
            "2026-11-26T10:00:00+00:00",
            "2026-11-26T10:00:00+01:00",
            "2026-11-26T10:00:00",
        )
    ]
    assert [stamp.tzinfo is UTC for stamp in stamps] == [True, True, False, False]
    assert [stamps[2].tzinfo, stamps[3].tzinfo] == [timezone(timedelta(hours=1)), None]


def test_the_sdks_microseconds_are_stored_as_milliseconds(start_gateway: GatewayFactory) -> None:
    """ClickHouse reads the first three fractional digits of a time and ignores the rest:
    what `to_row` truncates to, for a batch taken as columns too."""
    gw = start_gateway(event_max_age_days=100_000)  # back to 1900
    times = [
        "2025-06-01T10:00:00.125999Z",
        "1969-12-31T23:59:59.999999Z",  # before 1970: still the digits, not a rounding
        "1950-06-01T00:00:00.000500Z",
        "1900-01-01T00:00:00.000999Z",  # the earliest kept
    ]
    messages = [sdk_event(event_id=str(uuid.uuid4()), timestamp=at) for at in times]
    answer = httpx.post(
        f"{gw.url}/v1/events", json={"batch": messages}, headers={"Authorization": AUTH}
    )
    assert answer.json() == {"accepted": 4, "duplicates": 0, "rejected": []}
    assert metric(gw, 'headwater_native_batches_total{path="columns"}') == 1.0
    stored = gw.rows("SELECT toString(event_id), timestamp FROM {db}.events")
    # no skew: the arrival plays no part but for the window, here the column's range
    expected = one_by_one(columns_of(messages, None), context(None, window=WIDEST))
    assert sorted((i, t.replace(tzinfo=UTC)) for i, t in stored) == sorted(
        (row.event_id, row.timestamp) for row in expected if isinstance(row, EventRow)
    )
    assert sorted(t.isoformat() for _, t in stored) == [
        "1900-01-01T00:00:00",
        "1950-06-01T00:00:00",
        "1969-12-31T23:59:59.999000",
        "2025-06-01T10:00:00.125000",
    ]
