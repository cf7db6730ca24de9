"""A real gateway on loopback: uvicorn in a thread, chDB in this process, real Redis."""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from headwater.gateway import ClickHouse, Gateway, Settings, create_app
from headwater.gateway._embedded import serving

WRITE_KEY = "test-key"
PROJECT = "proj"
_databases = itertools.count()


@dataclass
class RunningGateway:
    """A gateway serving on 127.0.0.1, with its settings and parts."""

    url: str
    settings: Settings
    gateway: Gateway
    clickhouse: ClickHouse
    stop: Callable[[], None]  # stop serving now (the test's end stops it otherwise)

    @property
    def database(self) -> str:
        return self.settings.clickhouse_database

    def rows(self, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
        """Query with `{db}` standing for the test's database."""
        return self.clickhouse.rows(sql.replace("{db}", self.database), parameters or None)


GatewayFactory = Callable[..., RunningGateway]


@pytest.fixture
def start_gateway(clickhouse: ClickHouse, redis_url: str) -> Iterator[GatewayFactory]:
    """Start gateways with settings overrides; each gets a database of its own."""
    running = contextlib.ExitStack()

    def start(
        *, redis: bool = True, fast_path: bool = True, database: str = "", **overrides: Any
    ) -> RunningGateway:
        """A new gateway; on the `database` of an earlier one when named (a restart)."""
        if not database:
            database = f"hw_test_{next(_databases)}_{int(time.time() * 1000) % 100_000_000}"
            clickhouse.command(f"DROP DATABASE IF EXISTS {database}")
        values: dict[str, Any] = {
            "clickhouse_url": "chdb:///unused",  # the shared client below is used instead
            "clickhouse_database": database,
            "write_keys": {WRITE_KEY: PROJECT, "other-key": "other"},
            "redis_url": redis_url if redis else "",
            "commit_max_delay_ms": 5,
            "redis_prefix": database,
            "model_schedule": False,
            **overrides,
        }
        settings = Settings(**values)
        shared = clickhouse.sharing(database=database)
        gateway = Gateway(settings, clickhouse=shared)
        app = create_app(settings, gateway=gateway, fast_path=fast_path)
        own = contextlib.ExitStack()
        url = own.enter_context(serving(app))
        running.callback(own.close)
        return RunningGateway(
            url=url, settings=settings, gateway=gateway, clickhouse=shared, stop=own.close
        )

    yield start
    running.close()


@pytest.fixture
def gateway(start_gateway: GatewayFactory) -> RunningGateway:
    """A gateway with Redis dedupe and the test write keys."""
    return start_gateway()


@dataclass(frozen=True)
class Stored:
    """One row of `events`, its properties parsed and its times in UTC."""

    project: str
    event_id: str
    event: str
    distinct_id: str
    timestamp: datetime
    received_at: datetime
    properties: dict[str, Any]
    lib: str
    source: str


def stored(gw: RunningGateway) -> dict[str, Stored]:
    """Every stored event by event id."""
    rows = gw.rows(
        "SELECT project, toString(event_id), event, distinct_id, timestamp, received_at,"
        " properties, lib, source FROM {db}.events FINAL"
    )
    return {
        r[1]: Stored(
            project=r[0],
            event_id=r[1],
            event=r[2],
            distinct_id=r[3],
            timestamp=r[4].replace(tzinfo=UTC),
            received_at=r[5].replace(tzinfo=UTC),
            properties=json.loads(r[6]),
            lib=r[7],
            source=r[8],
        )
        for r in rows
    }


def metric(gw: RunningGateway, name: str) -> float:
    """One sample of /metrics (0 when the series has no sample yet)."""
    for line in httpx.get(gw.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0
