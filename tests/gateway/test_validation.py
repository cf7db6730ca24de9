"""Validation and limits: every bad input gets its status and a message that names the
problem, and nothing wrong reaches the `events` table; refused events of a batch are
listed by index and kept, raw, in `ingest_errors`."""

from __future__ import annotations

import gzip
import json
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest

from headwater.gateway import Settings, _native
from headwater.gateway._events import Context, EventWindow, Incoming, now, to_row
from headwater.sdk import _wire

from .conftest import PROJECT, WRITE_KEY, GatewayFactory, RunningGateway, metric

AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}
# Derived ids are UUIDv5 in this namespace: changing it would break dedupe across a deploy.
ID_NAMESPACE = uuid.UUID("6f1d1b6e-8d2c-4c55-9c43-1f0c6a1e2a10")
PAST = "2024-05-01T12:00:00.250Z"
WINDOW = EventWindow(max_age_days=3650, max_future_hours=23)  # the default settings'


def event(**fields: Any) -> dict[str, Any]:
    """A valid native message, with a fresh id; `fields` override or add keys."""
    return {
        "type": "track",
        "event_id": str(uuid.uuid4()),
        "event": "clicked",
        "distinct_id": "u_1",
        "timestamp": PAST,
        "properties": {"n": 1},
        **fields,
    }


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def batch_body(items: list[bytes], **envelope: Any) -> bytes:
    """A native body whose messages are exactly `items` (so their raw text is known)."""
    head = compact({"lib": "tests/1", **envelope})[:-1]
    return head + b',"batch":[' + b",".join(items) + b"]}"


def post(
    gw: RunningGateway, body: bytes, *, path: str = "/v1/events", **headers: str
) -> httpx.Response:
    return httpx.post(gw.url + path, content=body, headers={**AUTH, **headers}, timeout=30)


def stored_ids(gw: RunningGateway) -> list[str]:
    return [r[0] for r in gw.rows("SELECT toString(event_id) AS id FROM {db}.events ORDER BY id")]


def dead_letters(gw: RunningGateway) -> list[tuple[Any, ...]]:
    return gw.rows(
        "SELECT event_index, reason, payload, project, source FROM {db}.ingest_errors"
        " ORDER BY event_index"
    )


# -- refused events of a batch ------------------------------------------------------------


def _refused() -> list[tuple[Any, str]]:
    """(message, the reason the gateway gives) for each way an event can be wrong."""
    no_distinct = event()
    del no_distinct["distinct_id"]
    no_event = event()
    del no_event["event"]
    no_id = event(event="")  # refused before an id is derived: the rejection names none
    del no_id["event_id"]
    return [
        (event(event=""), "event is required and must be a non-empty string"),
        (event(event="e" * 201), "event is 201 characters, over 200"),
        (no_id, "event is required and must be a non-empty string"),
        (event(distinct_id="u" * 201), "distinct_id is 201 characters, over 200"),
        (event(distinct_id="u\x00v"), "distinct_id contains a NUL character"),
        (event(event="a\x00b"), "event contains a NUL character"),
        (event(event_id="not-a-uuid"), "event_id 'not-a-uuid' is not a UUID"),
        # a reason quotes at most 80 characters of what was sent
        (event(event_id="x" * 100), "event_id '" + "x" * 78 + "… is not a UUID"),
        # `uuid.UUID()` takes these; they are not well-formed UUIDs.
        (
            event(event_id=" 2345678123456781234567812345678"),
            "event_id ' 2345678123456781234567812345678' is not a UUID",
        ),
        (
            event(event_id="1_345678123456781234567812345678"),
            "event_id '1_345678123456781234567812345678' is not a UUID",
        ),
        (event(event_id=7), "Expected `str`, got `int` - at `$.event_id`"),
        (no_distinct, "Object missing required field `distinct_id`"),
        (no_event, "Object missing required field `event`"),
        (event(type="bogus"), "Invalid value 'bogus' - at `$.type`"),
        (event(timestamp="yesterday"), "Invalid RFC3339 encoded datetime - at `$.timestamp`"),
        (event(timestamp=1714564800), "Expected `datetime | null`, got `int` - at `$.timestamp`"),
        (
            event(timestamp="1899-12-31T23:59:59Z"),
            "timestamp '1899-12-31T23:59:59Z' is before 1900-01-01,"
            " the earliest time the events table holds",
        ),
        (event(properties=[1]), "Expected `object`, got `array` - at `$.properties`"),
        (42, "Expected `object`, got `int`"),
        (event(properties={"blob": "x" * 1000}), "event is {size} bytes, over the limit of 1000"),
    ]


