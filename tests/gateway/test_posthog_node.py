"""posthog-node, unchanged, in Node: a service's capture, identify and alias, sent in a
batch (to `/batch/`) when the client shuts down, read back from ClickHouse."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from .conftest import PROJECT, WRITE_KEY, GatewayFactory, stored

JS = Path(__file__).parents[1] / "js"
ORDER = "0193a0b4-0000-7000-8000-00000000abcd"
WHEN = datetime(2026, 11, 20, 9, 30, 0, 123000, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def test_posthog_node_events_are_stored_with_their_fields(start_gateway: GatewayFactory) -> None:
    node = shutil.which("node")
    package = JS / "node_modules" / "posthog-node" / "package.json"
    if node is None or not package.exists():
        pytest.fail(f"node and {package} are needed: npm ci --prefix {JS} (scripts/test does)")
    gw = start_gateway()
    before = datetime.now(UTC)
    sent = subprocess.run(
        [node, str(JS / "posthog_node_send.mjs"), gw.url, WRITE_KEY, ORDER],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(sent.stdout) == {"failures": []}

    version = json.loads(package.read_text())["version"]
    rows = stored(gw)
    order = rows.pop(ORDER)
    assert (order.project, order.event, order.distinct_id, order.lib, order.source) == (
        PROJECT,
        "order_completed",
        "u_node",
        f"posthog-node/{version}",
        "posthog",
    )
    assert order.properties == {
        "revenue_cents": 4200,
        "items": ["a", "b"],
        "$lib": "posthog-node",
        "$lib_version": version,
        "$geoip_disable": True,
        "$is_server": True,
    }
    # skew-corrected with the batch's sent_at, sent after `before`
    assert WHEN - 2 * MS <= order.timestamp <= WHEN + (order.received_at - before) + MS
    kinds = {row.event: row for row in rows.values()}
    assert sorted(kinds) == ["$create_alias", "$identify"]
    assert (kinds["$identify"].distinct_id, kinds["$identify"].properties["$set"]) == (
        "u_node",
        {"plan": "team"},
    )
    alias = kinds["$create_alias"]
    assert (alias.distinct_id, alias.properties["alias"]) == ("u_node", "anon_9")
