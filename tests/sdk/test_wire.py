"""Encoding, ids, retry timing rules and event names: pure functions, property-tested."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from headwater.sdk import ClientOptions, Event, event_name
from headwater.sdk._event import snake_case
from headwater.sdk._retry import backoff_delay, parse_retry_after
from headwater.sdk.testing import RecordingClient

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
properties = st.dictionaries(st.text(max_size=20), json_values, max_size=8)
names = st.text(min_size=1, max_size=200).filter(lambda s: "\x00" not in s)


@given(properties=properties, name=names, distinct_id=names)
def test_json_properties_round_trip_exactly(
    properties: dict[str, Any], name: str, distinct_id: str
) -> None:
    recorder = RecordingClient()
    event_id = recorder.capture(name, distinct_id=distinct_id, properties=properties)
    (message,) = recorder.messages
    assert (message.event_id, message.event, message.distinct_id) == (event_id, name, distinct_id)
    assert message.properties == properties
    recorder.shutdown()


@given(properties=properties)
def test_msgpack_round_trips_too(properties: dict[str, Any]) -> None:
    recorder = RecordingClient(options=ClientOptions(encoding="msgpack"))
    recorder.capture("e", distinct_id="u", properties=properties)
    assert recorder.messages[0].properties == properties
    recorder.shutdown()


@given(
    junk=st.dictionaries(
        st.text(max_size=5), st.builds(object) | st.just(math.nan), min_size=1, max_size=3
    )
)
def test_unencodable_properties_never_raise_without_debug(junk: dict[str, Any]) -> None:
    recorder = RecordingClient(debug=False)
    assert recorder.capture("e", distinct_id="u", properties=junk) is None
    assert recorder.stats().dropped_by_reason == {"invalid": 1}
    recorder.shutdown()


@given(attempt=st.integers(min_value=0, max_value=64))
def test_backoff_stays_within_the_capped_exponential(attempt: int) -> None:
    delay = backoff_delay(attempt, base=0.5, cap=30.0)
    assert 0.0 <= delay <= min(30.0, 0.5 * 2**attempt)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(" 0 ", now=now) == 0.0
    assert parse_retry_after("Wed, 25 Nov 2026 10:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 25 Nov 2026 09:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None, now=now) is None
    assert parse_retry_after("-3", now=now) is None


@given(value=st.text(max_size=40))
def test_retry_after_never_raises(value: str) -> None:
    parsed = parse_retry_after(value)
    assert parsed is None or parsed >= 0


def test_event_names_default_to_snake_case() -> None:
    class SignedUp(Event):
        method: str

    class HTTPRequestSent(Event):
        path: str

    class Renamed(Event, name="custom.name"):
        pass

    assert [event_name(SignedUp), event_name(HTTPRequestSent), event_name(Renamed)] == [
        "signed_up",
        "http_request_sent",
        "custom.name",
    ]
    assert snake_case("OrderV2Completed") == "order_v2_completed"


def test_typed_events_are_keyword_only_structs() -> None:
    class Viewed(Event):
        path: str
        ms: int = 0

    assert msgspec.json.encode(Viewed(path="/")) == b'{"path":"/","ms":0}'
    assert msgspec.structs.fields(Viewed)[0].name == "path"
