"""ClickHouse access shared by the modeler and the gateway: one clickhouse-connect client
(chDB embedded or a server), used by one thread at a time."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client as ConnectClient
from clickhouse_connect.driver.exceptions import ClickHouseError

from ._errors import ConfigError, WarehouseUnavailable

# Embedded, an insert shares two cores with the gateway's event loop, Redis and chDB's
# merges: these settings cut chDB's CPU per inserted row by 15-20% (benchmarks/
# BENCHMARKS.md). The blocks are a few thousand rows, too small for parallel parsing's
# threads to pay for their hand-offs, and their rows are distinct already (the gateway
# deduplicates ids before it inserts), so a ReplacingMergeTree need not collapse each block
# on the way in: merges still do, as ever. (While dedupe is bypassed, Redis down and
# `HEADWATER_REDIS_FAILURE=accept`, copies within one block wait for a merge too, as
# copies across blocks always did; the modeler reads with FINAL.)
EMBEDDED_INSERT_SETTINGS: dict[str, Any] = {
    "input_format_parallel_parsing": 0,
    "optimize_on_insert": 0,
    "max_insert_threads": 1,
    "max_threads": 1,
}


PING_WAIT_SECONDS = 2.0


class ClickHouse:
    """A clickhouse-connect client; chDB is not re-entrant, so calls take a lock."""

    def __init__(
        self,
        client: ConnectClient,
        *,
        database: str,
        cluster: str = "",
        embedded: bool = False,
        lock: threading.Lock | None = None,
    ) -> None:
        self.database = database
        self.cluster = cluster
        self.embedded = embedded  # chDB in this process: its merges share our cores
        self._client = client
        self._lock = lock or threading.Lock()

    @classmethod
    def connect(cls, url: str, *, database: str, cluster: str = "") -> ClickHouse:
        """Open `url` (`chdb:///dir` or `http(s)://user:pass@host:port/db`)."""
        try:
            if url.startswith("chdb://"):
                client = clickhouse_connect.get_client(dsn=url)
            else:
                # Concurrent queries from several threads must not share an HTTP session.
                client = clickhouse_connect.get_client(dsn=url, autogenerate_session_id=False)
        except ClickHouseError as exc:
            raise WarehouseUnavailable(f"cannot open ClickHouse at {redact(url)}: {exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"HEADWATER_CLICKHOUSE_URL {redact(url)}: {exc}") from exc
        return cls(client, database=database, cluster=cluster, embedded=url.startswith("chdb://"))

    def sharing(self, *, database: str) -> ClickHouse:
        """The same connection, for another database (tests; the gateway's embedded modeler)."""
        return ClickHouse(
            self._client,
            database=database,
            cluster=self.cluster,
            embedded=self.embedded,
            lock=self._lock,
        )

    def command(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        *,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Run a statement that returns nothing (with ClickHouse `settings` for it)."""
        with self._lock:
            self._client.command(sql, parameters=parameters, settings=settings)

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a query; its rows as tuples."""
        with self._lock:
            result = self._client.query(sql, parameters=parameters)
        return [tuple(row) for row in result.result_rows]

    def value(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        """The first column of the first row (None for no rows)."""
        found = self.rows(sql, parameters)
        return found[0][0] if found else None

    def insert_lines(
        self,
        table: str,
        columns: Sequence[str],
        body: bytes,
        *,
        token: str | None = None,
        fmt: str = "JSONCompactEachRow",
    ) -> None:
        """Insert JSON rows: `JSONCompactEachRow` lines, or a `JSONColumns` object (`fmt`);
        `token` makes a retried insert a no-op."""
        settings: dict[str, Any] = {
            "date_time_input_format": "best_effort",
            # a backfill or a late batch may span many monthly partitions in one block
            "max_partitions_per_insert_block": 0,
            # an object where a String column is expected is kept as its JSON text
            "input_format_json_read_objects_as_strings": 1,
        }
        if token is not None:
            settings["insert_deduplication_token"] = token
        if self.cluster:
            # A Distributed table answers once every shard has its rows, not once they
            # are queued on this node: acknowledged means stored, and the forwarder's
            # `inserted_at` order holds (it reads rows only once they are visible).
            settings["insert_distributed_sync"] = 1
        if self.embedded:
            settings.update(EMBEDDED_INSERT_SETTINGS)
        with self._lock:
            self._client.raw_insert(
                f"{self.database}.{table}",
                list(columns),
                insert_block=body,
                fmt=fmt,
                settings=settings,
            )

    def ping(self) -> bool:
        """Whether ClickHouse answers."""
        # A call that holds the connection this long (an insert that hangs) means: not ready.
        if not self._lock.acquire(timeout=PING_WAIT_SECONDS):
            return False
        try:
            return bool(self._client.ping())
        except Exception:  # a health probe reports, never raises  # noqa: BLE001
            return False
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._client.close()


def millis(moment: datetime) -> str:
    """A DateTime64(3) literal: clickhouse-connect would drop the milliseconds of a datetime."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def redact(url: str) -> str:
    """`url` without its credentials: all before its last `@` (after a scheme, if any).
    A password may hold `@` or `/` unescaped: better too much hidden than any of it shown."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}"
