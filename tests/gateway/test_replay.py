"""`headwater replay-errors`: refused events go through ingestion again after a fix."""

from __future__ import annotations

import asyncio

import httpx
import msgspec

from headwater.gateway import Gateway
from headwater.gateway._replay import ReplayReport, mark_replayed, replay_errors

from .conftest import WRITE_KEY, GatewayFactory, RunningGateway


def replay(gw: RunningGateway, **overrides: object) -> ReplayReport:
    """Replay with the gateway's settings changed by `overrides` (the fix)."""
    settings = msgspec.structs.replace(gw.settings, **overrides)
    gateway = Gateway(settings, clickhouse=gw.clickhouse)

    async def run() -> ReplayReport:
        await gateway.start()
        try:
            return await replay_errors(gateway)
        finally:
            await gateway.stop()

    return asyncio.run(run())


def test_refused_events_are_stored_once_the_limit_is_raised(start_gateway: GatewayFactory) -> None:
    gw = start_gateway(max_event_bytes=300)
    big = {"type": "track", "event_id": "0193aaaa-0000-7000-8000-000000000001", "event": "big",
           "distinct_id": "u", "properties": {"blob": "x" * 400}}  # fmt: skip
    small = {
        "type": "track",
        "event_id": "0193aaaa-0000-7000-8000-000000000002",
        "event": "small",
        "distinct_id": "u",
    }
    answer = httpx.post(
        f"{gw.url}/v1/events",
        json={"batch": [small, big]},
        headers={"Authorization": f"Bearer {WRITE_KEY}"},
    )
    assert answer.json()["accepted"] == 1
    assert gw.rows("SELECT event_index, replayed_at FROM {db}.ingest_errors") == [(1, None)]
    ((refused_at,),) = gw.rows("SELECT received_at FROM {db}.ingest_errors")

    still = replay(gw)  # nothing fixed yet: still refused, and not kept twice
    assert (still.read, still.stored, still.still_invalid) == (1, 0, 1)
    assert list(still.reasons) == [
        f"event is {len(msgspec.json.encode(big))} bytes, over the limit of 300"
    ]
    assert len(gw.rows("SELECT error_id FROM {db}.ingest_errors")) == 1

    fixed = replay(gw, max_event_bytes=1_000_000)
    assert (fixed.read, fixed.stored, fixed.duplicates, fixed.still_invalid) == (1, 1, 0, 0)
    assert sorted(gw.rows("SELECT event FROM {db}.events FINAL")) == [("big",), ("small",)]
    # as when it first arrived: no time of its own, so the time it was received
    assert gw.rows("SELECT timestamp, received_at, lib FROM {db}.events WHERE event = 'big'") == [
        (refused_at, refused_at, "headwater-replay")
    ]
    assert gw.rows("SELECT count() FROM {db}.ingest_errors WHERE replayed_at IS NULL") == [(0,)]
    assert replay(gw, max_event_bytes=1_000_000).read == 0


def test_replayed_rows_are_marked_on_each_shard_of_a_cluster() -> None:
    """A Distributed table takes no mutation: the shards' local tables do."""
    assert mark_replayed("hw", "") == (
        "ALTER TABLE hw.ingest_errors UPDATE replayed_at = now64(3)"
        " WHERE error_id IN %(ids)s SETTINGS mutations_sync = 2"
    )
    assert mark_replayed("hw", "events") == (
        "ALTER TABLE hw.ingest_errors_local ON CLUSTER 'events' UPDATE replayed_at = now64(3)"
        " WHERE error_id IN %(ids)s SETTINGS mutations_sync = 2"
    )
