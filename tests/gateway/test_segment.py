"""Segment's tracking API: analytics-python sending unchanged, then each endpoint and each
way of giving the write key, read back from ClickHouse column by column."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from rudderstack.analytics.client import Client as RudderClient
from rudderstack.analytics.version import VERSION as RUDDER_VERSION
from segment.analytics import Client
from segment.analytics.version import VERSION

from .conftest import PROJECT, WRITE_KEY, GatewayFactory, stored

# Headwater's UUIDv5 namespace: a message without a messageId gets uuid5(namespace, its JSON).
ID_NAMESPACE = uuid.UUID("6f1d1b6e-8d2c-4c55-9c43-1f0c6a1e2a10")
MS = timedelta(milliseconds=1)
WHEN = datetime(2026, 11, 20, 9, 30, 0, 123000, tzinfo=UTC)
WHEN_ISO = "2026-11-20T09:30:00.123Z"
LIBRARY = {"library": {"name": "analytics-python", "version": VERSION}}


def ok(accepted: int = 1, duplicates: int = 0) -> dict[str, Any]:
    return {"success": True, "accepted": accepted, "duplicates": duplicates, "rejected": []}


def ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=0x0193A0B4_0000_7000_8000_0000000000A0 + i)) for i in range(n)]


def test_analytics_python_calls_are_stored_with_every_field(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway()
    segment = Client(write_key=WRITE_KEY, host=gw.url, sync_mode=True)
    track, identify, page, screen, alias, group = ids(6)
    before = datetime.now(UTC)
    sent = [
        segment.track(
            "u_42",
            "Order Completed",
            {"revenue_cents": 1299},
            context={"ip": "203.0.113.7"},
            timestamp=WHEN,
            message_id=track,
        ),
        segment.identify(
            "u_42", {"plan": "pro", "email": "u42@example.com"}, timestamp=WHEN, message_id=identify
        ),
        segment.page(
            "u_42", "Docs", "Install", {"path": "/docs/install"}, timestamp=WHEN, message_id=page
        ),
        segment.screen(anonymous_id="anon_9", name="Home", timestamp=WHEN, message_id=screen),
        segment.alias("anon_9", "u_42", timestamp=WHEN, message_id=alias),
        segment.group("u_42", "acme", {"name": "Acme"}, timestamp=WHEN, message_id=group),
    ]
    assert [queued for queued, _ in sent] == [True] * 6

    rows = stored(gw)
    expected = {
        track: (
            "Order Completed",
            "u_42",
            {"revenue_cents": 1299, "$context": {"ip": "203.0.113.7", **LIBRARY}},
        ),
        identify: (
            "$identify",
            "u_42",
            {"$set": {"plan": "pro", "email": "u42@example.com"}, "$context": LIBRARY},
        ),
        page: (
            "$pageview",
            "u_42",
            {"path": "/docs/install", "name": "Install", "category": "Docs", "$context": LIBRARY},
        ),
        screen: ("$screen", "anon_9", {"name": "Home", "$context": LIBRARY}),
        alias: ("$create_alias", "u_42", {"alias": "anon_9", "$context": LIBRARY}),
        group: (
            "$groupidentify",
            "u_42",
            {"$group_key": "acme", "$group_set": {"name": "Acme"}, "$context": LIBRARY},
        ),
    }
    assert sorted(rows) == sorted(expected)
    for event_id, (event, distinct_id, properties) in expected.items():
        row = rows[event_id]
        assert (row.project, row.event, row.distinct_id, row.lib, row.source) == (
            PROJECT,
            event,
            distinct_id,
            f"analytics-python/{VERSION}",
            "segment",
        )
        assert row.properties == properties
        # timestamp = WHEN + (received_at - sentAt), with sentAt stamped after `before`.
        assert before - MS <= row.received_at
        assert WHEN - 2 * MS <= row.timestamp <= WHEN + (row.received_at - before) + MS


def test_analytics_python_batches_gzipped(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    segment = Client(write_key=WRITE_KEY, host=gw.url, gzip=True, upload_interval=0.05)
    before = datetime.now(UTC)
    try:
        sent = [
            segment.track(anonymous_id=f"anon_{i % 3}", event=f"step {i}", properties={"i": i})
            for i in range(7)
        ]
        segment.flush()
    finally:
        segment.shutdown()
    assert [queued for queued, _ in sent] == [True] * 7

    rows = stored(gw)
    assert sorted(rows) == sorted(msg["messageId"] for _, msg in sent)
    for i, (_, msg) in enumerate(sent):
        row = rows[msg["messageId"]]
        assert (row.project, row.event, row.distinct_id, row.lib, row.source) == (
            PROJECT,
            f"step {i}",
            f"anon_{i % 3}",
            f"analytics-python/{VERSION}",
            "segment",
        )
        assert row.properties == {"i": i, "$context": LIBRARY}
        assert before - 2 * MS <= row.timestamp <= row.received_at + MS


def test_rudder_sdk_python_calls_are_stored(start_gateway: GatewayFactory) -> None:
    """rudder-sdk-python, Segment's protocol with its own ways: gzipped, Basic auth, to
    /v1/batch, naming itself analytics-python, an identify's traits in `context.traits`."""
    gw = start_gateway()
    rudder = RudderClient(write_key=WRITE_KEY, host=gw.url, sync_mode=True, gzip=True)
    tracked, identified = ids(2)
    before = datetime.now(UTC)
    results = [
        rudder.track("u1", "Clicked", {"a": 1}, timestamp=WHEN, message_id=tracked),
        rudder.identify("u1", {"plan": "pro"}, timestamp=WHEN, message_id=identified),
    ]
    assert [ok for ok, _ in results] == [True, True]

    rows = stored(gw)
    library = {"library": {"name": "analytics-python", "version": RUDDER_VERSION}}
    context = {k: v for k, v in rows[tracked].properties["$context"].items() if k != "library"}
    assert {k: (r.event, r.distinct_id) for k, r in rows.items()} == {
        tracked: ("Clicked", "u1"),
        identified: ("$identify", "u1"),
    }
    assert rows[tracked].properties == {"a": 1, "$context": {**context, **library}}
    assert rows[identified].properties["$set"] == {"plan": "pro"}
    assert rows[identified].properties["$context"]["traits"] == {"plan": "pro"}
    for row in rows.values():
        assert (row.project, row.lib, row.source) == (
            PROJECT,
            f"analytics-python/{RUDDER_VERSION}",
            "segment",
        )
        # corrected by the clock skew, received_at - sentAt: at most the time since `before`
        assert WHEN - MS <= row.timestamp <= WHEN + (row.received_at - before) + MS


