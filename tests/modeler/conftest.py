"""A database with the gateway's `events` table, filled from the synthetic stream."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from headwater.gateway import migrate
from headwater.gateway._clickhouse import EVENT_COLUMNS
from headwater.modeler import ClickHouse, FileLock, ModelConfig, Runner
from headwater.modeler.synthetic import SyntheticEvent

from .alert_servers import MailServer, WebhookServer

PROJECT = "p"
_numbers = itertools.count()
_encode = msgspec.json.Encoder()


@dataclass
class Warehouse:
    """A test database: load events, run the models, read a mart."""

    clickhouse: ClickHouse
    runner: Runner

    @property
    def db(self) -> str:
        return self.clickhouse.database

    def load(self, events: Iterable[SyntheticEvent], *, project: str = PROJECT) -> None:
        """Insert events as the gateway stores them (one insert, one `inserted_at`)."""
        lines = [
            _encode.encode([project, e.event_id, e.event, e.distinct_id, e.timestamp, e.timestamp,
                            json.dumps(e.properties), "test", "native"])
            for e in events
        ]  # fmt: skip
        if lines:
            self.clickhouse.insert_lines("events", EVENT_COLUMNS, b"\n".join(lines))

    def rows(self, table: str, columns: Iterable[str], *, where: str = "") -> list[tuple[Any, ...]]:
        """A mart's rows (datetimes made UTC-aware), sorted."""
        sql = f"SELECT {', '.join(columns)} FROM {self.db}.{table} {where}"  # noqa: S608
        return sorted(tuple(_aware(v) for v in row) for row in self.clickhouse.rows(sql))


def _aware(value: Any) -> Any:
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) else value


WarehouseFactory = Callable[..., Warehouse]


@pytest.fixture
def warehouse_factory(clickhouse: ClickHouse, tmp_path: Path) -> WarehouseFactory:
    def make(config: ModelConfig | None = None) -> Warehouse:
        database = f"hw_model_{next(_numbers)}"
        shared = clickhouse.sharing(database=database)
        shared.command(f"DROP DATABASE IF EXISTS {database}")
        migrate(shared)
        lock = FileLock(tmp_path / f"{database}.lock")
        return Warehouse(shared, Runner(shared, config or ModelConfig(), lock=lock))

    return make


@pytest.fixture
def warehouse(warehouse_factory: WarehouseFactory) -> Warehouse:
    return warehouse_factory()


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    """A loopback JSON webhook that records what it receives."""
    with WebhookServer() as server:
        yield server


@pytest.fixture
def slack() -> Iterator[WebhookServer]:
    """A loopback stand-in for a Slack incoming webhook."""
    with WebhookServer() as server:
        yield server


@pytest.fixture
def mail() -> Iterator[MailServer]:
    """A loopback SMTP server that records messages."""
    with MailServer() as server:
        yield server
