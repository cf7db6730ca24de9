"""Where accepted rows go: the `events` and `ingest_errors` tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from clickhouse_connect.driver.exceptions import ClickHouseError

from headwater.modeler import ClickHouse

from ._clickhouse import ERROR_COLUMNS, EVENT_COLUMNS
from ._errors import SinkUnavailable
from ._events import RowBlock, encode_blocks


class EventSink(Protocol):
    """Blocking inserts; raise `SinkUnavailable` on failure."""

    def insert_events(self, blocks: Sequence[RowBlock], token: str) -> None:
        """Rows of `events` (as one `JSONColumns` body)."""
        ...

    def insert_errors(self, body: bytes) -> None:
        """Rows of `ingest_errors` (JSONCompactEachRow lines)."""
        ...

    def ping(self) -> bool: ...


class ClickHouseSink:
    """`EventSink` over the gateway's ClickHouse tables."""

    def __init__(self, clickhouse: ClickHouse) -> None:
        self._clickhouse = clickhouse

    def insert_events(self, blocks: Sequence[RowBlock], token: str) -> None:
        self._insert("events", EVENT_COLUMNS, encode_blocks(blocks), token, "JSONColumns")

    def insert_errors(self, body: bytes) -> None:
        self._insert("ingest_errors", ERROR_COLUMNS, body, None, "JSONCompactEachRow")

    def _insert(
        self, table: str, columns: tuple[str, ...], body: bytes, token: str | None, fmt: str
    ) -> None:
        try:
            self._clickhouse.insert_lines(table, columns, body, token=token, fmt=fmt)
        except (ClickHouseError, OSError) as exc:
            raise SinkUnavailable(f"insert into {table} failed: {exc}", retry_after=2) from exc

    def ping(self) -> bool:
        return self._clickhouse.ping()
