"""The event-time window: an event whose clock-skew corrected time lies more than
`HEADWATER_EVENT_MAX_AGE_DAYS` before its arrival, more than
`HEADWATER_EVENT_MAX_FUTURE_HOURS` after it, or outside what the column holds
([1900-01-01, 2300-01-01)), is refused by index with a reason naming the bound, and kept
in `ingest_errors`, never clamped; `headwater replay-errors` stores it once the window is
widened. The same for every endpoint family. (The columns path against the checks one by
one, for random windows and times: `test_columns.py`.)"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from posthog import Posthog
from segment.analytics import Client as SegmentClient

from headwater.gateway import ConfigError, Settings
from headwater.gateway._app import INGESTION
from headwater.gateway._events import Context, EventWindow, Incoming, now, to_row

from .conftest import PROJECT, WRITE_KEY, GatewayFactory, RunningGateway
from .test_replay import replay
from .test_validation import batch_body, compact, event, post

# The four times of issue 15, each sent as an SDK writes it.
ODD = ["1900-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1999-12-31T23:59:59.999Z",
       "2150-01-01T00:00:00Z"]  # fmt: skip
DAY, HOUR = timedelta(days=1), timedelta(hours=1)
WIDE = {"HEADWATER_EVENT_MAX_AGE_DAYS": "100000", "HEADWATER_EVENT_MAX_FUTURE_HOURS": "2000000"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def iso(when: datetime) -> str:
    """As our SDK writes a time: milliseconds, `Z`."""
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shown(when: datetime) -> str:
    """A time of whole milliseconds as a reason quotes it: no fraction when it has none."""
    return iso(when) if when.microsecond else when.isoformat().replace("+00:00", "Z")


def distance(delta: timedelta, unit: timedelta) -> str:
    """A distance of over a unit as a reason says it: whole units, "more than" when a part
    of one is left over (`test_a_reason_says_how_far_out_and_which_setting_widens_it`)."""
    whole, part = divmod(delta, unit)
    return f"more than {whole:,}" if part else f"{whole:,}"


def outside(shown: str, when: datetime, received_at: datetime) -> str:
    """The reason the default window gives for `when`, shown as `shown`."""
    if when < received_at:
        return (
            f"timestamp {shown} is {distance(received_at - when, DAY)} days before its arrival,"
            " over the window of 3650 days (HEADWATER_EVENT_MAX_AGE_DAYS)"
        )
    return (
        f"timestamp {shown} is {distance(when - received_at, HOUR)} hours after its arrival,"
        " over the window of 23 hours (HEADWATER_EVENT_MAX_FUTURE_HOURS)"
    )


def stored_times(gw: RunningGateway) -> dict[str, tuple[datetime, datetime]]:
    """event_id → (timestamp, received_at), in UTC."""
    rows = gw.rows("SELECT toString(event_id), timestamp, received_at FROM {db}.events FINAL")
    return {r[0]: (r[1].replace(tzinfo=UTC), r[2].replace(tzinfo=UTC)) for r in rows}


def errors(gw: RunningGateway) -> list[tuple[Any, ...]]:
    """(event_index, reason, payload, project, source, received_at in UTC, replayed)."""
    rows = gw.rows(
        "SELECT event_index, reason, payload, project, source, received_at,"
        " replayed_at IS NOT NULL FROM {db}.ingest_errors ORDER BY received_at, event_index"
    )
    return [(*r[:5], r[5].replace(tzinfo=UTC), r[6]) for r in rows]


def arrival(gw: RunningGateway) -> datetime:
    """The one arrival time of the requests' refused events."""
    ((received_at,),) = gw.rows("SELECT DISTINCT received_at FROM {db}.ingest_errors")
    assert isinstance(received_at, datetime)
    return received_at.replace(tzinfo=UTC)


def normal_events() -> list[dict[str, Any]]:
    """Events well within the default window: now, 22 h ahead, 3000 days back."""
    current = now()
    offsets = (timedelta(0), timedelta(hours=22), -timedelta(days=3000))
    return [event(timestamp=iso(current + offset)) for offset in offsets]


# -- the reasons ------------------------------------------------------------------------------


def _reason(text: str, received_at: str, **window: float) -> str:
    """What the checks say of an event stamped `text` that arrived at `received_at`."""
    settings = {"max_age_days": 3650, "max_future_hours": 23, **window}
    ctx = Context(
        project="p",
        source="native",
        lib="",
        received_at=at(received_at),
        sent_at=None,
        max_event_bytes=1000,
        window=EventWindow(**settings),  # type: ignore[arg-type]
    )
    found = to_row(Incoming(event="e", distinct_id="d", properties={}, timestamp=at(text)), ctx)
    assert isinstance(found, str)
    return found