def test_invalid_events_are_listed_by_index_and_kept_raw(start_gateway: GatewayFactory) -> None:
    gw = start_gateway(max_event_bytes=1000)
    refused = _refused()
    good = [event(), event(event="e" * 200, distinct_id="u" * 200), event(distinct_id="ü\tx")]
    # good events at 0, 2, 4; the refused ones around and after them
    messages = [good[0], refused[0][0], good[1], refused[1][0], good[2]]
    messages += [m for m, _ in refused[2:]]
    items = [compact(m) for m in messages]
    expected_refused = [
        (index, reason.replace("{size}", str(len(items[index]))), items[index].decode())
        for index, reason in zip(
            [1, 3, *range(5, len(items))], [r for _, r in refused], strict=True
        )
    ]

    response = post(gw, batch_body(items))

    assert response.status_code == 200
    assert response.json() == {
        "accepted": 3,
        "duplicates": 0,
        "rejected": [
            # the id is named whenever the sender gave one as a string, even for a message
            # that did not decode
            {"index": index, "reason": reason, **_given_id(messages[index])}
            for index, reason, _ in expected_refused
        ],
    }
    assert stored_ids(gw) == sorted(m["event_id"] for m in good)
    assert dead_letters(gw) == [
        (index, reason, payload, PROJECT, "native") for index, reason, payload in expected_refused
    ]
    # kept with the time the request was received, as its stored events are
    times = "SELECT DISTINCT received_at FROM {db}.%s"
    assert gw.rows(times % "ingest_errors") == gw.rows(times % "events")


def _given_id(message: Any) -> dict[str, str]:
    given = message.get("event_id") if isinstance(message, dict) else None
    return {"event_id": given} if isinstance(given, str) else {}


def test_a_batch_that_decodes_whole_keeps_each_refused_event_as_sent(
    start_gateway: GatewayFactory,
) -> None:
    """Every message has the wire format's shape, so the body decodes in one piece; the
    checks refuse some, and each is still kept as its sender wrote it (the body's own
    bytes, spacing and key order included), a too-large one is measured, and an id is
    derived from the text of its event alone."""
    gw = start_gateway(max_event_bytes=1000)
    no_id = event(properties={"run": str(uuid.uuid4())})
    del no_id["event_id"]
    refused = [
        (event(event=""), "event is required and must be a non-empty string"),
        (event(distinct_id="u\x00v"), "distinct_id contains a NUL character"),
        (event(event_id="not-a-uuid"), "event_id 'not-a-uuid' is not a UUID"),
        (event(properties={"blob": "x" * 1000}), "event is {size} bytes, over the limit of 1000"),
    ]
    good = event()
    items = [json.dumps(m, indent=1).encode() for m in [good, no_id, *(m for m, _ in refused)]]
    response = post(gw, batch_body(items))
    assert response.json() == {
        "accepted": 2,
        "duplicates": 0,
        "rejected": [
            {
                "index": index,
                "reason": reason.replace("{size}", str(len(items[index]))),
                "event_id": m["event_id"],
            }
            for index, (m, reason) in enumerate(refused, start=2)
        ],
    }
    derived = str(uuid.uuid5(ID_NAMESPACE, items[1].decode()))
    assert stored_ids(gw) == sorted([good["event_id"], derived])
    assert [(index, payload) for index, _, payload, _, _ in dead_letters(gw)] == [
        (index, items[index].decode()) for index in range(2, 6)
    ]


