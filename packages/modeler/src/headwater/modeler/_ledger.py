"""The modeler's own tables: the run ledger and the watermark of modeled events."""

from __future__ import annotations

from datetime import datetime

from ._clickhouse import ClickHouse, millis

TABLES = (
    """
    CREATE TABLE IF NOT EXISTS {db}.model_runs (
        run_id String,
        model LowCardinality(String),
        partition String,
        status LowCardinality(String),
        rows UInt64,
        duration_ms UInt64,
        error String,
        started_at DateTime64(3, 'UTC'),
        finished_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = MergeTree ORDER BY (started_at, model)
    """,
    """
    CREATE TABLE IF NOT EXISTS {db}.model_state (
        key String,
        watermark DateTime64(3, 'UTC'),
        updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(updated_at) ORDER BY key
    """,
)


class Ledger:
    """Where runs are recorded and the modeled position in `events` is kept."""

    def __init__(self, clickhouse: ClickHouse) -> None:
        self._ch = clickhouse
        self._db = clickhouse.database

    def create(self) -> None:
        for ddl in TABLES:
            self._ch.command(ddl.format(db=self._db))

    def watermark(self) -> datetime | None:
        """The `inserted_at` up to which events were modeled (None: never)."""
        found = self._ch.rows(
            f"SELECT watermark FROM {self._db}.model_state FINAL WHERE key = 'events'"  # noqa: S608
        )
        return found[0][0] if found else None

    def advance(self, watermark: datetime) -> None:
        self._ch.command(
            f"INSERT INTO {self._db}.model_state (key, watermark)"  # noqa: S608
            " VALUES ('events', toDateTime64(%(w)s, 3, 'UTC'))",
            {"w": millis(watermark)},
        )

    def record(
        self,
        *,
        run_id: str,
        model: str,
        partition: str,
        status: str,
        rows: int,
        duration_ms: int,
        error: str,
        started_at: datetime,
    ) -> None:
        self._ch.command(
            f"INSERT INTO {self._db}.model_runs"  # noqa: S608
            " (run_id, model, partition, status, rows, duration_ms, error, started_at)"
            " VALUES (%(run_id)s, %(model)s, %(partition)s, %(status)s, %(rows)s, %(ms)s,"
            " %(error)s, %(started)s)",
            {
                "run_id": run_id,
                "model": model,
                "partition": partition,
                "status": status,
                "rows": rows,
                "ms": duration_ms,
                "error": error[:2000],
                "started": started_at,
            },
        )
