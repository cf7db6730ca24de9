"""PostHog's capture API: posthog-python sending unchanged, then every shape of request
posthog-js and posthog-node make, each read back from ClickHouse column by column."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from posthog import Posthog
from posthog.utils import system_context
from posthog.version import VERSION

from .conftest import PROJECT, WRITE_KEY, GatewayFactory, RunningGateway, Stored, stored

# Headwater's UUIDv5 namespace: an event without an id gets uuid5(namespace, its JSON).
# Changing it would make a retry that spans an upgrade slip past dedupe.
ID_NAMESPACE = uuid.UUID("6f1d1b6e-8d2c-4c55-9c43-1f0c6a1e2a10")
PATHS = [
    "/e", "/e/", "/i/v0/e", "/i/v0/e/", "/capture", "/capture/", "/track", "/track/",
    "/batch", "/batch/",
]  # fmt: skip
OK = {"status": 1, "accepted": 1, "duplicates": 0, "rejected": []}
MS = timedelta(milliseconds=1)
WHEN = datetime(2026, 11, 20, 9, 30, 0, 123000, tzinfo=UTC)
WHEN_ISO = "2026-11-20T09:30:00.123Z"
# What posthog-python adds to every event it sends.
PYTHON_LIB = {
    "$lib": "posthog-python",
    "$lib_version": VERSION,
    "$geoip_disable": True,
    "$is_server": True,
}


def only(gw: RunningGateway) -> Stored:
    """The one stored event."""
    (row,) = stored(gw).values()
    return row


def ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=0x0193A0B4_0000_7000_8000_000000000000 + i)) for i in range(n)]


def content_id(event: dict[str, Any]) -> str:
    """The id the gateway derives for an event that came without one."""
    return str(uuid.uuid5(ID_NAMESPACE, msgspec.json.encode(event).decode()))


def b64(document: Any) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def assert_skew_corrected(row: Stored, *, when: datetime, sent_after: datetime) -> None:
    """`timestamp = when + (received_at - sent_at)`, with sent_at unknown but after
    `sent_after`: the correction is at least 0 and at most `received_at - sent_after`
    (give or take the millisecond the column keeps)."""
    assert when - 2 * MS <= row.timestamp <= when + (row.received_at - sent_after) + MS


def test_posthog_python_sync_events_are_stored_with_every_field(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway()
    posthog = Posthog(WRITE_KEY, host=gw.url, sync_mode=True)
    order, profile, identify, alias, group = ids(5)
    before = datetime.now(UTC)
    try:
        assert order == posthog.capture(
            "order_completed",
            distinct_id="u_42",
            properties={"revenue_cents": 1299, "items": ["a", "b"]},
            timestamp=WHEN,
            uuid=order,
        )
        assert profile == posthog.set(
            distinct_id="u_42", properties={"plan": "pro"}, timestamp=WHEN, uuid=profile
        )
        # posthog-python 7 has no identify(): `$identify` is a capture with `$set`.
        assert identify == posthog.capture(
            "$identify",
            distinct_id="u_42",
            properties={"$set": {"email": "u42@example.com"}, "$anon_distinct_id": "anon_1"},
            timestamp=WHEN,
            uuid=identify,
        )
        assert alias == posthog.alias(
            previous_id="anon_1", distinct_id="u_42", timestamp=WHEN, uuid=alias
        )
        assert group == posthog.group_identify(
            "company", "acme", {"name": "Acme"}, timestamp=WHEN, uuid=group, distinct_id="u_42"
        )
    finally:
        posthog.shutdown()

    rows = stored(gw)
    assert sorted(rows) == sorted([order, profile, identify, alias, group])
    expected = {
        order: (
            "order_completed",
            "u_42",
            {"revenue_cents": 1299, "items": ["a", "b"], **system_context(), **PYTHON_LIB},
        ),
        profile: ("$set", "u_42", {**PYTHON_LIB, "$set": {"plan": "pro"}}),
        identify: (
            "$identify",
            "u_42",
            {
                "$set": {"email": "u42@example.com"},
                "$anon_distinct_id": "anon_1",
                **system_context(),
                **PYTHON_LIB,
            },
        ),
        # posthog-python sends the alias from the previous id, the new one in `alias`.
        alias: ("$create_alias", "anon_1", {"alias": "u_42", **PYTHON_LIB}),
        group: (
            "$groupidentify",
            "u_42",
            {
                "$group_type": "company",
                "$group_key": "acme",
                "$group_set": {"name": "Acme"},
                **PYTHON_LIB,
            },
        ),
    }
    for event_id, (event, distinct_id, properties) in expected.items():
        row = rows[event_id]
        assert (row.project, row.event, row.distinct_id, row.lib, row.source) == (
            PROJECT,
            event,
            distinct_id,
            f"posthog-python/{VERSION}",
            "posthog",
        )
        assert row.properties == properties
        assert before - MS <= row.received_at
        assert_skew_corrected(row, when=WHEN, sent_after=before)


def test_posthog_python_batches_gzipped_to_batch_endpoint(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    posthog = Posthog(WRITE_KEY, host=gw.url, gzip=True, flush_at=50, flush_interval=0.05)
    before = datetime.now(UTC)
    try:
        sent = [
            posthog.capture(f"step_{i}", distinct_id=f"u_{i % 2}", properties={"i": i})
            for i in range(7)
        ]
        posthog.flush()
    finally:
        posthog.shutdown()

    rows = stored(gw)
    assert sorted(rows) == sorted(str(s) for s in sent)
    for i, event_id in enumerate(sent):
        row = rows[str(event_id)]
        assert (row.project, row.event, row.distinct_id, row.lib, row.source) == (
            PROJECT,
            f"step_{i}",
            f"u_{i % 2}",
            f"posthog-python/{VERSION}",
            "posthog",
        )
        assert row.properties == {"i": i, **system_context(), **PYTHON_LIB}
        # The client stamped each event with its own clock after `before`.
        assert before - 2 * MS <= row.timestamp <= row.received_at + MS


def test_every_capture_path_with_and_without_slash(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    event_ids = ids(len(PATHS))
    with httpx.Client(base_url=gw.url) as http:
        for path, event_id in zip(PATHS, event_ids, strict=True):
            event = {
                "api_key": WRITE_KEY,
                "event": f"via {path}",
                "distinct_id": "u_1",
                "uuid": event_id,
                "timestamp": WHEN_ISO,
                "properties": {"path": path},
            }
            response = http.post(path, json=event)
            assert (response.status_code, response.json()) == (200, OK), path

    rows = stored(gw)
    assert sorted(rows) == sorted(event_ids)
    for path, event_id in zip(PATHS, event_ids, strict=True):
        assert rows[event_id] == Stored(
            project=PROJECT,
            event_id=event_id,
            event=f"via {path}",
            distinct_id="u_1",
            timestamp=WHEN,
            received_at=rows[event_id].received_at,
            properties={"path": path},
            lib="posthog",
            source="posthog",
        )


def test_single_event_array_and_envelope_bodies(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    single, first, second, third, fourth = ids(5)

    def event(event_id: str, name: str, **extra: Any) -> dict[str, Any]:
        return {"event": name, "distinct_id": "u_7", "uuid": event_id, **extra}

    with httpx.Client(base_url=gw.url) as http:
        one = http.post(
            "/capture/",
            json=event(single, "single", api_key=WRITE_KEY, timestamp=WHEN_ISO),
        )
        # posthog-js: an array, the token in each event's properties, `$lib` in there too.
        web = {"token": WRITE_KEY, "$lib": "web", "$lib_version": "1.2.3"}
        array = http.post(
            "/e/",
            json=[
                event(first, "first", timestamp=WHEN_ISO, properties=web),
                event(second, "second", timestamp=WHEN_ISO, properties={"token": WRITE_KEY}),
            ],
        )
        # posthog-node / posthog-python: `{api_key, batch, sent_at}`.
        envelope = http.post(
            "/batch/",
            json={
                "api_key": WRITE_KEY,
                "sent_at": WHEN_ISO,
                "batch": [
                    event(third, "third", timestamp=WHEN_ISO),
                    event(fourth, "fourth", timestamp="2026-11-20T09:29:58.123Z"),
                ],
            },
        )
    assert [(r.status_code, r.json()) for r in (one, array, envelope)] == [
        (200, OK),
        (200, {**OK, "accepted": 2}),
        (200, {**OK, "accepted": 2}),
    ]

    rows = stored(gw)
    assert {k: (r.event, r.distinct_id, r.properties, r.lib) for k, r in rows.items()} == {
        single: ("single", "u_7", {}, "posthog"),
        first: ("first", "u_7", {"$lib": "web", "$lib_version": "1.2.3"}, "web/1.2.3"),
        second: ("second", "u_7", {}, "web/1.2.3"),
        third: ("third", "u_7", {}, "posthog"),
        fourth: ("fourth", "u_7", {}, "posthog"),
    }
    assert {r.project for r in rows.values()} == {PROJECT}
    assert {r.source for r in rows.values()} == {"posthog"}
    # Without `sent_at` a timestamp is stored as sent; with it, moved by the device's skew:
    # sent at the moment it happened means it happened when the gateway received it.
    assert [rows[k].timestamp for k in (single, first, second)] == [WHEN] * 3
    assert rows[third].timestamp == rows[third].received_at
    assert rows[fourth].timestamp == rows[fourth].received_at - timedelta(seconds=2)


@pytest.mark.parametrize(
    ("where", "body"),
    [
        ("api_key", {"api_key": "other-key"}),
        ("token", {"token": "other-key"}),
        ("$token", {"$token": "other-key"}),
        ("properties.token", {"properties": {"token": "other-key", "kept": True}}),
    ],
)
def test_write_key_from_each_place(
    start_gateway: GatewayFactory, where: str, body: dict[str, Any]
) -> None:
    gw = start_gateway()
    (event_id,) = ids(1)
    event = {"event": "signed_up", "distinct_id": "u_1", "uuid": event_id, **body}
    response = httpx.post(f"{gw.url}/i/v0/e/", json=event)
    assert (response.status_code, response.json()) == (200, OK)
    row = only(gw)
    # The key chose the project ("other-key" is project "other") and is not kept.
    assert (row.project, row.event_id, row.event, row.distinct_id) == (
        "other",
        event_id,
        "signed_up",
        "u_1",
    )
    assert row.properties == ({"kept": True} if where == "properties.token" else {})


def test_envelope_token_names_the_project(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    (event_id,) = ids(1)
    body = {"token": "other-key", "batch": [{"event": "e", "distinct_id": "d", "uuid": event_id}]}
    response = httpx.post(f"{gw.url}/batch", json=body)
    assert (response.status_code, response.json()) == (200, OK)
    assert (only(gw).project, only(gw).event_id) == ("other", event_id)


@pytest.mark.parametrize(
    ("event", "distinct_id"),
    [
        ({"distinct_id": "top"}, "top"),
        ({"$distinct_id": "dollar"}, "dollar"),
        ({"properties": {"distinct_id": "in_properties"}}, "in_properties"),
        ({"distinct_id": 42}, "42"),
        ({"distinct_id": 0, "$distinct_id": "not this one"}, "0"),
        ({"distinct_id": "", "$distinct_id": "fallback"}, "fallback"),
        ({"distinct_id": "first", "properties": {"distinct_id": "second"}}, "first"),
    ],
)
def test_distinct_id_from_each_place(
    start_gateway: GatewayFactory, event: dict[str, Any], distinct_id: str
) -> None:
    gw = start_gateway()
    (event_id,) = ids(1)
    body = {"api_key": WRITE_KEY, "event": "e", "uuid": event_id, **event}
    response = httpx.post(f"{gw.url}/capture", json=body)
    assert (response.status_code, response.json()) == (200, OK)
    row = only(gw)
    assert (row.event_id, row.distinct_id, row.properties) == (event_id, distinct_id, {})


def test_compressed_and_encoded_bodies(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    names = ["gzip-js", "magic", "encoding", "form", "form-plus", "get", "unpadded", "spaces"]
    event_ids = dict(zip(names, ids(len(names)), strict=True))
    # A run of `~` base64-encodes to `fn5+`, of `?` to `Pz8/`: characters a form must keep.
    text = "~~~~~~??????"

    def body(name: str) -> dict[str, Any]:
        return {
            "api_key": WRITE_KEY,
            "event": name,
            "distinct_id": "u_1",
            "uuid": event_ids[name],
            "properties": {"text": text},
        }

    def zipped(name: str) -> bytes:
        return gzip.compress(json.dumps(body(name)).encode())

    sloppy = b64(body("form-plus"))
    unpadded = b64(body("unpadded")).rstrip("=")
    assert "+" in sloppy
    assert len(unpadded) % 4 != 0
    text_plain = {"Content-Type": "text/plain"}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with httpx.Client(base_url=gw.url) as http:
        responses = [
            # posthog-js: raw gzip, said in the query string.
            http.post(
                "/e/?compression=gzip-js&ver=1.200.0", content=zipped("gzip-js"), headers=text_plain
            ),
            # gzip noticed by its magic bytes alone.
            http.post("/batch/", content=zipped("magic"), headers=text_plain),
            http.post("/batch/", content=zipped("encoding"), headers={"Content-Encoding": "gzip"}),
            # The legacy form post: data=<base64>, properly form-encoded.
            http.post("/e/", data={"data": b64(body("form")), "compression": "base64"}),
            # ... and from a sloppy sender that left `+` raw (form decoding makes it a space).
            http.post("/e/", content=f"data={sloppy}".encode(), headers=form),
            http.get("/e/", params={"data": b64(body("get"))}),
            http.get("/e/", params={"data": unpadded}),
            # JSON with leading whitespace is JSON, not base64.
            http.post("/capture/", content=b"\n  " + json.dumps(body("spaces")).encode()),
        ]
    assert [(r.status_code, r.json()) for r in responses] == [(200, OK)] * len(names)

    rows = stored(gw)
    assert {row.event: event_id for event_id, row in rows.items()} == event_ids
    for row in rows.values():
        assert (row.project, row.distinct_id, row.properties, row.lib, row.source) == (
            PROJECT,
            "u_1",
            {"text": text},
            "posthog",
            "posthog",
        )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"event": "e", "distinct_id": "d"}, "missing write key"),
        ({"api_key": "", "event": "e", "distinct_id": "d"}, "missing write key"),
        ({"api_key": "nope", "event": "e", "distinct_id": "d"}, "unknown write key"),
        ({"batch": [{"event": "e", "distinct_id": "d"}]}, "missing write key"),
        ([{"event": "e", "distinct_id": "d", "properties": {"token": "no"}}], "unknown write key"),
    ],
)
def test_missing_or_unknown_key_is_401(
    start_gateway: GatewayFactory, body: Any, error: str
) -> None:
    gw = start_gateway()
    response = httpx.post(f"{gw.url}/batch/", json=body)
    assert (response.status_code, response.json()) == (401, {"error": error})
    assert stored(gw) == {}


@pytest.mark.parametrize(
    ("request_args", "status", "error"),
    [
        ({"json": "an event"}, 400, "body must be a JSON object or array of events"),
        (
            {"content": b'{"event": "\xff"}'},
            400,
            "body is not UTF-8: invalid start byte at byte 11",
        ),
        (  # a form's `data=` is the bytes it percent-encodes, UTF-8 or not
            {
                "content": b"data=%E2%82%AC",
                "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            },
            400,
            "body is not JSON: Input data was truncated",
        ),
        ({"params": {"data": "€"}}, 400, "body is not JSON: Input data was truncated"),
        (
            {"params": {"compression": "lz64"}, "content": b"x"},
            415,
            "compression 'lz64' is not supported (use gzip)",
        ),
        (
            {"content": b"{}", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
            415,
            "Content-Type 'multipart/form-data' is not supported: send application/json,"
            " text/plain or application/x-www-form-urlencoded",
        ),
        (
            {"content": b'{"event": "e",}'},
            400,
            "body is not JSON: JSON is malformed: trailing comma in object (byte 14)",
        ),
        (
            {"params": {"compression": "gzip-js"}, "content": b"{}"},
            400,
            "body is not valid gzip: Error -3 while decompressing data: incorrect header check",
        ),
    ],
)
def test_unreadable_bodies(
    start_gateway: GatewayFactory, request_args: dict[str, Any], status: int, error: str
) -> None:
    gw = start_gateway()
    response = httpx.post(f"{gw.url}/e/", **request_args)
    assert (response.status_code, response.json()) == (status, {"error": error})


def test_event_without_uuid_gets_a_content_id_so_a_retry_dedupes(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway()
    event = {"event": "clicked", "distinct_id": "u_1", "timestamp": WHEN_ISO, "properties": {}}
    event["properties"] = {"n": 1}
    other = {**event, "properties": {"n": 2}}
    body = {"api_key": WRITE_KEY, "batch": [event, other]}
    with httpx.Client(base_url=gw.url) as http:
        first = http.post("/batch/", json=body)
        retry = http.post("/batch/", json=body)
    assert (first.status_code, first.json()) == (200, {**OK, "accepted": 2})
    assert (retry.status_code, retry.json()) == (200, {**OK, "accepted": 0, "duplicates": 2})

    expected = {content_id(e): e for e in (event, other)}
    rows = stored(gw)
    assert sorted(rows) == sorted(expected)
    for event_id, sent in expected.items():
        assert uuid.UUID(event_id).version == 5
        assert (rows[event_id].event, rows[event_id].timestamp, rows[event_id].properties) == (
            "clicked",
            WHEN,
            sent["properties"],
        )


def test_timestamps_offsets_and_the_future(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    skewed, offset_sent, offset_alone, future, missing = ids(5)
    # received within the hour after this: over 47 h ahead, under 48 h
    far_future = (datetime.now(UTC) + timedelta(days=2)).isoformat()

    def event(name: str, event_id: str, **extra: Any) -> dict[str, Any]:
        return {"event": name, "distinct_id": "d", "uuid": event_id, **extra}

    before = datetime.now(UTC)
    with httpx.Client(base_url=gw.url) as http:
        envelope = http.post(
            "/batch/",
            json={
                "api_key": WRITE_KEY,
                # The device's clock is years slow: its times are moved by its skew.
                "sent_at": "2020-01-01T00:00:05.000Z",
                "batch": [
                    event("skewed", skewed, timestamp="2020-01-01T00:00:00.000Z"),
                    # posthog-js: `offset` ms before sending, never skew-corrected.
                    event("offset", offset_sent, offset=1500),
                ],
            },
        )
        loose = http.post(
            "/e/",
            json=[
                event("offset", offset_alone, offset=1500, token=WRITE_KEY),
                # Two days ahead with no sent_at to explain it: refused, not clamped.
                event("future", future, timestamp=far_future, token=WRITE_KEY),
                event("missing", missing, token=WRITE_KEY),
            ],
        )
    assert (envelope.status_code, envelope.json()) == (200, {**OK, "accepted": 2})
    refused = {
        "index": 1,
        "reason": f"timestamp '{far_future}' is more than 47 hours after its arrival, over the"
        " window of 23 hours (HEADWATER_EVENT_MAX_FUTURE_HOURS)",
        "event_id": future,
    }
    assert (loose.status_code, loose.json()) == (
        200,
        {**OK, "accepted": 2, "rejected": [refused]},
    )

    rows = stored(gw)
    assert rows[skewed].timestamp == rows[skewed].received_at - timedelta(seconds=5)
    assert rows[offset_sent].timestamp == rows[offset_sent].received_at - timedelta(seconds=1.5)
    # Without sent_at the offset counts back from the moment the body was read: after
    # `before`, not after `received_at`.
    alone = rows[offset_alone]
    assert before - MS - timedelta(seconds=1.5) <= alone.timestamp
    assert alone.timestamp <= alone.received_at - timedelta(seconds=1.5)
    assert future not in rows
    assert rows[missing].timestamp == rows[missing].received_at


def test_set_merges_and_a_batch_keeps_its_valid_events(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    merged, replaced, nameless, late = ids(4)
    batch: list[Any] = [
        {
            "event": "$identify",
            "distinct_id": "d",
            "uuid": merged,
            "$set": {"plan": "pro"},
            "$set_once": {"first": "x"},
            "properties": {"$set": {"email": "e@x"}},
        },
        # A `$set` property that is not an object gives way to the event's own.
        {
            "event": "$set",
            "distinct_id": "d",
            "uuid": replaced,
            "$set": {"plan": "team"},
            "properties": {"$set": "junk"},
        },
        {"distinct_id": "d", "uuid": nameless},
        "not an event",
        {"event": "late", "distinct_id": "d", "uuid": late, "timestamp": "yesterday"},
        {"event": "bad id", "distinct_id": "d", "uuid": "not-a-uuid"},
    ]
    response = httpx.post(f"{gw.url}/batch/", json={"api_key": WRITE_KEY, "batch": batch})
    reasons = [
        (2, "event is required and must be a non-empty string", nameless),
        (3, "an event must be a JSON object", None),
        (4, "timestamp 'yesterday' is not an ISO 8601 date-time", late),
        (5, "event_id 'not-a-uuid' is not a UUID", "not-a-uuid"),
    ]
    rejected = [
        {"index": i, "reason": reason, **({"event_id": e} if e else {})} for i, reason, e in reasons
    ]
    assert (response.status_code, response.json()) == (
        200,
        {"status": 1, "accepted": 2, "duplicates": 0, "rejected": rejected},
    )
    rows = stored(gw)
    assert {k: (r.event, r.properties) for k, r in rows.items()} == {
        merged: (
            "$identify",
            {"$set": {"email": "e@x", "plan": "pro"}, "$set_once": {"first": "x"}},
        ),
        replaced: ("$set", {"$set": {"plan": "team"}}),
    }
    # The refused ones are kept, with their reason and what was sent, as dead letters.
    errors = gw.rows(
        "SELECT project, source, event_index, reason, payload FROM {db}.ingest_errors"
        " ORDER BY event_index"
    )
    assert errors == [
        (PROJECT, "posthog", i, reason, json.dumps(batch[i], separators=(",", ":")))
        for i, reason, _ in reasons
    ]


def test_posthog_js_clock_from_the_query_corrects_skew(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    # The device stamped "09:00:00" and sent at "09:00:05": the event happened 5 s before receipt.
    body = {
        "api_key": "test-key",
        "event": "e",
        "distinct_id": "u",
        "timestamp": "2026-11-20T09:00:00Z",
    }
    sent = int(datetime(2026, 11, 20, 9, 0, 5, tzinfo=UTC).timestamp() * 1000)
    answer = httpx.post(f"{gw.url}/e/?_={sent}", json=body)
    assert answer.status_code == 200
    ((timestamp, received),) = gw.rows("SELECT timestamp, received_at FROM {db}.events")
    assert received - timestamp == timedelta(seconds=5)
