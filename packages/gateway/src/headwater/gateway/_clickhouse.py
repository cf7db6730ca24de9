"""The gateway's tables and the versioned, idempotent migrations that create and upgrade
them. The client itself is the modeler's `ClickHouse` (one connection class for both)."""

from __future__ import annotations

import logging

from headwater.modeler import ClickHouse

logger = logging.getLogger("headwater.gateway")

EVENT_COLUMNS = (
    "project",
    "event_id",
    "event",
    "distinct_id",
    "timestamp",
    "received_at",
    "properties",
    "lib",
    "source",
)
ERROR_COLUMNS = ("error_id", "project", "received_at", "source", "event_index", "reason", "payload")
CURSOR_COLUMNS = ("project", "inserted_at", "event_id")
FORWARD_DEAD_LETTER_COLUMNS = (
    "project",
    "event_id",
    "event",
    "distinct_id",
    "timestamp",
    "inserted_at",
    "status",
    "reason",
    "message",
)


# -- migrations ----------------------------------------------------------------


def _events_ddl(db: str, on_cluster: str, engine: str, name: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {db}.{name}{on_cluster} (
    project LowCardinality(String),
    event_id UUID,
    event LowCardinality(String),
    distinct_id String,
    timestamp DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    properties String,
    lib LowCardinality(String),
    source LowCardinality(String),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {engine}
PARTITION BY toYYYYMM(timestamp)
ORDER BY (project, toDate(timestamp), event, cityHash64(distinct_id), event_id)
SETTINGS non_replicated_deduplication_window = 10000
"""


def _errors_ddl(db: str, on_cluster: str, engine: str, name: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {db}.{name}{on_cluster} (
    error_id UUID,
    project LowCardinality(String),
    received_at DateTime64(3, 'UTC'),
    source LowCardinality(String),
    event_index Int32,
    reason String,
    payload String,
    replayed_at Nullable(DateTime64(3, 'UTC'))
)
ENGINE = {engine}
PARTITION BY toYYYYMM(received_at)
ORDER BY (project, received_at, error_id)
"""


def _cursors_ddl(db: str, on_cluster: str, engine: str, name: str) -> str:
    # One row per forwarded batch; a project's cursor is its greatest (inserted_at,
    # event_id), which only grows, so reading it needs neither FINAL nor a version.
    return f"""
CREATE TABLE IF NOT EXISTS {db}.{name}{on_cluster} (
    project String,
    inserted_at DateTime64(3, 'UTC'),
    event_id UUID,
    moved_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {engine}
ORDER BY project
"""


def _forward_dead_letters_ddl(db: str, on_cluster: str, engine: str, name: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {db}.{name}{on_cluster} (
    project LowCardinality(String),
    event_id UUID,
    event String,
    distinct_id String,
    timestamp DateTime64(3, 'UTC'),
    inserted_at DateTime64(3, 'UTC'),
    status UInt16,
    reason String,
    message String,
    failed_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {engine}
PARTITION BY toYYYYMM(failed_at)
ORDER BY (project, failed_at, event_id)
"""


def _insert_time_index(table: str, on_cluster: str) -> list[str]:
    # The forwarder reads the rows stored since its cursor. Rows are sorted by event day,
    # and a day's rows mostly arrive together, so a min-max index over `inserted_at` skips
    # the granules of the days nothing arrived for since.
    return [
        f"ALTER TABLE {table}{on_cluster} ADD INDEX IF NOT EXISTS inserted_at_minmax"
        " inserted_at TYPE minmax GRANULARITY 1",
        f"ALTER TABLE {table}{on_cluster} MATERIALIZE INDEX inserted_at_minmax",
    ]


# Embedded, chDB's merges run on the cores that serve requests. The gateway inserts a part
# every few tens of milliseconds; ClickHouse's default merge selector (base 5) rewrites each
# row about log5(parts) times, which cost as much CPU as the inserts themselves. Base 10
# merges wider and rarer: merge CPU per event halves, at the price of a few more active
# parts. A server keeps its defaults (it has cores of its own; older versions lack the
# setting), so there version 3 changes nothing.
EMBEDDED_MERGE_SELECTOR_BASE = 10


def migrations(
    database: str, cluster: str = "", *, embedded: bool = False
) -> list[tuple[int, str, list[str]]]:
    """(version, name, statements) in order; every statement is idempotent."""
    db = database
    base = EMBEDDED_MERGE_SELECTOR_BASE
    merges = [f"ALTER TABLE {db}.events MODIFY SETTING merge_selector_base = {base}"]
    if not cluster:
        return [
            (1, "events", [_events_ddl(db, "", "ReplacingMergeTree(inserted_at)", "events")]),
            (2, "ingest_errors", [_errors_ddl(db, "", "MergeTree", "ingest_errors")]),
            (3, "events merge selector", merges if embedded else []),
            (4, "forwarding", _forwarding(db, "", "ReplacingMergeTree(inserted_at)", "MergeTree")),
        ]
    on = f" ON CLUSTER '{cluster}'"

    def replicated(table: str, engine: str, *args: str) -> str:
        zoo = f"'/clickhouse/tables/{{shard}}/{db}/{table}', '{{replica}}'"
        return f"Replicated{engine}({', '.join([zoo, *args])})"

    def distributed(table: str, key: str) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {db}.{table}{on} AS {db}.{table}_local"
            f" ENGINE = Distributed('{cluster}', {db}, {table}_local, {key})"
        )

    forwarding = [
        *_forwarding(
            db,
            on,
            replicated("forward_cursors_local", "ReplacingMergeTree", "inserted_at"),
            replicated("forward_dead_letters_local", "MergeTree"),
            local="_local",
        ),
        distributed("forward_cursors", "cityHash64(project)"),
        distributed("forward_dead_letters", "rand()"),
    ]
    events_engine = replicated("events_local", "ReplacingMergeTree", "inserted_at")
    errors_engine = replicated("ingest_errors_local", "MergeTree")
    return [
        (
            1,
            "events",
            [
                _events_ddl(db, on, events_engine, "events_local"),
                distributed("events", "cityHash64(distinct_id)"),
            ],
        ),
        (
            2,
            "ingest_errors",
            [
                _errors_ddl(db, on, errors_engine, "ingest_errors_local"),
                distributed("ingest_errors", "rand()"),
            ],
        ),
        (3, "events merge selector", []),  # chDB has no clusters
        (4, "forwarding", forwarding),
    ]


def _forwarding(
    db: str, on_cluster: str, cursors_engine: str, letters_engine: str, *, local: str = ""
) -> list[str]:
    """The forwarder's tables (cursors, dead letters) and the index it reads `events` by."""
    return [
        _cursors_ddl(db, on_cluster, cursors_engine, f"forward_cursors{local}"),
        _forward_dead_letters_ddl(db, on_cluster, letters_engine, f"forward_dead_letters{local}"),
        *_insert_time_index(f"{db}.events{local}", on_cluster),
    ]


def migrate(clickhouse: ClickHouse) -> list[int]:
    """Apply the migrations not yet recorded; returns the versions applied now."""
    db = clickhouse.database
    on = f" ON CLUSTER '{clickhouse.cluster}'" if clickhouse.cluster else ""
    clickhouse.command(f"CREATE DATABASE IF NOT EXISTS {db}{on}")
    clickhouse.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations{on} ("
        " version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3))"
        " ENGINE = ReplacingMergeTree ORDER BY version"
    )
    # The database name is a validated identifier; values are bound parameters.
    found = clickhouse.rows(f"SELECT version FROM {db}.schema_migrations")  # noqa: S608
    done = {version for (version,) in found}
    applied = []
    for version, name, statements in migrations(
        db, clickhouse.cluster, embedded=clickhouse.embedded
    ):
        if version in done:
            continue
        for statement in statements:
            clickhouse.command(statement)
        clickhouse.command(
            f"INSERT INTO {db}.schema_migrations (version, name) VALUES ({version}, %(name)s)",  # noqa: S608
            {"name": name},
        )
        logger.info("migration %d (%s) applied to %s", version, name, db)
        applied.append(version)
    return applied
