"""Forwarding stored events to PostHog, at least once, from the store (a stand-in on
loopback speaking PostHog's /batch/ API)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from headwater.sdk import Client, ClientOptions

from ..sdk.events import OrderCompleted
from .conftest import WRITE_KEY, GatewayFactory, RunningGateway, metric
from .posthog_standin import PostHogStandIn, posthog_standin

# Rows wait half a second for inserts in flight (10 s by default); idle looks and retries
# come every 50 ms, at most 200 ms apart.
FAST = {
    "forward_settle_seconds": 0.5,
    "forward_poll_seconds": 0.05,
    "forward_backoff_cap_seconds": 0.2,
}


def forwarding(posthog: PostHogStandIn, **more: Any) -> dict[str, Any]:
    """Gateway settings forwarding to `posthog`, quickly."""
    return {"posthog_host": posthog.url, "posthog_api_key": "phc_test", **FAST, **more}


def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for `condition` (fails the test past `timeout`)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.02)


def send(url: str, count: int, *, key: str = WRITE_KEY, name: str = "e") -> list[str]:
    """`count` events sent with the SDK in one batch; their ids."""
    hw = Client(key, host=url, options=ClientOptions(flush_interval=60))
    ids = [hw.capture(name, distinct_id=f"u{n % 3}", properties={"n": n}) for n in range(count)]
    assert hw.flush(timeout=20)
    hw.shutdown()
    return [i for i in ids if i is not None]


def uuids(posthog: PostHogStandIn) -> list[str]:
    """The uuids PostHog took, in the order it took them."""
    return [e["uuid"] for e in posthog.events]


def lag(gw: RunningGateway) -> tuple[float, float]:
    """(events, seconds) behind, for the project `proj`."""
    return (
        metric(gw, 'headwater_forward_lag_events{project="proj"}'),
        metric(gw, 'headwater_forward_lag_seconds{project="proj"}'),
    )


def test_stored_events_reach_posthog_with_the_same_ids(start_gateway: GatewayFactory) -> None:
    with posthog_standin() as posthog:
        gw = start_gateway(**forwarding(posthog))
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
    assert metric(gw, "headwater_forward_sent_total") == 2.0


def test_each_project_forwards_to_its_own_posthog(start_gateway: GatewayFactory) -> None:
    """`posthog_projects`: a project's own PostHog, or none; the rest go to the default."""
    with posthog_standin() as default, posthog_standin() as own:
        gw = start_gateway(
            write_keys={WRITE_KEY: "proj", "other-key": "other", "quiet-key": "quiet"},
            posthog_host=default.url,
            posthog_api_key="phc_default",
            **FAST,
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
        default.wait_for(1)
        own.wait_for(1)
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
    assert metric(gw, "headwater_forward_sent_total") == 2.0
    # flags follow the events: the project's own PostHog under its key, or none at all
    assert [(body["token"], body["distinct_id"]) for _, body, _ in own.flag_requests] == [
        ("phc_other", "u")
    ]
    assert default.flag_requests == []
    assert flags["quiet-key"]["flags"] == {}
    assert flags["quiet-key"]["errorsWhileComputingFlags"] is False


def test_posthog_down_then_refusing_with_500_and_429_loses_nothing(
    start_gateway: GatewayFactory,
) -> None:
    """Ingestion goes on; the lag says how far behind; every event arrives once, in order."""
    with posthog_standin() as posthog:
        posthog.status = 503
        gw = start_gateway(**forwarding(posthog))
        first = send(gw.url, 20)
        until(lambda: posthog.answers.count(503) >= 2)
        until(lambda: lag(gw)[0] == 20)
        assert lag(gw)[1] > 0
        posthog.status = 500
        until(lambda: 500 in posthog.answers)
        posthog.status, posthog.retry_after = 429, "0"
        second = send(gw.url, 5)
        until(lambda: 429 in posthog.answers)
        posthog.status = 200
        posthog.wait_for(25)
        until(lambda: lag(gw) == (0.0, 0.0))
    assert sorted(uuids(posthog)) == sorted(first + second)
    stored = gw.rows("SELECT toString(event_id) FROM {db}.events ORDER BY inserted_at, event_id")
    assert uuids(posthog) == [event_id for (event_id,) in stored]  # oldest first
    assert metric(gw, "headwater_forward_sent_total") == 25.0
    assert metric(gw, 'headwater_forward_failed_attempts_total{reason="5xx"}') >= 3.0
    assert metric(gw, 'headwater_forward_failed_attempts_total{reason="429"}') >= 1.0
    assert metric(gw, "headwater_forward_dead_letters_total") == 0.0


def test_a_gateway_restarted_during_an_outage_forwards_what_it_stored(
    start_gateway: GatewayFactory,
) -> None:
    with posthog_standin() as posthog:
        posthog.status = 503
        first = start_gateway(**forwarding(posthog))
        stored_first = send(first.url, 30)
        until(lambda: posthog.answers.count(503) >= 2)
        first.stop()
        posthog.status = 200
        second = start_gateway(database=first.database, **forwarding(posthog))
        stored_second = send(second.url, 5)
        posthog.wait_for(35)
        until(lambda: lag(second) == (0.0, 0.0))
    assert sorted(uuids(posthog)) == sorted(stored_first + stored_second)  # each once
    assert posthog.answers.count(200) == 2  # the backlog, then the new batch


def test_a_backlog_goes_in_batches_oldest_first(start_gateway: GatewayFactory) -> None:
    with posthog_standin() as posthog:
        posthog.status = 503
        gw = start_gateway(**forwarding(posthog, forward_batch_size=10))
        requests = [send(gw.url, 7) for _ in range(3)]
        until(lambda: lag(gw)[0] == 21)
        posthog.status = 200
        posthog.wait_for(21)
    # the rows read before the outage ended (those settled then: 7, 14 or 21), then the
    # rest, each in batches of at most ten
    sizes = [len(body["batch"]) for body in posthog.bodies]
    assert sum(sizes) == 21
    assert max(sizes) == 10 or sizes == [7, 7, 7], sizes
    request_of = {event_id: n for n, ids in enumerate(requests) for event_id in ids}
    # each request stored after the one before: its events go after the earlier ones'
    assert [request_of[event_id] for event_id in uuids(posthog)] == [0] * 7 + [1] * 7 + [2] * 7


def test_an_event_posthog_refuses_for_good_is_kept_and_the_rest_forwarded(
    start_gateway: GatewayFactory,
) -> None:
    """The refused batch is posted in halves until the refused event stands alone."""
    with posthog_standin() as posthog:
        posthog.refuse = {"bad"}
        gw = start_gateway(**forwarding(posthog))
        hw = Client(WRITE_KEY, host=gw.url, options=ClientOptions(flush_interval=60))
        ids = [hw.capture("bad" if n == 5 else "e", distinct_id="u") for n in range(8)]
        assert hw.flush(timeout=20)
        hw.shutdown()
        posthog.wait_for(7)
        until(lambda: lag(gw) == (0.0, 0.0))
    assert uuids(posthog) == ids[:5] + ids[6:]
    # 0-7 refused; 0-3 taken; 4-7, 4-5 refused; 4 taken; 5 refused alone; 6-7 taken
    assert posthog.answers == [400, 200, 400, 400, 200, 400, 200]
    letters = gw.rows(
        "SELECT toString(event_id), event, status, reason, JSONExtractString(message, 'uuid')"
        " FROM {db}.forward_dead_letters"
    )
    assert letters == [
        (
            ids[5],
            "bad",
            400,
            "PostHog answered 400: invalid payload",
            ids[5],
        )
    ]
    assert metric(gw, "headwater_forward_dead_letters_total") == 1.0
    assert metric(gw, "headwater_forward_sent_total") == 7.0


def test_an_event_python_cannot_read_is_stored_and_kept_as_a_dead_letter(
    start_gateway: GatewayFactory,
) -> None:
    """1e999 is valid JSON, kept as sent; PostHog would refuse the whole batch with it."""
    with posthog_standin() as posthog:
        gw = start_gateway(**forwarding(posthog))
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
        until(lambda: lag(gw) == (0.0, 0.0))
    assert answer.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert dict(gw.rows("SELECT toString(event_id), properties FROM {db}.events")) == {
        huge: '{"n": 1e999}',
        fine: '{"n": 1}',
    }
    assert [(e["uuid"], e["properties"]) for e in forwarded] == [(fine, {"n": 1})]
    letters = gw.rows(
        "SELECT toString(event_id), status, startsWith(reason, 'properties do not read'),"
        " message FROM {db}.forward_dead_letters"
    )
    assert letters == [(huge, 0, 1, '{"n": 1e999}')]
    assert metric(gw, "headwater_forward_dead_letters_total") == 1.0
    assert metric(gw, "headwater_forward_sent_total") == 1.0


def test_gateways_sharing_a_database_forward_each_event_once(
    start_gateway: GatewayFactory,
) -> None:
    """The Redis lease: one of the two forwards, the other stands by."""
    with posthog_standin() as posthog:
        one = start_gateway(**forwarding(posthog))
        two = start_gateway(database=one.database, **forwarding(posthog))
        sent = send(one.url, 10) + send(two.url, 10)
        posthog.wait_for(20)
        until(lambda: lag(one) == (0.0, 0.0) or lag(two) == (0.0, 0.0))
        time.sleep(0.5)  # ten more looks of the idle forwarders: nothing more arrives
        leaders = [metric(gw, "headwater_forward_leader") for gw in (one, two)]
    assert sorted(uuids(posthog)) == sorted(sent)
    assert sorted(leaders) == [0.0, 1.0]


def test_what_was_stored_before_forwarding_began_is_not_sent(
    start_gateway: GatewayFactory,
) -> None:
    """An upgraded or newly configured deployment forwards from then on, not its history."""
    with posthog_standin() as posthog:
        before = start_gateway()
        send(before.url, 4)
        before.stop()
        after = start_gateway(database=before.database, **forwarding(posthog))
        sent = send(after.url, 3)
        posthog.wait_for(3)
        until(lambda: lag(after) == (0.0, 0.0))
    assert sorted(uuids(posthog)) == sorted(sent)


def test_headwater_forward_without_a_posthog_says_so(tmp_path: Path) -> None:
    environment = {
        "PATH": str(Path(sys.executable).parent),
        "HEADWATER_CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}",
        "HEADWATER_WRITE_KEYS": "k:shop",
    }
    command = [str(Path(sys.executable).with_name("headwater")), "forward", "--once"]
    done = subprocess.run(
        command, env=environment, cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stderr.strip(), done.stdout) == (
        2,
        "error: nothing to forward: HEADWATER_POSTHOG_HOST is unset",
        "",
    )
    assert not (tmp_path / "clickhouse").exists()  # nothing created
