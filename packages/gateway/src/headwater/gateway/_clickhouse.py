"""ClickHouse access: one clickhouse-connect client (chDB embedded or a server) and the
versioned, idempotent migrations that create and upgrade the gateway's tables."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client as ConnectClient
from clickhouse_connect.driver.exceptions import ClickHouseError

from ._errors import ConfigError, SinkUnavailable

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


class ClickHouse:
    """A clickhouse-connect client used by one thread at a time (chDB is not re-entrant)."""

    def __init__(
        self,
        client: ConnectClient,
        *,
        database: str,
        cluster: str = "",
        lock: threading.Lock | None = None,
    ) -> None:
        self.database = database
        self.cluster = cluster
        self._client = client
        self._lock = lock or threading.Lock()

    @classmethod
    def connect(cls, url: str, *, database: str, cluster: str = "") -> ClickHouse:
        """Open `url` (`chdb:///dir` or `http(s)://user:pass@host:port/db`)."""
        try:
            # Concurrent queries from several threads must not share an HTTP session.
            if url.startswith("chdb://"):
                client = clickhouse_connect.get_client(dsn=url)
            else:
                client = clickhouse_connect.get_client(dsn=url, autogenerate_session_id=False)
        except ClickHouseError as exc:
            raise SinkUnavailable(f"cannot open ClickHouse at {_redact(url)}: {exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"HEADWATER_CLICKHOUSE_URL {_redact(url)}: {exc}") from exc
        return cls(client, database=database, cluster=cluster)

    def sharing(self, *, database: str) -> ClickHouse:
        """The same connection, for another database (tests, the embedded modeler)."""
        return ClickHouse(self._client, database=database, cluster=self.cluster, lock=self._lock)

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        """Run a statement that returns nothing."""
        with self._lock:
            self._client.command(sql, parameters=parameters)

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a query; its rows as tuples."""
        with self._lock:
            return [tuple(r) for r in self._client.query(sql, parameters=parameters).result_rows]

    def insert_lines(
        self, table: str, columns: Sequence[str], body: bytes, *, token: str | None = None
    ) -> None:
        """Insert `JSONCompactEachRow` lines; `token` makes a retried insert a no-op."""
        settings: dict[str, Any] = {"date_time_input_format": "best_effort"}
        if token is not None:
            settings["insert_deduplication_token"] = token
        with self._lock:
            self._client.raw_insert(
                f"{self.database}.{table}",
                list(columns),
                insert_block=body,
                fmt="JSONCompactEachRow",
                settings=settings,
            )

    def ping(self) -> bool:
        """Whether ClickHouse answers."""
        try:
            with self._lock:
                return bool(self._client.ping())
        except Exception:  # a health probe reports, never raises  # noqa: BLE001
            return False

    def close(self) -> None:
        with self._lock:
            self._client.close()


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.split('@', 1)[1]}"


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


def migrations(database: str, cluster: str = "") -> list[tuple[int, str, list[str]]]:
    """(version, name, statements) in order; every statement is idempotent."""
    db = database
    if not cluster:
        return [
            (1, "events", [_events_ddl(db, "", "ReplacingMergeTree(inserted_at)", "events")]),
            (2, "ingest_errors", [_errors_ddl(db, "", "MergeTree", "ingest_errors")]),
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
    for version, name, statements in migrations(db, clickhouse.cluster):
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
