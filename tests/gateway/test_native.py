"""The native endpoint, fed by our SDK, read back from ClickHouse."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from headwater.sdk import LIB, Client, ClientOptions

from ..sdk.events import OrderCompleted
from .conftest import PROJECT, WRITE_KEY, GatewayFactory, metric


def test_sdk_events_are_stored_with_every_field(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    hw = Client(WRITE_KEY, host=gw.url, options=ClientOptions(flush_interval=60))
    when = datetime(2026, 11, 20, 9, 30, 0, 123000, tzinfo=UTC)
    order_id = hw.track(
        OrderCompleted(order_id="o1", revenue_cents=1299), distinct_id="u_42", timestamp=when
    )
    identify_id = hw.identify("u_42", {"plan": "pro"}, timestamp=when)
    assert hw.flush(timeout=10)
    hw.shutdown()
    rows = gw.rows(
        "SELECT project, toString(event_id), event, distinct_id, timestamp, properties, lib, source"
        " FROM {db}.events FINAL ORDER BY event"
    )
    assert [(r[0], r[1], r[2], r[3], r[5], r[7]) for r in rows] == [
        (PROJECT, identify_id, "$identify", "u_42", '{"$set":{"plan":"pro"}}', "native"),
        (
            PROJECT,
            order_id,
            "order_completed",
            "u_42",
            '{"order_id":"o1","revenue_cents":1299,"coupon":null}',
            "native",
        ),
    ]
    assert {r[6] for r in rows} == {LIB}
    # sent_at is a few ms after the event was queued: the skew correction moves the
    # timestamp by at most that much, never by hours.
    for row in rows:
        assert abs((row[4].replace(tzinfo=UTC) - when).total_seconds()) < 5
    assert json.loads(rows[0][5]) == {"$set": {"plan": "pro"}}
    # the SDK's batch (its sent_at has microseconds) was checked as columns
    path = "headwater_native_batches_total{path=%s}"
    assert [metric(gw, path % '"columns"'), metric(gw, path % '"one_by_one"')] == [1.0, 0.0]