def test_a_reason_says_how_far_out_and_which_setting_widens_it() -> None:
    """Whole days or hours, exactly: "more than" when a part of one is left over."""
    arrival_ = "2025-12-01T00:00:00Z"
    assert [_reason(text, arrival_) for text in ODD] == [
        "timestamp '1900-01-01T00:00:00Z' is 45,990 days before its arrival,"
        " over the window of 3650 days (HEADWATER_EVENT_MAX_AGE_DAYS)",
        "timestamp '1970-01-01T00:00:00Z' is 20,423 days before its arrival,"
        " over the window of 3650 days (HEADWATER_EVENT_MAX_AGE_DAYS)",
        "timestamp '1999-12-31T23:59:59.999Z' is more than 9,466 days before its arrival,"
        " over the window of 3650 days (HEADWATER_EVENT_MAX_AGE_DAYS)",
        "timestamp '2150-01-01T00:00:00Z' is 1,087,704 hours after its arrival,"
        " over the window of 23 hours (HEADWATER_EVENT_MAX_FUTURE_HOURS)",
    ]
    assert _reason("2025-12-02T00:00:00.001Z", arrival_, max_future_hours=23.5) == (
        "timestamp '2025-12-02T00:00:00.001Z' is more than 24 hours after its arrival,"
        " over the window of 23.5 hours (HEADWATER_EVENT_MAX_FUTURE_HOURS)"
    )
    assert _reason("2025-12-01T00:40:00Z", arrival_, max_future_hours=0.5) == (
        "timestamp '2025-12-01T00:40:00Z' is less than 1 hour after its arrival,"
        " over the window of 0.5 hours (HEADWATER_EVENT_MAX_FUTURE_HOURS)"
    )
    assert _reason("2025-11-29T00:00:00Z", arrival_, max_age_days=1) == (
        "timestamp '2025-11-29T00:00:00Z' is 2 days before its arrival,"
        " over the window of 1 day (HEADWATER_EVENT_MAX_AGE_DAYS)"
    )
    assert _reason("2025-12-01T01:00:00.5Z", arrival_, max_future_hours=1) == (
        "timestamp '2025-12-01T01:00:00.500Z' is more than 1 hour after its arrival,"
        " over the window of 1 hour (HEADWATER_EVENT_MAX_FUTURE_HOURS)"
    )
    # the column's range, whatever the settings
    wide = {"max_age_days": 10**9, "max_future_hours": float("inf")}
    assert [
        _reason(t, arrival_, **wide) for t in ("1899-12-31T23:59:59.999Z", "2300-01-01T00:00:00Z")
    ] == [
        "timestamp '1899-12-31T23:59:59.999Z' is before 1900-01-01,"
        " the earliest time the events table holds",
        "timestamp '2300-01-01T00:00:00Z' is from 2300-01-01 on,"
        " past the latest time the events table holds",
    ]


# -- the native endpoint ----------------------------------------------------------------------


