"""Forwarding stored events to PostHog (a stand-in on loopback speaking its /batch/ API)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import httpx

from headwater.sdk import Client, ClientOptions

from ..sdk.events import OrderCompleted
from .conftest import WRITE_KEY, GatewayFactory
from .posthog_standin import posthog_standin


def metric(url: str, name: str) -> float:
    """The value of an unlabelled metric on /metrics."""
    text = httpx.get(f"{url}/metrics").text
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, flags=re.MULTILINE)
    assert match is not None, f"{name} not in /metrics"
    return float(match.group(1))


def test_stored_events_reach_posthog_with_the_same_ids(start_gateway: GatewayFactory) -> None:
    with posthog_standin() as posthog:
        gw = start_gateway(posthog_host=posthog.url, posthog_api_key="phc_test")
        hw = Client(WRITE_KEY, host=gw.url, options=ClientOptions(flush_interval=60))
        when = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
        order = hw.track(
            OrderCompleted(order_id="o1", revenue_cents=5), distinct_id="u1", timestamp=when
        )
        ident = hw.identify("u1", {"plan": "pro"}, timestamp=when)
        assert hw.flush(timeout=10)
        hw.shutdown()
        events = posthog.wait_for(2)
    assert posthog.bodies[0]["api_key"] == "phc_test"
    stored = dict(gw.rows("SELECT toString(event_id), timestamp FROM {db}.events"))
    assert sorted(
        (e["uuid"], e["event"], e["distinct_id"], e["properties"], e.get("$set"), e["type"])
        for e in events
    ) == sorted(
        [
            (
                order,
                "order_completed",
                "u1",
                {"order_id": "o1", "revenue_cents": 5, "coupon": None},
                None,
                "capture",
            ),
            (ident, "$identify", "u1", {"$set": {"plan": "pro"}}, {"plan": "pro"}, "capture"),
        ]
    )
    for e in events:  # the stored (skew-corrected) time, as ISO 8601 in UTC
        assert datetime.fromisoformat(e["timestamp"]) == stored[e["uuid"]].replace(tzinfo=UTC)
    assert metric(gw.url, "headwater_forward_sent_total") == 2.0


def test_posthog_down_never_fails_ingestion(start_gateway: GatewayFactory) -> None:
    with posthog_standin() as posthog:
        posthog.status = 503
        gw = start_gateway(posthog_host=posthog.url, posthog_api_key="phc_test")
        hw = Client(WRITE_KEY, host=gw.url, options=ClientOptions(flush_interval=60))
        sent = [hw.capture("e", distinct_id="u", properties={"n": n}) for n in range(3)]
        assert hw.flush(timeout=10)
        hw.shutdown()
        assert hw.stats().sent == 3
        stored = {r[0] for r in gw.rows("SELECT toString(event_id) FROM {db}.events")}
        assert stored == set(sent)
        gw.gateway.forwarder.stop(timeout=20)  # let the retries run out
    assert metric(gw.url, "headwater_forward_failed_total") == 3.0
    assert metric(gw.url, "headwater_forward_sent_total") == 0.0


def test_a_full_forward_queue_drops_and_counts(start_gateway: GatewayFactory) -> None:
    gw = start_gateway(
        posthog_host="http://127.0.0.1:9", posthog_api_key="phc_test", forward_queue_size=1
    )
    hw = Client(
        WRITE_KEY, host=gw.url, options=ClientOptions(flush_interval=60, max_batch_events=1)
    )
    for n in range(6):
        hw.capture("e", distinct_id="u", properties={"n": n})
    assert hw.flush(timeout=20)
    hw.shutdown()
    assert len(gw.rows("SELECT event_id FROM {db}.events")) == 6
    gw.gateway.forwarder.stop(timeout=30)
    sent = metric(gw.url, "headwater_forward_sent_total")
    failed = metric(gw.url, "headwater_forward_failed_total")
    dropped = metric(gw.url, "headwater_forward_dropped_total")
    assert (sent, failed + dropped) == (0.0, 6.0)
    assert dropped >= 1.0


def test_an_event_python_cannot_read_is_stored_but_not_forwarded(
    start_gateway: GatewayFactory,
) -> None:
    """1e999 is valid JSON, kept as sent; PostHog would refuse the whole batch with it."""
    with posthog_standin() as posthog:
        gw = start_gateway(posthog_host=posthog.url, posthog_api_key="phc_test")
        huge, fine = str(uuid.uuid4()), str(uuid.uuid4())
        body = b'{"batch": [%s, %s]}' % (
            b'{"type": "track", "event": "e", "distinct_id": "u", "event_id": "%s",'
            b' "properties": {"n": 1e999}}' % huge.encode(),
            b'{"type": "track", "event": "e", "distinct_id": "u", "event_id": "%s",'
            b' "properties": {"n": 1}}' % fine.encode(),
        )
        answer = httpx.post(
            f"{gw.url}/v1/events", content=body, headers={"Authorization": f"Bearer {WRITE_KEY}"}
        )
        forwarded = posthog.wait_for(1)
        gw.gateway.forwarder.stop(timeout=20)
    assert answer.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert dict(gw.rows("SELECT toString(event_id), properties FROM {db}.events")) == {
        huge: '{"n": 1e999}',
        fine: '{"n": 1}',
    }
    assert [(e["uuid"], e["properties"]) for e in forwarded] == [(fine, {"n": 1})]
    assert metric(gw.url, "headwater_forward_failed_total") == 1.0
    assert metric(gw.url, "headwater_forward_sent_total") == 1.0


def test_each_project_forwards_to_its_own_posthog(start_gateway: GatewayFactory) -> None:
    """`posthog_projects`: a project's own PostHog, or none; the rest go to the default."""
    with posthog_standin() as default, posthog_standin() as own:
        gw = start_gateway(
            write_keys={WRITE_KEY: "proj", "other-key": "other", "quiet-key": "quiet"},
            posthog_host=default.url,
            posthog_api_key="phc_default",
            posthog_projects={
                "other": own.url.replace("://", "://phc_other@"),
                "quiet": "off",
            },
        )
        sent = {}
        for key in (WRITE_KEY, "other-key", "quiet-key"):
            event_id = str(uuid.uuid4())
            body = {
                "batch": [{"type": "track", "event": "e", "distinct_id": key, "event_id": event_id}]
            }
            answer = httpx.post(
                f"{gw.url}/v1/events", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            assert answer.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
            sent[key] = event_id
        gw.gateway.forwarder.stop(timeout=20)
        flags = {
            key: httpx.post(f"{gw.url}/flags/?v=2", json={"token": key, "distinct_id": "u"}).json()
            for key in ("other-key", "quiet-key")
        }
    stored = dict(gw.rows("SELECT toString(event_id), project FROM {db}.events"))
    assert stored == {
        sent[WRITE_KEY]: "proj",
        sent["other-key"]: "other",
        sent["quiet-key"]: "quiet",
    }
    assert [(b["api_key"], [e["uuid"] for e in b["batch"]]) for b in default.bodies] == [
        ("phc_default", [sent[WRITE_KEY]])
    ]
    assert [(b["api_key"], [e["uuid"] for e in b["batch"]]) for b in own.bodies] == [
        ("phc_other", [sent["other-key"]])
    ]
    assert metric(gw.url, "headwater_forward_sent_total") == 2.0
    # flags follow the events: the project's own PostHog under its key, or none at all
    assert [(body["token"], body["distinct_id"]) for _, body, _ in own.flag_requests] == [
        ("phc_other", "u")
    ]
    assert default.flag_requests == []
    assert flags["quiet-key"]["flags"] == {}
    assert flags["quiet-key"]["errorsWhileComputingFlags"] is False


def _send_events(url: str, count: int) -> list[str]:
    """One request of `count` events, all accepted; their ids."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    batch = [{"type": "track", "event": "e", "distinct_id": "u", "event_id": i} for i in ids]
    answer = httpx.post(
        f"{url}/v1/events", json={"batch": batch}, headers={"Authorization": f"Bearer {WRITE_KEY}"}
    )
    assert answer.json() == {"accepted": count, "duplicates": 0, "rejected": []}
    return ids


def test_the_forward_queue_holds_at_most_its_size_in_events(start_gateway: GatewayFactory) -> None:
    with posthog_standin() as posthog:
        posthog.answering.clear()  # PostHog slow: the first 100 events stay in flight
        gw = start_gateway(
            posthog_host=posthog.url, posthog_api_key="phc_test", forward_queue_size=150
        )
        first = _send_events(gw.url, 100)
        posthog.wait_for_posts(1)
        _send_events(gw.url, 100)  # 200 > 150: dropped whole
        third = _send_events(gw.url, 50)  # 150: fits
        posthog.answering.set()
        gw.gateway.forwarder.stop(timeout=20)
    assert [e["uuid"] for e in posthog.events] == first + third
    assert metric(gw.url, "headwater_forward_dropped_total") == 100.0
    assert metric(gw.url, "headwater_forward_sent_total") == 150.0


def test_a_request_larger_than_the_forward_queue_goes_when_it_is_empty(
    start_gateway: GatewayFactory,
) -> None:
    with posthog_standin() as posthog:
        gw = start_gateway(
            posthog_host=posthog.url, posthog_api_key="phc_test", forward_queue_size=5
        )
        sent = _send_events(gw.url, 8)
        gw.gateway.forwarder.stop(timeout=20)
    assert [e["uuid"] for e in posthog.events] == sent
    assert metric(gw.url, "headwater_forward_dropped_total") == 0.0


def test_what_a_shutdown_leaves_queued_is_counted_as_dropped(
    start_gateway: GatewayFactory,
) -> None:
    with posthog_standin() as posthog:
        posthog.answering.clear()
        gw = start_gateway(posthog_host=posthog.url, posthog_api_key="phc_test")
        in_flight = _send_events(gw.url, 1)
        posthog.wait_for_posts(1)
        _send_events(gw.url, 2)
        _send_events(gw.url, 3)
        gw.gateway.forwarder.stop(timeout=0.5)  # PostHog still has not answered
        dropped = metric(gw.url, "headwater_forward_dropped_total")
        _send_events(gw.url, 4)  # stored, after the forwarder stopped: dropped too
        dropped_after = metric(gw.url, "headwater_forward_dropped_total")
        posthog.answering.set()
        forwarded = posthog.wait_for(1)
    assert (dropped, dropped_after) == (5.0, 9.0)
    assert [e["uuid"] for e in forwarded] == in_flight