def test_refused_events_are_answered_by_the_deadline_while_clickhouse_is_slow(
    start_gateway: GatewayFactory,
) -> None:
    """ClickHouse made slow (a view on `ingest_errors` that sleeps 2 s per block): the
    answer comes at the deadline; the dead letter is written when the insert ends."""
    gw = start_gateway(insert_deadline_seconds=0.5)
    db = gw.database
    gw.clickhouse.command(f"CREATE TABLE {db}.slow_sink (x UInt8) ENGINE = Null")
    slow = f"SELECT sleep(2) AS x FROM {db}.ingest_errors"  # noqa: S608 - the test's own database
    gw.clickhouse.command(f"CREATE MATERIALIZED VIEW {db}.slow TO {db}.slow_sink AS {slow}")
    bad = event(event="")
    response = post(gw, batch_body([compact(bad)]))
    written_before_the_answer = metric(gw, "headwater_dead_letters_total")
    gw.clickhouse.command(f"DROP TABLE {db}.slow")  # waits for the slow insert to end
    assert response.json() == {
        "accepted": 0,
        "duplicates": 0,
        "rejected": [
            {
                "index": 0,
                "reason": "event is required and must be a non-empty string",
                "event_id": bad["event_id"],
            }
        ],
    }
    assert written_before_the_answer == 0.0
    assert [(index, reason) for index, reason, *_ in dead_letters(gw)] == [
        (0, "event is required and must be a non-empty string")
    ]
    while metric(gw, "headwater_dead_letters_total") == 0.0:  # counted once it ends
        time.sleep(0.01)
    assert metric(gw, "headwater_dead_letters_total") == 1.0


def test_refused_events_beyond_the_queue_are_counted_while_clickhouse_is_slow(
    start_gateway: GatewayFactory,
) -> None:
    """While dead letters wait for a slow ClickHouse (2 s per block), at most
    `commit_queue_rows` refused events wait with them: the next is counted as failed at
    once. Those that waited are written once it frees."""
    gw = start_gateway(insert_deadline_seconds=0.3, commit_queue_rows=2)
    db = gw.database
    gw.clickhouse.command(f"CREATE TABLE {db}.slow_sink (x UInt8) ENGINE = Null")
    slow = f"SELECT sleep(2) AS x FROM {db}.ingest_errors"  # noqa: S608 - the test's own database
    gw.clickhouse.command(f"CREATE MATERIALIZED VIEW {db}.slow TO {db}.slow_sink AS {slow}")
    bad = [event(event="") for _ in range(3)]
    answers = [post(gw, batch_body([compact(one)])) for one in bad]  # 0.3 s each at most
    failed_at_once = metric(gw, "headwater_dead_letter_failures_total")
    gw.clickhouse.command(f"DROP TABLE {db}.slow")  # waits for the slow insert to end
    while metric(gw, "headwater_dead_letters_total") < 2.0:
        time.sleep(0.01)
    assert [answer.json()["rejected"][0]["event_id"] for answer in answers] == [
        one["event_id"] for one in bad
    ]
    assert failed_at_once == 1.0
    assert sorted(payload for _, _, payload, *_ in dead_letters(gw)) == sorted(
        compact(one).decode() for one in bad[:2]
    )