def test_times_outside_the_default_window_are_refused_by_index_and_kept_raw(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway()
    normal, odd = normal_events(), [event(timestamp=text) for text in ODD]
    messages = [normal[0], odd[0], odd[1], normal[1], odd[2], normal[2], odd[3]]
    items = [compact(m) for m in messages]

    answer = post(gw, batch_body(items))

    received_at = arrival(gw)
    refused = [
        (index, outside(f"'{text}'", at(text), received_at), items[index].decode())
        for index, text in zip([1, 2, 4, 6], ODD, strict=True)
    ]
    assert (answer.status_code, answer.json()) == (
        200,
        {
            "accepted": 3,
            "duplicates": 0,
            "rejected": [
                {"index": i, "reason": reason, "event_id": messages[i]["event_id"]}
                for i, reason, _ in refused
            ],
        },
    )
    assert stored_times(gw) == {
        m["event_id"]: (at(m["timestamp"]), received_at) for m in normal
    }  # at their own times: nothing clamped
    assert errors(gw) == [
        (i, reason, payload, PROJECT, "native", received_at, False)
        for i, reason, payload in refused
    ]


def test_a_widened_window_stores_the_same_times_as_they_were_sent(
    start_gateway: GatewayFactory,
) -> None:
    """HEADWATER_EVENT_MAX_AGE_DAYS=100000 and HEADWATER_EVENT_MAX_FUTURE_HOURS=2000000:
    from 1900 (the column's first day) to 2254, every odd time is stored as it was sent."""
    settings = Settings.from_env({"HEADWATER_CLICKHOUSE_URL": "chdb:///unused", **WIDE})
    gw = start_gateway(
        event_max_age_days=settings.event_max_age_days,
        event_max_future_hours=settings.event_max_future_hours,
    )
    normal, odd = normal_events(), [event(timestamp=text) for text in ODD]
    messages = [normal[0], odd[0], odd[1], normal[1], odd[2], normal[2], odd[3]]

    answer = post(gw, batch_body([compact(m) for m in messages]))

    assert answer.json() == {"accepted": 7, "duplicates": 0, "rejected": []}
    ((received_at,),) = gw.rows("SELECT DISTINCT received_at FROM {db}.events")
    assert stored_times(gw) == {
        m["event_id"]: (at(m["timestamp"]), received_at.replace(tzinfo=UTC)) for m in messages
    }
    assert gw.rows("SELECT count() FROM {db}.ingest_errors") == [(0,)]


def test_the_column_bounds_the_widest_window(start_gateway: GatewayFactory) -> None:
    """Whatever the settings say, the column's range bounds the window: its first and last
    milliseconds are stored, one millisecond beyond either is refused, naming the bound."""
    gw = start_gateway(event_max_age_days=10**9, event_max_future_hours=float("inf"))
    first, last = (
        event(timestamp="1900-01-01T00:00:00.000Z"),
        event(timestamp="2299-12-31T23:59:59.999Z"),
    )
    before = event(timestamp="1899-12-31T23:59:59.999Z")
    after = event(timestamp="2300-01-01T00:00:00.000Z")
    messages = [before, first, last, after]

    answer = post(gw, batch_body([compact(m) for m in messages]))

    assert answer.json() == {
        "accepted": 2,
        "duplicates": 0,
        "rejected": [
            {
                "index": 0,
                "reason": "timestamp '1899-12-31T23:59:59.999Z' is before 1900-01-01,"
                " the earliest time the events table holds",
                "event_id": before["event_id"],
            },
            {
                "index": 3,
                "reason": "timestamp '2300-01-01T00:00:00Z' is from 2300-01-01 on,"
                " past the latest time the events table holds",
                "event_id": after["event_id"],
            },
        ],
    }
    received_at = arrival(gw)
    assert stored_times(gw) == {
        first["event_id"]: (datetime(1900, 1, 1, tzinfo=UTC), received_at),
        last["event_id"]: (datetime(2299, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC), received_at),
    }


def test_a_sender_clock_skew_is_corrected_before_the_window_judges(
    start_gateway: GatewayFactory,
) -> None:
    """A device whose clock reads 1970 stamps its events 1970 and its `sent_at` too: the
    correction brings them to their arrival, and they are stored; a time the correction
    takes out of the window is refused, naming the corrected time."""
    gw = start_gateway()
    broken = event(timestamp="1970-01-01T00:00:00.000Z")  # 5 s before it was sent
    ahead = event(timestamp="1970-01-03T00:00:05.000Z")  # two days after it was sent
    body = batch_body([compact(broken), compact(ahead)], sent_at="1970-01-01T00:00:05.000Z")

    answer = post(gw, body).json()

    received_at = arrival(gw)
    corrected = received_at + timedelta(days=2)
    assert answer == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [
            {
                "index": 1,
                "reason": outside(
                    "'1970-01-03T00:00:05Z', corrected by the sender's clock"
                    f" to '{shown(corrected)}',",
                    corrected,
                    received_at,
                ),
                "event_id": ahead["event_id"],
            }
        ],
    }
    assert stored_times(gw) == {
        broken["event_id"]: (received_at - timedelta(seconds=5), received_at)
    }


# -- headwater replay-errors ------------------------------------------------------------------


