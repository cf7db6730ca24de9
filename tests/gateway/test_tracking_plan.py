"""Tracking plans exported from the SDK's typed events, enforced by the gateway."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from headwater.gateway import ConfigError, Gateway, Settings
from headwater.sdk._schema import export_plan

from .conftest import WRITE_KEY, GatewayFactory


def plan_file(tmp_path: Path) -> str:
    path = tmp_path / "plan.json"
    path.write_bytes(export_plan(["tests.sdk.events"]))
    return str(path)


def send(url: str, *events: dict[str, object]) -> httpx.Response:
    batch = [{"type": "track", "distinct_id": "u", **e} for e in events]
    return httpx.post(
        f"{url}/v1/events", json={"batch": batch}, headers={"Authorization": f"Bearer {WRITE_KEY}"}
    )


def test_violations_are_rejected_and_unknown_names_flagged(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = start_gateway(
        tracking_plans={"proj": plan_file(tmp_path)},
        tracking_policy="reject",
        tracking_unknown="flag",
    )
    answer = send(
        gw.url,
        {"event": "order_completed", "properties": {"order_id": "o1", "revenue_cents": 5}},
        {"event": "order_completed", "properties": {"order_id": 1, "revenue_cents": 5}},
        {"event": "order_completed", "properties": {"revenue_cents": 5}},
        {"event": "newsletter_opened", "properties": {"issue": 7}},
        {"event": "$identify", "properties": {"$set": {"plan": "pro"}}},
    )
    assert answer.json() == {
        "accepted": 3,
        "duplicates": 0,
        "rejected": [
            {"index": 1, "reason": 'tracking plan: properties.order_id: 1 is not of type "string"'},
            {"index": 2, "reason": 'tracking plan: properties: "order_id" is a required property'},
        ],
    }
    stored = {e: json.loads(p) for e, p in gw.rows("SELECT event, properties FROM {db}.events")}
    assert stored == {
        "order_completed": {"order_id": "o1", "revenue_cents": 5},
        "newsletter_opened": {"issue": 7, "$plan_violation": "unknown event"},
        "$identify": {"$set": {"plan": "pro"}},
    }
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'headwater_tracking_plan_violations_total{policy="reject",project="proj"} 2.0' in metrics
    assert 'headwater_tracking_plan_violations_total{policy="flag",project="proj"} 1.0' in metrics


def test_violations_flagged_and_unknown_names_rejected(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """The other way round: a violation is stored with its reason, an unknown name refused,
    and an event the plan allows with no name of its own (`$identify`) is never refused."""
    gw = start_gateway(
        tracking_plans={"proj": plan_file(tmp_path)},
        tracking_policy="flag",
        tracking_unknown="reject",
    )
    answer = send(
        gw.url,
        {"event": "order_completed", "properties": {"order_id": 1, "revenue_cents": 5}},
        {"event": "newsletter_opened", "properties": {"issue": 7}},
        {"event": "$identify", "properties": {"$set": {"plan": "pro"}}},
    )
    assert answer.json() == {
        "accepted": 2,
        "duplicates": 0,
        "rejected": [{"index": 1, "reason": "tracking plan: unknown event"}],
    }
    stored = {e: json.loads(p) for e, p in gw.rows("SELECT event, properties FROM {db}.events")}
    assert stored == {
        "order_completed": {
            "order_id": 1,
            "revenue_cents": 5,
            "$plan_violation": 'properties.order_id: 1 is not of type "string"',
        },
        "$identify": {"$set": {"plan": "pro"}},
    }
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'headwater_tracking_plan_violations_total{policy="flag",project="proj"} 1.0' in metrics
    assert 'headwater_tracking_plan_violations_total{policy="reject",project="proj"} 1.0' in metrics


def test_the_count_policy_stores_everything(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    gw = start_gateway(tracking_plans={"proj": plan_file(tmp_path)})  # count, count
    answer = send(gw.url, {"event": "order_completed", "properties": {"order_id": 1}})
    assert answer.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert gw.rows("SELECT properties FROM {db}.events") == [('{"order_id":1}',)]
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'headwater_tracking_plan_violations_total{policy="count",project="proj"} 1.0' in metrics


def test_other_projects_are_not_checked(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    gw = start_gateway(tracking_plans={"other": plan_file(tmp_path)}, tracking_policy="reject")
    answer = send(gw.url, {"event": "order_completed", "properties": {"order_id": 1}})
    assert answer.json()["accepted"] == 1


def test_a_missing_plan_stops_start_up_naming_it(tmp_path: Path) -> None:
    settings = Settings(
        clickhouse_url="chdb:///unused", tracking_plans={"proj": str(tmp_path / "nope.json")}
    )
    with pytest.raises(ConfigError, match=r"tracking plan .*nope\.json: .*No such file"):
        Gateway(settings)


def test_properties_the_plan_cannot_read_break_it(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """Native properties are kept as sent until a plan reads them; JSON that Python cannot
    hold (a number past a float's range) cannot be checked: a violation of the plan, for
    an event the plan covers."""
    gw = start_gateway(tracking_plans={"proj": plan_file(tmp_path)}, tracking_policy="reject")
    body = (
        b'{"batch": [{"type": "track", "distinct_id": "u", "event": "order_completed",'
        b' "properties": {"order_id": "o1", "revenue_cents": 1e999}},'
        b' {"type": "track", "distinct_id": "u", "event": "$pageview",'
        b' "properties": {"n": 1e999}}]}'
    )
    answer = httpx.post(
        f"{gw.url}/v1/events", content=body, headers={"Authorization": f"Bearer {WRITE_KEY}"}
    )
    assert answer.json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [
            {
                "index": 0,
                "reason": "tracking plan: properties cannot be read:"
                " Number out of range - at `$[...]`",
            }
        ],
    }
    assert gw.rows("SELECT event, properties FROM {db}.events") == [("$pageview", '{"n": 1e999}')]