def test_identify_traits_win_over_context_traits(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    (message_id,) = ids(1)
    body = {
        "userId": "u_1",
        "messageId": message_id,
        "traits": {"plan": "team"},
        "context": {"traits": {"plan": "pro", "email": "a@b"}},
    }
    response = httpx.post(f"{gw.url}/v1/identify", json=body, auth=(WRITE_KEY, ""))
    assert (response.status_code, response.json()) == (200, ok())
    (row,) = stored(gw).values()
    assert row.properties == {
        "$set": {"plan": "team", "email": "a@b"},
        "$context": {"traits": {"plan": "pro", "email": "a@b"}},
    }


@pytest.mark.parametrize(
    ("kind", "message", "event", "properties"),
    [
        (
            "track",
            {"event": "Signed Up", "properties": {"plan": "pro"}},
            "Signed Up",
            {"plan": "pro"},
        ),
        ("identify", {"traits": {"email": "a@b"}}, "$identify", {"$set": {"email": "a@b"}}),
        ("identify", {}, "$identify", {"$set": {}}),
        (
            "page",
            {"name": "Pricing", "properties": {"url": "/p"}},
            "$pageview",
            {"url": "/p", "name": "Pricing"},
        ),
        (
            "screen",
            {"name": "Settings", "category": "App"},
            "$screen",
            {"name": "Settings", "category": "App"},
        ),
        ("alias", {"previousId": "anon_1"}, "$create_alias", {"alias": "anon_1"}),
        (
            "group",
            {"groupId": "g_1", "traits": {"size": 5}},
            "$groupidentify",
            {"$group_key": "g_1", "$group_set": {"size": 5}},
        ),
        # The endpoint names the type, whatever the body says.
        (
            "identify",
            {"type": "track", "event": "ignored", "traits": {"a": 1}},
            "$identify",
            {"$set": {"a": 1}},
        ),
    ],
)
@pytest.mark.parametrize("short", [False, True], ids=["name", "letter"])  # analytics.js: /v1/t
def test_each_single_endpoint(
    start_gateway: GatewayFactory,
    *,
    kind: str,
    message: dict[str, Any],
    event: str,
    properties: dict[str, Any],
    short: bool,
) -> None:
    gw = start_gateway()
    (message_id,) = ids(1)
    body = {"userId": "u_1", "messageId": message_id, "timestamp": WHEN_ISO, **message}
    path = kind[0] if short else kind
    response = httpx.post(f"{gw.url}/v1/{path}", json=body, auth=(WRITE_KEY, ""))
    assert (response.status_code, response.json()) == (200, ok())
    (row,) = stored(gw).values()
    assert (row.project, row.event_id, row.event, row.distinct_id, row.timestamp) == (
        PROJECT,
        message_id,
        event,
        "u_1",
        WHEN,
    )
    assert (row.properties, row.lib, row.source) == (properties, "segment", "segment")


@pytest.mark.parametrize(
    ("where", "request_args"),
    [
        ("basic auth", {"auth": ("other-key", "")}),
        ("basic auth with a password", {"auth": ("other-key", "ignored")}),
        ("X-Write-Key", {"headers": {"X-Write-Key": "other-key"}}),
        ("writeKey", {"body": {"writeKey": "other-key"}}),
        # An explicit header wins over the body.
        ("basic over body", {"auth": ("other-key", ""), "body": {"writeKey": WRITE_KEY}}),
    ],
)
def test_write_key_from_each_place(
    start_gateway: GatewayFactory, where: str, request_args: dict[str, Any]
) -> None:
    gw = start_gateway()
    (message_id,) = ids(1)
    body = {"userId": "u_1", "event": "e", "messageId": message_id, **request_args.pop("body", {})}
    response = httpx.post(f"{gw.url}/v1/track", json=body, **request_args)
    assert (response.status_code, response.json()) == (200, ok()), where
    (row,) = stored(gw).values()
    # The key chose the project ("other-key" is project "other") and is not kept.
    assert (row.project, row.event_id, row.event, row.distinct_id, row.properties) == (
        "other",
        message_id,
        "e",
        "u_1",
        {},
    )


@pytest.mark.parametrize(
    ("request_args", "error"),
    [
        ({}, "missing write key"),
        ({"auth": ("", "secret")}, "missing write key"),
        ({"headers": {"Authorization": "Bearer test-key"}}, "missing write key"),
        ({"headers": {"Authorization": "Basic !!not base64!!"}}, "missing write key"),
        ({"auth": ("nope", "")}, "unknown write key"),
        ({"headers": {"X-Write-Key": "nope"}}, "unknown write key"),
        ({"body": {"writeKey": "nope"}}, "unknown write key"),
        ({"auth": ("nope", ""), "body": {"writeKey": WRITE_KEY}}, "unknown write key"),
    ],
)
def test_missing_or_unknown_key_is_401(
    start_gateway: GatewayFactory, request_args: dict[str, Any], error: str
) -> None:
    gw = start_gateway()
    body = {"userId": "u_1", "event": "e", **request_args.pop("body", {})}
    response = httpx.post(f"{gw.url}/v1/track", json=body, **request_args)
    assert (response.status_code, response.json()) == (401, {"error": error})
    assert stored(gw) == {}


def test_batch_shares_context_corrects_skew_and_keeps_valid_messages(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway()
    tracked, identified, original, late = ids(4)
    batch: list[Any] = [
        # The device's clock is years slow: its times are moved by its skew.
        {
            "type": "track",
            "event": "Clicked",
            "userId": 7,
            "messageId": tracked,
            "timestamp": "2020-01-01T00:00:00.000Z",
            "context": {"page": {"path": "/"}},
        },
        {
            "type": "identify",
            "anonymousId": "anon_1",
            "messageId": identified,
            "timestamp": "2020-01-01T00:00:05.000Z",
            "traits": {"a": 1},
        },
        # Rudder's SDKs send `originalTimestamp`.
        {
            "type": "page",
            "userId": "u_1",
            "messageId": original,
            "originalTimestamp": "2020-01-01T00:00:04.000Z",
        },
        {"type": "purchase", "userId": "u_1"},
        "not a message",
        {"type": "track", "userId": "u_1", "messageId": late, "timestamp": "soon"},
    ]
    # Context for every message of the batch, each message's own context merged over it.
    shared = {"library": {"name": "rudder-sdk-python", "version": "1.0.0"}, "app": "shop"}
    body = {"batch": batch, "sentAt": "2020-01-01T00:00:05.000Z", "context": shared}
    response = httpx.post(f"{gw.url}/v1/batch", json=body, auth=(WRITE_KEY, ""))
    reasons = [
        (
            3,
            "type must be one of track, identify, page, screen, alias, group, got 'purchase'",
            None,
        ),
        (4, "a message must be a JSON object", None),
        (5, "event is required and must be a non-empty string", late),
    ]
    rejected = [
        {"index": i, "reason": reason, **({"event_id": e} if e else {})} for i, reason, e in reasons
    ]
    assert (response.status_code, response.json()) == (
        200,
        {"success": True, "accepted": 3, "duplicates": 0, "rejected": rejected},
    )

    rows = stored(gw)
    assert {k: (r.event, r.distinct_id, r.properties) for k, r in rows.items()} == {
        tracked: ("Clicked", "7", {"$context": {**shared, "page": {"path": "/"}}}),
        identified: ("$identify", "anon_1", {"$set": {"a": 1}, "$context": shared}),
        original: ("$pageview", "u_1", {"$context": shared}),
    }
    assert {(r.project, r.lib, r.source) for r in rows.values()} == {
        (PROJECT, "rudder-sdk-python/1.0.0", "segment")
    }
    assert [rows[k].timestamp - rows[k].received_at for k in (tracked, identified, original)] == [
        timedelta(seconds=-5),
        timedelta(0),
        timedelta(seconds=-1),
    ]
    errors = gw.rows(
        "SELECT project, source, event_index, reason, payload FROM {db}.ingest_errors"
        " ORDER BY event_index"
    )
    assert errors == [
        (PROJECT, "segment", i, reason, json.dumps(batch[i], separators=(",", ":")))
        for i, reason, _ in reasons
    ]


def test_analytics_js_batching_mode_posts_to_b(start_gateway: GatewayFactory) -> None:
    """analytics.js with `deliveryStrategy: batching`: `/v1/b`, the key in the body and in
    Basic auth, `text/plain` (no CORS preflight)."""
    gw = start_gateway()
    first, second = ids(2)
    batch = [
        {"type": "track", "event": "Clicked", "anonymousId": "a_1", "messageId": first,
         "timestamp": WHEN_ISO, "properties": {"n": 1}},
        {"type": "page", "anonymousId": "a_1", "messageId": second, "timestamp": WHEN_ISO,
         "properties": {"path": "/pricing"}},
    ]  # fmt: skip
    response = httpx.post(
        f"{gw.url}/v1/b",
        content=json.dumps({"writeKey": WRITE_KEY, "batch": batch, "sentAt": WHEN_ISO}),
        headers={"Content-Type": "text/plain"},
        auth=(WRITE_KEY, ""),
    )
    assert (response.status_code, response.json()) == (200, ok(accepted=2))
    rows = stored(gw)
    assert {k: (r.event, r.distinct_id, r.properties, r.timestamp) for k, r in rows.items()} == {
        first: ("Clicked", "a_1", {"n": 1}, rows[first].received_at),
        second: ("$pageview", "a_1", {"path": "/pricing"}, rows[second].received_at),
    }


def test_message_without_id_gets_a_content_id_so_a_retry_dedupes(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway()
    message = {"userId": "u_1", "event": "Clicked", "timestamp": WHEN_ISO, "properties": {"n": 1}}
    with httpx.Client(base_url=gw.url, auth=(WRITE_KEY, "")) as http:
        # A retry is stamped with a new sentAt; it is the same message all the same.
        first = http.post("/v1/track", json={**message, "sentAt": WHEN_ISO, "writeKey": WRITE_KEY})
        retry = http.post("/v1/track", json={**message, "sentAt": "2026-11-20T09:30:02.000Z"})
    assert (first.status_code, first.json()) == (200, ok())
    assert (retry.status_code, retry.json()) == (200, ok(accepted=0, duplicates=1))

    content = msgspec.json.encode({**message, "type": "track"}).decode()
    event_id = str(uuid.uuid5(ID_NAMESPACE, content))
    rows = stored(gw)
    assert sorted(rows) == [event_id]
    assert (rows[event_id].event, rows[event_id].properties) == ("Clicked", {"n": 1})
    # sentAt of the first request equals the timestamp: the event happened on receipt.
    assert rows[event_id].timestamp == rows[event_id].received_at


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/v1/batch", {"messages": []}, "a /v1/batch body needs a `batch` array"),
        ("/v1/batch", [{"type": "track"}], "body must be a JSON object"),
        ("/v1/track", "Clicked", "body must be a JSON object"),
    ],
)
def test_unreadable_bodies_are_400(
    start_gateway: GatewayFactory, path: str, body: Any, error: str
) -> None:
    gw = start_gateway()
    response = httpx.post(f"{gw.url}{path}", json=body, auth=(WRITE_KEY, ""))
    assert (response.status_code, response.json()) == (400, {"error": error})


@pytest.mark.parametrize(
    ("headers", "content", "status", "error"),
    [
        (
            {"Content-Type": "application/xml"},
            b"<batch/>",
            415,
            "Content-Type 'application/xml' is not supported: send application/json or text/plain",
        ),
        (
            {},
            b'{"batch": [}',
            400,
            "body is not JSON: JSON is malformed: invalid character (byte 11)",
        ),
    ],
)
def test_a_body_of_another_type_is_415_and_malformed_json_400(
    start_gateway: GatewayFactory, headers: dict[str, str], content: bytes, status: int, error: str
) -> None:
    gw = start_gateway()
    response = httpx.post(
        f"{gw.url}/v1/batch", content=content, headers=headers, auth=(WRITE_KEY, "")
    )
    assert (response.status_code, response.json()) == (status, {"error": error})
    assert stored(gw) == {}


def test_a_body_that_is_not_utf8_is_400_naming_the_byte(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    body = b'{"batch": [{"type": "track", "event": "\xe9t\xe9", "userId": "u"}]}'
    response = httpx.post(f"{gw.url}/v1/batch", content=body, auth=(WRITE_KEY, ""))
    assert (response.status_code, response.json()) == (
        400,
        {"error": "body is not UTF-8: invalid continuation byte at byte 39"},
    )


def test_context_that_is_not_an_object_is_not_kept(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    (message_id,) = ids(1)
    body = {"userId": "u_1", "event": "e", "messageId": message_id, "context": "web"}
    response = httpx.post(f"{gw.url}/v1/track", json=body, auth=(WRITE_KEY, ""))
    assert (response.status_code, response.json()) == (200, ok())
    (row,) = stored(gw).values()
    assert (row.event_id, row.properties, row.lib) == (message_id, {}, "segment")