def test_replay_stores_an_old_event_once_the_window_is_widened(
    start_gateway: GatewayFactory,
) -> None:
    """The window is judged around the event's first arrival, by the replaying gateway's
    settings: the same reason until it is widened, then stored at its own time."""
    gw = start_gateway()
    old, normal = event(timestamp="1970-01-01T00:00:00Z"), normal_events()[0]
    assert post(gw, batch_body([compact(normal), compact(old)])).json()["accepted"] == 1
    received_at = arrival(gw)
    reason = outside("'1970-01-01T00:00:00Z'", at("1970-01-01T00:00:00Z"), received_at)

    still = replay(gw)
    assert (still.read, still.stored, still.still_invalid, still.reasons) == (1, 0, 1, {reason: 1})

    fixed = replay(gw, event_max_age_days=100_000)
    assert (fixed.read, fixed.stored, fixed.duplicates, fixed.still_invalid) == (1, 1, 0, 0)
    assert stored_times(gw) == {
        normal["event_id"]: (at(normal["timestamp"]), received_at),
        old["event_id"]: (at("1970-01-01T00:00:00Z"), received_at),
    }
    assert errors(gw) == [(1, reason, compact(old).decode(), PROJECT, "native", received_at, True)]
    assert replay(gw, event_max_age_days=100_000).read == 0


# -- the PostHog and Segment families ----------------------------------------------------------


def ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=0x0193A0B4_0000_7000_8000_0000000000F0 + i)) for i in range(n)]


def _corrected_reason(reason: str, sent: str, before: datetime, received_at: datetime) -> None:
    """`reason` is the default window's for `sent` moved by a sender's skew that was at
    least 0 and at most `received_at - before` (its sent_at was stamped after `before`),
    give or take the millisecond the gateway's clock keeps."""
    found = re.fullmatch(
        rf"timestamp '{re.escape(sent)}'(?:, corrected by the sender's clock to '(.+?)',)? is .*",
        reason,
    )
    assert found is not None, reason
    corrected = at(found[1]) if found[1] else at(sent)
    assert at(sent) - timedelta(milliseconds=1) <= corrected
    assert corrected <= at(sent) + (received_at - before) + timedelta(milliseconds=1)
    shown = (
        f"'{sent}', corrected by the sender's clock to '{found[1]}'," if found[1] else f"'{sent}'"
    )
    assert reason == outside(shown, corrected, received_at)


