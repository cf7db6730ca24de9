"""Health, readiness, metrics, the OpenAPI document, request ids, migrations, shutdown."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import pytest

from headwater.gateway import ClickHouse, ConfigError, Settings, migrate
from headwater.gateway._clickhouse import EVENT_COLUMNS, migrations
from headwater.gateway._committer import GroupCommitter
from headwater.gateway._events import RowBlock
from headwater.gateway._settings import PostHogTarget
from headwater.gateway._sink import ClickHouseSink

from .conftest import GatewayFactory, RunningGateway


def test_health_and_readiness(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    assert httpx.get(f"{gw.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gw.url}/readyz")
    assert (ready.status_code, ready.json()) == (
        200,
        {
            "ready": True,
            "clickhouse": "ok",
            "redis": "ok",
            "dedupe_degraded": False,
            "queued_rows": 0,
        },
    )
    embedded = start_gateway(redis=False)
    assert httpx.get(f"{embedded.url}/readyz").json()["redis"] == "in-process"


def test_metrics_count_what_happened(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    body = {
        "batch": [
            {"type": "track", "event": "e", "distinct_id": "u"},
            {"type": "track", "event": "", "distinct_id": "u"},
        ]
    }
    answer = httpx.post(
        f"{gw.url}/v1/events", json=body, headers={"Authorization": "Bearer test-key"}
    )
    assert answer.json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [{"index": 1, "reason": "event is required and must be a non-empty string"}],
    }
    clean = {
        "type": "track",
        "event": "e",
        "distinct_id": "u",
        "event_id": str(uuid.uuid4()),
        "timestamp": "2025-06-01T10:00:00.125Z",
    }
    sdk = httpx.post(
        f"{gw.url}/v1/events", json={"batch": [clean]}, headers={"Authorization": "Bearer test-key"}
    )
    assert sdk.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    text = httpx.get(f"{gw.url}/metrics").text
    assert 'headwater_events_received_total{source="native"} 3.0' in text
    assert 'headwater_events_accepted_total{source="native"} 2.0' in text
    assert 'headwater_events_rejected_total{source="native"} 1.0' in text
    # the first batch went event by event (an event without an id, one refused)
    assert 'headwater_native_batches_total{path="one_by_one"} 1.0' in text
    assert 'headwater_native_batches_total{path="columns"} 1.0' in text
    assert "headwater_dead_letters_total 1.0" in text
    assert "headwater_commit_rows_count 2.0" in text
    probed = "headwater_event_loop_lag_seconds_count 0.0"
    deadline = time.monotonic() + 10  # the loop-lag probe wakes every 100 ms
    while probed in text and time.monotonic() < deadline:
        time.sleep(0.05)
        text = httpx.get(f"{gw.url}/metrics").text
    assert "headwater_event_loop_lag_seconds_count" in text
    assert probed not in text


def test_openapi_document_lists_every_endpoint(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    document = httpx.get(f"{gw.url}/schema/openapi.json").json()
    paths = set(document["paths"])
    expected = {"/v1/events", "/healthz", "/readyz", "/metrics", "/batch", "/e", "/i/v0/e"}
    assert expected | {"/v1/batch", "/v1/identify"} <= paths
    assert document["info"]["title"] == "Headwater gateway"


def test_request_ids_are_echoed_or_made(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    assert (
        httpx.get(f"{gw.url}/healthz", headers={"X-Request-Id": "abc123"}).headers["x-request-id"]
        == "abc123"
    )
    made = [
        httpx.get(f"{gw.url}/healthz").headers["x-request-id"],
        httpx.get(f"{gw.url}/healthz").headers["x-request-id"],
        httpx.post(f"{gw.url}/v1/events", json={}).headers["x-request-id"],  # the fast path
        httpx.post(f"{gw.url}/v1/events", json={}).headers["x-request-id"],
    ]
    assert all(re.fullmatch("[0-9a-f]{32}", rid) for rid in made), made
    assert len(set(made)) == 4


def test_unknown_write_key_is_a_401_naming_it(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    body: dict[str, list[object]] = {"batch": []}
    missing = httpx.post(f"{gw.url}/v1/events", json=body)
    unknown = httpx.post(f"{gw.url}/v1/events", json=body, headers={"Authorization": "Bearer nope"})
    assert (missing.status_code, missing.json()) == (401, {"error": "missing write key"})
    assert (unknown.status_code, unknown.json()) == (401, {"error": "unknown write key"})


def test_migrations_are_versioned_and_idempotent(clickhouse: ClickHouse) -> None:
    db = clickhouse.sharing(database="hw_migrations")
    db.command("DROP DATABASE IF EXISTS hw_migrations")
    assert migrate(db) == [1, 2, 3, 4]
    assert migrate(db) == []
    assert db.rows(
        "SELECT version, name FROM hw_migrations.schema_migrations FINAL ORDER BY version"
    ) == [
        (1, "events"),
        (2, "ingest_errors"),
        (3, "events merge selector"),
        (4, "forwarding"),
    ]
    assert db.rows(
        "SELECT name, type_full, expr FROM system.data_skipping_indices"
        " WHERE database = 'hw_migrations'"
    ) == [("inserted_at_minmax", "minmax", "inserted_at")]
    assert db.rows(
        "SELECT name, sorting_key FROM system.tables WHERE database = 'hw_migrations'"
        " AND name LIKE 'forward%' ORDER BY name"
    ) == [("forward_cursors", "project"), ("forward_dead_letters", "project, failed_at, event_id")]
    (engine,) = db.rows(
        "SELECT engine_full FROM system.tables WHERE database = 'hw_migrations' AND name = 'events'"
    )[0]
    assert engine == (
        "ReplacingMergeTree(inserted_at) PARTITION BY toYYYYMM(timestamp) "
        "ORDER BY (project, toDate(timestamp), event, cityHash64(distinct_id), event_id) "
        "SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 8192, "
        "merge_selector_base = 10"
    )


def test_a_server_keeps_its_merge_selector() -> None:
    embedded = {version: statements for version, _, statements in migrations("hw", embedded=True)}
    server = {version: statements for version, _, statements in migrations("hw")}
    assert embedded[3] == ["ALTER TABLE hw.events MODIFY SETTING merge_selector_base = 10"]
    assert server[3] == []
    del embedded[3], server[3]
    assert embedded == server


def test_cluster_migrations_use_replicated_and_distributed_tables() -> None:
    (_, _, events), (_, _, errors), (_, _, merges), (_, _, forwarding) = migrations(
        "hw", cluster="prod"
    )
    assert merges == []
    cursors, letters, index, materialize, cursors_shared, letters_shared = forwarding
    assert "CREATE TABLE IF NOT EXISTS hw.forward_cursors_local ON CLUSTER 'prod'" in cursors
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/hw/forward_cursors_local',"
        " '{replica}', inserted_at)" in cursors
    )
    assert "ReplicatedMergeTree(" in letters
    assert index == (
        "ALTER TABLE hw.events_local ON CLUSTER 'prod' ADD INDEX IF NOT EXISTS"
        " inserted_at_minmax inserted_at TYPE minmax GRANULARITY 1"
    )
    assert materialize == (
        "ALTER TABLE hw.events_local ON CLUSTER 'prod' MATERIALIZE INDEX inserted_at_minmax"
    )
    assert cursors_shared == (
        "CREATE TABLE IF NOT EXISTS hw.forward_cursors ON CLUSTER 'prod'"
        " AS hw.forward_cursors_local"
        " ENGINE = Distributed('prod', hw, forward_cursors_local, cityHash64(project))"
    )
    assert letters_shared.endswith("forward_dead_letters_local, rand())")
    assert "CREATE TABLE IF NOT EXISTS hw.events_local ON CLUSTER 'prod'" in events[0]
    zoo = "'/clickhouse/tables/{shard}/hw/events_local', '{replica}'"
    assert f"ENGINE = ReplicatedReplacingMergeTree({zoo}, inserted_at)" in events[0]
    assert events[1] == (
        "CREATE TABLE IF NOT EXISTS hw.events ON CLUSTER 'prod' AS hw.events_local"
        " ENGINE = Distributed('prod', hw, events_local, cityHash64(distinct_id))"
    )
    assert (
        "ReplicatedMergeTree('/clickhouse/tables/{shard}/hw/ingest_errors_local', '{replica}')"
        in errors[0]
    )


Block = TypeVar("Block")


def _rows(*event_ids: str) -> RowBlock:
    """Rows of one request, an event each of `event_ids`."""
    at = datetime(2026, 11, 20, tzinfo=UTC)
    count = len(event_ids)
    return RowBlock(
        project="p",
        received_at=at + timedelta(seconds=1),
        lib="lib",
        source="native",
        event_ids=list(event_ids),
        events=["e"] * count,
        distinct_ids=["u"] * count,
        timestamps=[at] * count,
        properties=[msgspec.Raw(b"{}")] * count,
    )


def _slow_committer(insert: Callable[[list[Block], str], None]) -> GroupCommitter[Block]:
    """A committer whose inserts start at least 60 s apart: what waits is visible."""
    return GroupCommitter(
        insert, max_rows=1000, max_bytes=10**6, max_delay=60.0, queue_rows=10**6, deadline=5.0
    )


def test_shutdown_stores_what_is_buffered(clickhouse: ClickHouse) -> None:
    db = clickhouse.sharing(database="hw_drain")
    db.command("DROP DATABASE IF EXISTS hw_drain")
    migrate(db)
    sink = ClickHouseSink(db)

    def block(n: int) -> RowBlock:
        return _rows(f"0193aaaa-0000-7000-8000-0000000000{n:02d}")

    async def scenario() -> None:
        committer = _slow_committer(sink.insert_events)
        committer.start()
        waiters = [asyncio.create_task(committer.submit(block(n), 1, 200)) for n in range(3)]
        await asyncio.sleep(0)  # the three requests are waiting; the 60 s delay has not passed
        await committer.drain()
        await asyncio.gather(*waiters)

    asyncio.run(scenario())
    assert len(EVENT_COLUMNS) == 9
    assert db.rows("SELECT toString(event_id) FROM hw_drain.events ORDER BY event_id") == [
        (f"0193aaaa-0000-7000-8000-0000000000{n:02d}",) for n in range(3)
    ]


def test_embedded_mode_runs_the_models_in_the_gateway_process(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = tmp_path / "models.toml"
    config.write_text("[schedule]\ninterval_seconds = 1\n")
    gw = start_gateway(
        clickhouse_url=f"chdb://{tmp_path}/clickhouse", models=str(config), model_schedule=True
    )
    at = "2026-11-20T10:00:00Z"
    body = {
        "batch": [{"type": "track", "event": "e", "distinct_id": u, "timestamp": at} for u in "ab"]
    }
    answer = httpx.post(
        f"{gw.url}/v1/events", json=body, headers={"Authorization": "Bearer test-key"}
    )
    assert answer.json()["accepted"] == 2
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _modeled(gw):
        time.sleep(0.2)
    assert gw.rows("SELECT day, dau FROM {db}.metrics_active_users") == [(date(2026, 11, 20), 2)]


def _modeled(gw: RunningGateway) -> bool:
    found = gw.rows(
        "SELECT count() FROM system.tables"
        " WHERE database = %(db)s AND name = 'metrics_active_users'",
        db=gw.database,
    )
    return bool(found[0][0]) and bool(
        gw.rows("SELECT count() FROM {db}.metrics_active_users")[0][0]
    )


def test_inserts_start_max_delay_apart_and_the_first_after_a_quiet_spell_at_once() -> None:
    inserted: list[bytes] = []

    async def scenario() -> list[bytes]:
        committer: GroupCommitter[bytes] = _slow_committer(
            lambda blocks, token: inserted.append(b"".join(blocks))
        )
        committer.start()
        await committer.submit(b"a\n", 1, 2)  # nothing inserted for 60 s: it goes at once
        later = [asyncio.create_task(committer.submit(row, 1, 2)) for row in (b"b\n", b"c\n")]
        await asyncio.sleep(0.05)
        waiting = list(inserted)  # b and c wait for the 60 s since a's insert started
        await committer.drain()
        await asyncio.gather(*later)
        return waiting

    assert asyncio.run(scenario()) == [b"a\n"]
    assert inserted == [b"a\n", b"b\nc\n"]


def test_a_project_name_with_a_space_or_newline_is_refused() -> None:
    for name in ("my project", "a\nb", ""):
        with pytest.raises(ConfigError) as raised:
            Settings(clickhouse_url="chdb:///tmp/x", write_keys={"key": name})
        assert str(raised.value) == (
            f"HEADWATER_WRITE_KEYS: project name {name!r} must be printable, without spaces"
        )


def test_posthog_projects_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "HEADWATER_CLICKHOUSE_URL": "chdb:///tmp/x",
            "HEADWATER_WRITE_KEYS": "k1:shop,k2:blog,k3:docs,k4:news",
            "HEADWATER_POSTHOG_HOST": "https://us.i.posthog.com",
            "HEADWATER_POSTHOG_API_KEY": "phc_default",
            "HEADWATER_POSTHOG_PROJECTS": (
                "shop:https://phc_shop@eu.i.posthog.com/ingest, blog:phc_blog, docs:off"
            ),
        }
    )
    assert settings.posthog_targets() == {
        "shop": PostHogTarget("https://eu.i.posthog.com/ingest", "phc_shop"),
        "blog": PostHogTarget("https://us.i.posthog.com", "phc_blog"),
        "docs": None,
    }
    assert settings.posthog_default == PostHogTarget("https://us.i.posthog.com", "phc_default")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"posthog_projects": {"typo": "off"}},
            "HEADWATER_POSTHOG_PROJECTS: project 'typo' has no write key (HEADWATER_WRITE_KEYS)",
        ),
        (
            {"posthog_projects": {"shop": "phc_shop"}},
            "HEADWATER_POSTHOG_PROJECTS: project 'shop' names an API key alone, and"
            " HEADWATER_POSTHOG_HOST is unset: give https://<api key>@<host>",
        ),
        (
            {"posthog_projects": {"shop": "https://eu.i.posthog.com"}},
            "HEADWATER_POSTHOG_PROJECTS: project 'shop': the URL must carry the API key,"
            " https://<api key>@<host>",
        ),
        (
            {"posthog_projects": {"shop": "ftp://phc_shop@eu.i.posthog.com"}},
            "HEADWATER_POSTHOG_PROJECTS: project 'shop': the URL must be https://<api key>@<host>",
        ),
        (
            {"posthog_host": "https://us.i.posthog.com"},
            "HEADWATER_POSTHOG_API_KEY is unset: forwarding needs HEADWATER_POSTHOG_HOST"
            " and _API_KEY both",
        ),
        (
            {"posthog_flags_timeout_seconds": 0},
            "HEADWATER_POSTHOG_FLAGS_TIMEOUT_SECONDS must be positive",
        ),
    ],
)
def test_a_posthog_target_that_does_not_read_stops_start_up(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings(clickhouse_url="chdb:///tmp/x", write_keys={"key": "shop"}, **values)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"HEADWATER_CLICKHOUSE_URL": "ftp://me:s3cret@ch.example.com"},
            "bad setting: HEADWATER_CLICKHOUSE_URL must be chdb:///abs/dir or"
            " http(s)://user:pass@host:port/db, got 'ftp://***@ch.example.com'",
        ),
        (
            {"HEADWATER_REDIS_URL": "http://:s3cret@redis.example.com"},
            "bad setting: HEADWATER_REDIS_URL must be a redis:// URL,"
            " got 'http://***@redis.example.com'",
        ),
        (
            {"HEADWATER_CLICKHOUSE_URL": "default:s3cret@ch.example.com:8123"},
            "bad setting: HEADWATER_CLICKHOUSE_URL must be chdb:///abs/dir or"
            " http(s)://user:pass@host:port/db, got '***@ch.example.com:8123'",
        ),
        (
            {"HEADWATER_CLICKHOUSE_URL": "tcp://me:s3c@ret@ch.example.com:9000"},
            "bad setting: HEADWATER_CLICKHOUSE_URL must be chdb:///abs/dir or"
            " http(s)://user:pass@host:port/db, got 'tcp://***@ch.example.com:9000'",
        ),
        (
            {"HEADWATER_REDIS_URL": ":s3cret@redis.example.com:6379"},
            "bad setting: HEADWATER_REDIS_URL must be a redis:// URL,"
            " got '***@redis.example.com:6379'",
        ),
        (
            {"HEADWATER_WRITE_KEYS": "k1:shop,s3cret"},
            "HEADWATER_WRITE_KEYS must be key1:project1,key2:project2; entry 2 is not",
        ),
        (
            {
                "HEADWATER_WRITE_KEYS": "k1:shop",
                "HEADWATER_POSTHOG_HOST": "https://us.i.posthog.com",
                "HEADWATER_POSTHOG_API_KEY": "phc_default",
                "HEADWATER_POSTHOG_PROJECTS": "shop:phc s3cret",
            },
            "bad setting: HEADWATER_POSTHOG_PROJECTS: project 'shop': neither an API key"
            " (no spaces, / or @), a URL nor off",
        ),
    ],
)
def test_a_setting_that_does_not_read_is_named_without_its_secret(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"HEADWATER_CLICKHOUSE_URL": "chdb:///tmp/x", **environ})
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("limits", "blocks"),
    [
        ({"max_rows": 3}, [b"a\n", b"b\nc\nd\n", b"e\n"]),  # three rows fill a block
        ({"max_bytes": 5}, [b"a\n", b"b\nc\n", b"d\ne\n"]),  # so do 5 bytes (two rows of 2)
    ],
)
def test_a_full_block_goes_at_once_and_blocks_are_cut_at_the_limits(
    limits: dict[str, int], blocks: list[bytes]
) -> None:
    inserted: list[bytes] = []

    async def scenario() -> list[bytes]:
        settings: dict[str, Any] = {"max_rows": 1000, "max_bytes": 10**6, **limits}
        committer: GroupCommitter[bytes] = GroupCommitter(
            lambda blocks, token: inserted.append(b"".join(blocks)),
            max_delay=60.0,
            queue_rows=10**6,
            deadline=5.0,
            **settings,
        )
        committer.start()
        await committer.submit(b"a\n", 1, 2)  # after a quiet spell: at once
        rows = (b"b\n", b"c\n", b"d\n", b"e\n")
        later = [asyncio.create_task(committer.submit(row, 1, len(row))) for row in rows]

        async def two_inserts() -> None:
            while len(inserted) < 2:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(two_inserts(), 10)  # not after 60 s: the full block went at once
        before_drain = list(inserted)
        await committer.drain()
        await asyncio.gather(*later)
        return before_drain

    assert asyncio.run(scenario()) == blocks[:2]
    assert inserted == blocks


def test_a_block_retried_with_its_token_is_stored_once(clickhouse: ClickHouse) -> None:
    """The committer retries a block under the same `insert_deduplication_token`: a retry
    of an insert that did store (its answer lost) stores nothing more."""
    db = clickhouse.sharing(database="hw_token")
    db.command("DROP DATABASE IF EXISTS hw_token")
    migrate(db)
    sink = ClickHouseSink(db)
    blocks = [_rows(str(uuid.uuid4()), str(uuid.uuid4())), _rows(str(uuid.uuid4()))]
    sink.insert_events(blocks, "token-1")
    sink.insert_events(blocks, "token-1")  # the retry
    assert db.rows("SELECT count() FROM hw_token.events") == [(3,)]
    sink.insert_events(blocks, "token-2")  # another block that happens to hold the same rows
    assert db.rows("SELECT count() FROM hw_token.events") == [(6,)]
