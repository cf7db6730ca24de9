"""Where accepted rows go: the `events` and `ingest_errors` tables."""

from __future__ import annotations

from typing import Protocol

from clickhouse_connect.driver.exceptions import ClickHouseError

from headwater.modeler import ClickHouse

from ._clickhouse import ERROR_COLUMNS, EVENT_COLUMNS
from ._errors import SinkUnavailable


class EventSink(Protocol):
    """Blocking inserts of JSONCompactEachRow lines; raise `SinkUnavailable` on failure."""

    def insert_events(self, body: bytes, token: str) -> None: ...

    def insert_errors(self, body: bytes) -> None: ...

    def ping(self) -> bool: ...


class ClickHouseSink:
    """`EventSink` over the gateway's ClickHouse tables."""

    def __init__(self, clickhouse: ClickHouse) -> None:
        self._clickhouse = clickhouse

    def insert_events(self, body: bytes, token: str) -> None:
        self._insert("events", EVENT_COLUMNS, body, token)

    def insert_errors(self, body: bytes) -> None:
        self._insert("ingest_errors", ERROR_COLUMNS, body, None)

    def _insert(self, table: str, columns: tuple[str, ...], body: bytes, token: str | None) -> None:
        try:
            self._clickhouse.insert_lines(table, columns, body, token=token)
        except (ClickHouseError, OSError) as exc:
            raise SinkUnavailable(f"insert into {table} failed: {exc}", retry_after=2) from exc

    def ping(self) -> bool:
        return self._clickhouse.ping()