def test_a_dead_letter_that_cannot_be_written_never_fails_the_request(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway()
    gw.clickhouse.command(f"DETACH TABLE {gw.database}.ingest_errors")
    try:
        good, bad = event(), event(event="")
        response = post(gw, batch_body([compact(good), compact(bad)]))
    finally:
        gw.clickhouse.command(f"ATTACH TABLE {gw.database}.ingest_errors")
    assert (response.status_code, response.json()["accepted"]) == (200, 1)
    assert stored_ids(gw) == [good["event_id"]]
    assert dead_letters(gw) == []
    assert metric(gw, "headwater_dead_letter_failures_total") == 1.0
    assert metric(gw, "headwater_dead_letters_total") == 0.0


def test_a_valid_batch_with_nothing_refused_writes_no_dead_letter(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway()
    messages = [event(), event(type="identify", event="$identify"), event(type="alias")]
    response = post(gw, batch_body([compact(m) for m in messages]))
    assert response.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    assert stored_ids(gw) == sorted(m["event_id"] for m in messages)
    assert dead_letters(gw) == []


def test_a_msgpack_event_is_kept_as_json_when_refused(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    good, bad = event(), event(distinct_id="")
    body = msgspec.msgpack.encode({"lib": "tests/1", "batch": [good, bad]})
    response = post(gw, body, **{"Content-Type": "application/msgpack"})
    assert response.json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [
            {
                "index": 1,
                "reason": "distinct_id is required and must be a non-empty string",
                "event_id": bad["event_id"],
            }
        ],
    }
    assert stored_ids(gw) == [good["event_id"]]
    assert dead_letters(gw) == [
        (
            1,
            "distinct_id is required and must be a non-empty string",
            compact(bad).decode(),
            PROJECT,
            "native",
        )
    ]


def test_properties_that_json_cannot_hold_are_refused(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    bad = event(properties={"x": msgspec.msgpack.Ext(1, b"\x00")})
    body = msgspec.msgpack.encode({"batch": [bad]})
    response = post(gw, body, **{"Content-Type": "application/msgpack"})
    assert response.json()["rejected"] == [
        {
            "index": 0,
            "reason": "properties cannot be stored as JSON:"
            " Encoding objects of type msgspec.msgpack.Ext is unsupported",
            "event_id": bad["event_id"],
        }
    ]
    assert stored_ids(gw) == []


def test_properties_are_stored_as_the_sender_wrote_them(start_gateway: GatewayFactory) -> None:
    """Native JSON properties are kept as sent (valid JSON, the sender's spelling), whether
    the batch is read whole or event by event (when one of its events is refused)."""
    gw = start_gateway()
    written = [
        b'{ "b": [1, 2.50], "a": "\\u00e9" }',
        b'{"huge":1e999,"big":123456789012345678901234567890}',
        b"{}",
    ]
    ids = [[str(uuid.uuid4()) for _ in written] for _ in range(2)]

    def items(batch: int) -> list[bytes]:
        head = b'{"type":"track","event":"e","distinct_id":"u","event_id":"%s","properties":'
        return [
            head % i.encode() + text + b"}" for i, text in zip(ids[batch], written, strict=True)
        ]

    whole = post(gw, batch_body(items(0)))
    one_by_one = post(gw, batch_body([*items(1), compact(event(event=""))]))

    assert whole.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    assert one_by_one.json()["accepted"] == 3
    stored = dict(gw.rows("SELECT toString(event_id), properties FROM {db}.events"))
    assert stored == {
        i: text.decode() for batch in ids for i, text in zip(batch, written, strict=True)
    }


def test_text_that_is_not_utf8_is_refused_naming_the_byte(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    good, broken = event(), event(properties={"a": "@"})
    bad = compact(broken).replace(b"@", b"\xff")
    at = bad.index(b"\xff")
    named = event(event="@")
    packed = msgspec.msgpack.encode({"batch": [named]}).replace(b"\xa1@", b"\xa1\xff")
    kept = packed[packed.index(b"\x86") :]  # the message: a map of six fields

    response = post(gw, batch_body([compact(good), bad]))
    as_msgpack = post(gw, packed, **{"Content-Type": "application/msgpack"})

    reason = f"event is not UTF-8: invalid start byte at byte {at}"
    assert response.json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [{"index": 1, "reason": reason, "event_id": broken["event_id"]}],
    }
    assert as_msgpack.json()["rejected"] == [
        {
            "index": 0,
            "reason": "event is not UTF-8: invalid start byte",
            "event_id": named["event_id"],
        }
    ]
    assert stored_ids(gw) == [good["event_id"]]
    assert sorted((reason, payload) for _, reason, payload, *_ in dead_letters(gw)) == [
        ("event is not UTF-8: invalid start byte", kept.decode("utf-8", "replace")),
        (reason, bad.decode("utf-8", "replace")),
    ]


# -- timestamps -----------------------------------------------------------------------------


def _stored_times(gw: RunningGateway) -> dict[str, tuple[datetime, datetime]]:
    """event_id → (timestamp, received_at), both in UTC."""
    rows = gw.rows("SELECT toString(event_id), timestamp, received_at FROM {db}.events")
    return {r[0]: (r[1].replace(tzinfo=UTC), r[2].replace(tzinfo=UTC)) for r in rows}


def _ms(when: datetime) -> datetime:
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def test_timestamps_are_parsed_into_utc_and_the_far_future_is_refused_not_clamped(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway()
    soon = datetime.now(UTC) + timedelta(hours=22)
    # 23.5 h ahead, give or take the second `replace` moves it and the time to arrive:
    # over 23 h, under 24 h
    future = (datetime.now(UTC) + timedelta(hours=23, minutes=30)).replace(microsecond=123_456)
    cases = {
        "utc": event(timestamp="2024-05-01T12:00:00.250Z"),
        "offset": event(timestamp="2024-05-01T14:00:00.250+02:00"),
        "naive": event(timestamp="2024-05-01T12:00:00.250"),
        "micro": event(timestamp="2024-05-01T12:00:00.250999Z"),
        "soon": event(timestamp=soon.isoformat()),
        "future": event(timestamp=future.isoformat()),
        "far": event(timestamp="9999-12-31T23:59:59Z"),
        "none": event(timestamp=None),
    }
    missing = event()
    del missing["timestamp"]
    cases["missing"] = missing
    response = post(gw, batch_body([compact(m) for m in cases.values()]))
    shown = future.isoformat().replace("+00:00", "Z")
    assert response.json() == {
        "accepted": 7,
        "duplicates": 0,
        "rejected": [
            {
                "index": 5,
                "reason": f"timestamp '{shown}' is more than 23 hours after its arrival,"
                " over the window of 23 hours (HEADWATER_EVENT_MAX_FUTURE_HOURS)",
                "event_id": cases["future"]["event_id"],
            },
            {
                "index": 6,
                "reason": "timestamp '9999-12-31T23:59:59Z' is from 2300-01-01 on,"
                " past the latest time the events table holds",
                "event_id": cases["far"]["event_id"],
            },
        ],
    }

    times = _stored_times(gw)
    at = {name: times[m["event_id"]] for name, m in cases.items() if m["event_id"] in times}
    noon = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
    assert {name: at[name][0] for name in ("utc", "offset", "naive", "micro")} == dict.fromkeys(
        ("utc", "offset", "naive", "micro"), noon
    )
    assert at["soon"][0] == _ms(soon)
    for name in ("none", "missing"):  # the gateway's clock stands in
        assert at[name][0] == at[name][1], name
    assert sorted(at) == ["micro", "missing", "naive", "none", "offset", "soon", "utc"]


def test_sent_at_corrects_the_device_clock(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    # The device believed it was 12:00:10 when it sent an event it stamped 12:00:00.250:
    # the event happened 9.75 s before the gateway received it, whatever the device's clock.
    first, second = event(), event(timestamp="2024-05-01T11:00:00Z")
    body = batch_body([compact(first), compact(second)], sent_at="2024-05-01T12:00:10Z")
    assert post(gw, body).json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    times = _stored_times(gw)
    timestamp, received_at = times[first["event_id"]]
    assert timestamp == received_at - timedelta(seconds=9.75)
    timestamp, received_at = times[second["event_id"]]
    assert timestamp == received_at - timedelta(hours=1, seconds=10)


def test_a_skew_that_leaves_the_calendar_is_refused(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    ahead = event(timestamp="9999-12-31T23:59:59Z")  # + 8000 years of skew: the future
    behind = event(timestamp="0001-01-01T00:00:00Z")  # - 8000 years of skew
    answers = [
        post(gw, batch_body([compact(ahead)], sent_at="0001-01-01T00:00:00Z")).json(),
        post(gw, batch_body([compact(behind)], sent_at="9999-12-31T23:59:59Z")).json(),
    ]
    assert answers == [
        {
            "accepted": 0,
            "duplicates": 0,
            "rejected": [
                {
                    "index": 0,
                    "reason": "timestamp '9999-12-31T23:59:59Z', corrected by the sender's clock"
                    " out of the calendar, is from 2300-01-01 on, past the latest time the"
                    " events table holds",
                    "event_id": ahead["event_id"],
                }
            ],
        },
        {
            "accepted": 0,
            "duplicates": 0,
            "rejected": [
                {
                    "index": 0,
                    "reason": "timestamp '0001-01-01T00:00:00Z', corrected by the sender's clock"
                    " out of the calendar, is before 1900-01-01, the earliest time the events"
                    " table holds",
                    "event_id": behind["event_id"],
                }
            ],
        },
    ]
    assert stored_ids(gw) == []


def test_an_unreadable_sent_at_means_no_correction(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    message = event()
    body = batch_body([compact(message)], sent_at="half past ten")
    assert post(gw, body).json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    timestamp, _ = _stored_times(gw)[message["event_id"]]
    assert timestamp == datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)


def test_events_of_many_months_in_one_batch_are_stored(start_gateway: GatewayFactory) -> None:
    # ClickHouse's partition limit per insert would make this a 503 (2000-2009: a window
    # wider than the default ten years)
    gw = start_gateway(event_max_age_days=20_000)
    messages = [
        event(timestamp=f"{2000 + i // 12}-{i % 12 + 1:02d}-15T12:00:00Z") for i in range(120)
    ]
    response = post(gw, batch_body([compact(m) for m in messages]))
    assert (response.status_code, response.json()) == (
        200,
        {"accepted": 120, "duplicates": 0, "rejected": []},
    )


# -- ids derived from the content ---------------------------------------------------------


def test_an_event_without_an_id_gets_one_from_its_content(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    message = event(properties={"run": str(uuid.uuid4())})  # unique to this run
    del message["event_id"]
    item = compact(message)
    derived = str(uuid.uuid5(ID_NAMESPACE, item.decode()))

    first = post(gw, batch_body([item], sent_at="2024-05-01T12:00:01Z"))
    # The SDK's retry of the same batch carries a new sent_at: the id is the same.
    retry = post(gw, batch_body([item], sent_at="2024-05-01T12:00:09Z"))

    assert first.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert retry.json() == {"accepted": 0, "duplicates": 1, "rejected": []}
    assert stored_ids(gw) == [derived]


def test_an_id_is_stored_in_one_spelling(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    given = uuid.uuid4()
    upper = post(gw, batch_body([compact(event(event_id=str(given).upper()))]))
    bare = post(gw, batch_body([compact(event(event_id=given.hex))]))
    assert upper.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert bare.json() == {"accepted": 0, "duplicates": 1, "rejected": []}
    assert stored_ids(gw) == [str(given)]


# -- requests refused as a whole ----------------------------------------------------------

BOMB = gzip.compress(b" " * 5_000_000, compresslevel=9)  # ~5 KB that inflate to 5 MB
GOOD = batch_body([compact(event())])


def _truncated_gzip() -> bytes:
    return gzip.compress(GOOD)[:-8]


REFUSED_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    # (name, request, status, error)
    (
        "malformed JSON names the byte",
        {"body": b'{"batch": [}'},
        400,
        "body is not a json batch: JSON is malformed: invalid character (byte 11)",
    ),
    (
        "truncated JSON",
        {"body": b'{"batch": ['},
        400,
        "body is not a json batch: Input data was truncated",
    ),
    (
        "not UTF-8",
        {"body": b"\xff\xfe"},
        400,
        "body is not a json batch: JSON is malformed: invalid character (byte 0)",
    ),
    ("empty body", {"body": b""}, 400, "body is not a json batch: Input data was truncated"),
    (
        "an array",
        {"body": b"[]"},
        400,
        "body is not a json batch: Expected `object`, got `array`",
    ),
    (
        "no batch",
        {"body": b'{"events": []}'},
        400,
        "body is not a json batch: Object missing required field `batch`",
    ),
    (
        "batch not an array",
        {"body": b'{"batch": {}}'},
        400,
        "body is not a json batch: Expected `array`, got `object` - at `$.batch`",
    ),
    (
        "lib not a string",
        {"body": b'{"batch": [], "lib": 3}'},
        400,
        "body is not a json batch: Expected `str`, got `int` - at `$.lib`",
    ),
    (
        "nested too deeply",
        {"body": b'{"batch": [{"properties": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}]}"},
        400,
        "body is not a json batch: it is nested too deeply",
    ),
    (
        "a string of the envelope not UTF-8",
        {"body": b'{"lib": "\xff", "batch": []}'},
        400,
        "body is not a json batch: it is not UTF-8: invalid start byte at byte 9",
    ),
    (
        "malformed msgpack",
        {"body": b"\xc1", "headers": {"Content-Type": "application/msgpack"}},
        400,
        "body is not a msgpack batch: MessagePack data is malformed: invalid opcode '\\xc1'"
        " (byte 0)",
    ),
    (
        "JSON sent as msgpack",
        {"body": GOOD, "headers": {"Content-Type": "application/msgpack"}},
        400,
        "body is not a msgpack batch: Expected `object`, got `int`",
    ),
    (
        "wrong content type",
        {"body": GOOD, "headers": {"Content-Type": "application/xml"}},
        415,
        "Content-Type 'application/xml' is not supported: send application/json or"
        " application/msgpack",
    ),
    (
        "form content type",
        {"body": GOOD, "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        415,
        "Content-Type 'application/x-www-form-urlencoded' is not supported: send"
        " application/json or application/msgpack",
    ),
    (
        "unknown content encoding",
        {"body": GOOD, "headers": {"Content-Encoding": "br"}},
        415,
        "Content-Encoding 'br' is not supported (use gzip)",
    ),
    (
        "not gzip",
        {"body": GOOD, "headers": {"Content-Encoding": "gzip"}},
        400,
        "body is not valid gzip: Error -3 while decompressing data: incorrect header check",
    ),
    (
        "truncated gzip",
        {"body": _truncated_gzip(), "headers": {"Content-Encoding": "gzip"}},
        400,
        "body is not valid gzip: it ends before its gzip stream does",
    ),
    (
        "over the body limit",
        {"body": GOOD + b" " * 100_000},
        413,
        "body is over the limit of 100000 bytes",
    ),
    (
        "gzip bomb",
        {"body": BOMB, "headers": {"Content-Encoding": "gzip"}},
        413,
        "body decompresses to more than the limit of 100000 bytes",
    ),
    ("no write key", {"body": GOOD, "headers": {"Authorization": ""}}, 401, "missing write key"),
    (
        "not a bearer token",
        {"body": GOOD, "headers": {"Authorization": f"Basic {WRITE_KEY}"}},
        401,
        "missing write key",
    ),
    (
        "unknown write key",
        {"body": GOOD, "headers": {"Authorization": "Bearer nope"}},
        401,
        "unknown write key",
    ),
]


@pytest.mark.parametrize(
    ("request_", "status", "error"),
    [pytest.param(r, s, e, id=name) for name, r, s, e in REFUSED_REQUESTS],
)
def test_a_bad_request_is_refused_with_its_status_and_reason(
    start_gateway: GatewayFactory, request_: dict[str, Any], status: int, error: str
) -> None:
    gw = start_gateway(max_batch_body_bytes=100_000)
    response = post(gw, request_["body"], **request_.get("headers", {}))
    assert (response.status_code, response.json()) == (status, {"error": error})
    assert stored_ids(gw) == []


def test_a_gzip_body_within_the_limits_is_read(start_gateway: GatewayFactory) -> None:
    gw = start_gateway(max_batch_body_bytes=100_000)
    first, second = event(), event()
    # two gzip members, as a client that compresses chunk by chunk sends them
    body = batch_body([compact(first), compact(second)])
    half = len(body) // 2
    compressed = gzip.compress(body[:half]) + gzip.compress(body[half:])
    response = post(gw, compressed, **{"Content-Encoding": "gzip"})
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert stored_ids(gw) == sorted([first["event_id"], second["event_id"]])


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        pytest.param("/batch/", {}, id="posthog"),
        pytest.param("/v1/batch", {"Authorization": "Basic dGVzdC1rZXk6"}, id="segment"),
    ],
)
def test_a_gzip_bomb_is_refused_on_every_endpoint_family(
    start_gateway: GatewayFactory, path: str, headers: dict[str, str]
) -> None:
    gw = start_gateway(max_batch_body_bytes=100_000)
    response = post(gw, BOMB, path=path, **{"Content-Encoding": "gzip", **headers})
    assert (response.status_code, response.json()) == (
        413,
        {"error": "body decompresses to more than the limit of 100000 bytes"},
    )


def test_a_single_segment_message_has_a_smaller_limit_than_a_batch(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway(max_single_body_bytes=1_000, max_batch_body_bytes=10_000)
    basic = {"Authorization": "Basic dGVzdC1rZXk6"}  # "test-key:"
    message = {
        "type": "track",
        "event": "clicked",
        "userId": "u_1",
        "messageId": str(uuid.uuid4()),
        "timestamp": PAST,
        "properties": {"pad": "x" * 1_000},
    }
    single = post(gw, compact(message), path="/v1/track", **basic)
    batch = post(gw, compact({"batch": [message]}), path="/v1/batch", **basic)
    assert (single.status_code, single.json()) == (
        413,
        {"error": "body is over the limit of 1000 bytes"},
    )
    assert (batch.status_code, batch.json()["accepted"]) == (200, 1)
    assert stored_ids(gw) == [message["messageId"]]


def test_the_documented_limits_are_the_defaults() -> None:
    settings = Settings(clickhouse_url="chdb:///unused")
    assert (
        settings.max_batch_body_bytes,
        settings.max_single_body_bytes,
        settings.max_event_bytes,
    ) == (20_000_000, 2_000_000, 1_000_000)


def _raw_exchange(url: str, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send `request` bytes as they are and read one HTTP/1.1 response."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        while len(body) < int(headers["content-length"]):
            body += sock.recv(65536)
    return int(lines[0].split()[1]), json.loads(body)


def test_a_body_that_stalls_is_a_408(start_gateway: GatewayFactory) -> None:
    gw = start_gateway(body_timeout_seconds=0.5)
    request = (
        b"POST /v1/events HTTP/1.1\r\nHost: gateway\r\n"
        b"Authorization: Bearer test-key\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n" + GOOD[:20]  # and then nothing more
    )
    status, body = _raw_exchange(gw.url, request)
    assert (status, body) == (408, {"error": "the body did not arrive within 0.5s"})
    assert stored_ids(gw) == []


def test_a_body_that_cannot_be_parsed_is_kept_whole(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    response = post(gw, b'{"batch": [}')
    assert response.status_code == 400
    assert dead_letters(gw) == [
        (
            -1,
            "body is not a json batch: JSON is malformed: invalid character (byte 11)",
            '{"batch": [}',
            PROJECT,
            "native",
        )
    ]


def test_the_gateway_reads_every_field_and_kind_of_the_sdks_messages() -> None:
    """The native JSON path decodes into the gateway's own mirror of the SDK's message
    types (properties kept as text): a field or a kind added to the SDK must be added there."""

    def shape(kinds: tuple[type[msgspec.Struct], ...]) -> list[tuple[object, list[str]]]:
        return [
            (kind.__struct_config__.tag, [f.name for f in msgspec.structs.fields(kind)])
            for kind in kinds
        ]

    sdk_kinds = (_wire.Track, _wire.Identify, _wire.Alias)
    ours = (_native._Track, _native._Identify, _native._Alias)
    assert shape(ours) == shape(sdk_kinds)
    assert [f.name for f in msgspec.structs.fields(_native._Batch)] == [
        f.name for f in msgspec.structs.fields(_wire.Batch)
    ]


def test_a_name_of_a_str_subclass_still_gets_every_check() -> None:
    class Name(str):
        pass

    ctx = Context(
        project="p",
        source="native",
        lib="",
        received_at=now(),
        sent_at=None,
        max_event_bytes=9,
        window=WINDOW,
    )
    listed = Incoming(event=Name("e"), distinct_id="d", properties=[1])
    big = Incoming(event=Name("e"), distinct_id="d", properties={}, raw=b"x" * 10)
    assert to_row(listed, ctx) == "properties must be a JSON object"
    assert to_row(big, ctx) == "event is 10 bytes, over the limit of 9"


def test_a_context_derives_its_clock_skew_and_window_whatever_was_passed() -> None:
    at = now()
    ctx = Context(
        project="p",
        source="native",
        lib="",
        received_at=at,
        sent_at=at - timedelta(hours=1),
        max_event_bytes=1,
        window=WINDOW,
        skew=timedelta(days=5),
        earliest=at,
        latest=at,
    )
    assert (ctx.skew, ctx.earliest, ctx.latest) == (
        timedelta(hours=1),
        at - timedelta(days=3650),
        at + timedelta(hours=23),
    )
    assert msgspec.structs.replace(ctx, sent_at=None).skew == timedelta(0)