def test_posthog_events_outside_the_window_are_refused_and_kept(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway()
    normal, *odd = ids(5)
    batch = [
        {"event": "e", "distinct_id": "d", "uuid": event_id, "timestamp": timestamp}
        for event_id, timestamp in zip([normal, *odd], [iso(now()), *ODD], strict=True)
    ]
    answer = httpx.post(f"{gw.url}/batch/", json={"api_key": WRITE_KEY, "batch": batch})

    received_at = arrival(gw)
    refused = [(i, outside(f"'{ODD[i - 1]}'", at(ODD[i - 1]), received_at)) for i in (1, 2, 3, 4)]
    assert answer.json() == {
        "status": 1,
        "accepted": 1,
        "duplicates": 0,
        "rejected": [{"index": i, "reason": r, "event_id": batch[i]["uuid"]} for i, r in refused],
    }
    assert list(stored_times(gw)) == [normal]
    assert errors(gw) == [
        (i, reason, msgspec.json.encode(batch[i]).decode(), PROJECT, "posthog", received_at, False)
        for i, reason in refused
    ]


def test_posthog_python_with_a_body_sent_at_is_held_to_the_window(
    start_gateway: GatewayFactory,
) -> None:
    """posthog-python sends each event's `timestamp` and the body's `sent_at`."""
    gw = start_gateway()
    client = Posthog(WRITE_KEY, host=gw.url, sync_mode=True)
    stored_id, refused_id = ids(2)
    before = datetime.now(UTC)
    try:
        client.capture("fresh", distinct_id="u", uuid=stored_id)
        client.capture(
            "old", distinct_id="u", uuid=refused_id, timestamp=datetime(1970, 1, 1, tzinfo=UTC)
        )
    finally:
        client.shutdown()

    assert list(stored_times(gw)) == [stored_id]
    ((index, reason, payload, project, source, received_at, replayed),) = errors(gw)
    assert (index, project, source, replayed) == (0, PROJECT, "posthog", False)
    assert json.loads(payload)["uuid"] == refused_id
    _corrected_reason(reason, "1970-01-01T00:00:00+00:00", before, received_at)


def test_segment_messages_outside_the_window_are_refused_and_kept(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway()
    normal, *odd = ids(5)
    batch = [
        {"type": "track", "event": "e", "userId": "u", "messageId": event_id, "timestamp": ts}
        for event_id, ts in zip([normal, *odd], [iso(now()), *ODD], strict=True)
    ]
    answer = httpx.post(f"{gw.url}/v1/batch", json={"batch": batch}, auth=(WRITE_KEY, ""))

    received_at = arrival(gw)
    refused = [(i, outside(f"'{ODD[i - 1]}'", at(ODD[i - 1]), received_at)) for i in (1, 2, 3, 4)]
    assert answer.json() == {
        "success": True,
        "accepted": 1,
        "duplicates": 0,
        "rejected": [
            {"index": i, "reason": r, "event_id": batch[i]["messageId"]} for i, r in refused
        ],
    }
    assert list(stored_times(gw)) == [normal]
    assert errors(gw) == [
        (i, reason, compact(batch[i]).decode(), PROJECT, "segment", received_at, False)
        for i, reason in refused
    ]


def test_analytics_python_with_sent_at_is_held_to_the_window(
    start_gateway: GatewayFactory,
) -> None:
    """analytics-python sends each message's `timestamp` and the body's `sentAt`."""
    gw = start_gateway()
    client = SegmentClient(write_key=WRITE_KEY, host=gw.url, sync_mode=True)
    stored_id, refused_id = ids(2)
    before = datetime.now(UTC)
    client.track("u", "fresh", message_id=stored_id)
    client.track("u", "future", timestamp=datetime(2150, 1, 1, tzinfo=UTC), message_id=refused_id)

    assert list(stored_times(gw)) == [stored_id]
    ((index, reason, payload, project, source, received_at, replayed),) = errors(gw)
    assert (index, project, source, replayed) == (0, PROJECT, "segment", False)
    assert json.loads(payload)["messageId"] == refused_id
    _corrected_reason(reason, "2150-01-01T00:00:00.000+00:00", before, received_at)


# -- the settings ----------------------------------------------------------------------------


def test_the_default_window_is_ten_years_back_and_23_hours_ahead() -> None:
    settings = Settings(clickhouse_url="chdb:///unused")
    assert (settings.event_max_age_days, settings.event_max_future_hours) == (3650, 23)


def test_the_window_is_read_from_the_environment_and_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "headwater.toml"
    config.write_text("event_max_age_days = 36500\nevent_max_future_hours = 0.5\n")
    base = {"HEADWATER_CLICKHOUSE_URL": "chdb:///unused", "HEADWATER_CONFIG": str(config)}
    from_file = Settings.from_env(base)
    from_both = Settings.from_env({**base, **WIDE})  # the environment wins
    assert (from_file.event_max_age_days, from_file.event_max_future_hours) == (36500, 0.5)
    assert (from_both.event_max_age_days, from_both.event_max_future_hours) == (100_000, 2e6)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"HEADWATER_EVENT_MAX_AGE_DAYS": "0"}, "HEADWATER_EVENT_MAX_AGE_DAYS must be positive"),
        ({"HEADWATER_EVENT_MAX_AGE_DAYS": "-30"}, "HEADWATER_EVENT_MAX_AGE_DAYS must be positive"),
        (
            {"HEADWATER_EVENT_MAX_AGE_DAYS": "1.5"},
            "HEADWATER_EVENT_MAX_AGE_DAYS: Expected `int`, got `str`",
        ),
        (
            {"HEADWATER_EVENT_MAX_FUTURE_HOURS": "0"},
            "HEADWATER_EVENT_MAX_FUTURE_HOURS must be positive",
        ),
        (
            {"HEADWATER_EVENT_MAX_FUTURE_HOURS": "-1"},
            "HEADWATER_EVENT_MAX_FUTURE_HOURS must be positive",
        ),
        (
            {"HEADWATER_EVENT_MAX_FUTURE_HOURS": "nan"},
            "HEADWATER_EVENT_MAX_FUTURE_HOURS must be positive",
        ),
    ],
)
def test_a_window_that_is_not_positive_stops_start_up(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"HEADWATER_CLICKHOUSE_URL": "chdb:///unused", **environ})
    assert str(raised.value) == f"bad setting: {message}"


def test_the_openapi_document_states_the_window_on_each_ingestion_route(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway()
    paths = httpx.get(f"{gw.url}/schema/openapi.json").json()["paths"]
    described = {
        (path, method): paths[path][method]["description"]
        for path, method in [("/v1/events", "post"), ("/batch", "post"), ("/v1/batch", "post")]
    }
    assert described == dict.fromkeys(described, INGESTION)
    assert "HEADWATER_EVENT_MAX_AGE_DAYS" in INGESTION
    assert "HEADWATER_EVENT_MAX_FUTURE_HOURS" in INGESTION
