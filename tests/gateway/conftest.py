"""A real gateway on loopback: uvicorn in a thread, chDB in this process, real Redis."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from headwater.gateway import ClickHouse, Gateway, Settings, create_app

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

    @property
    def database(self) -> str:
        return self.settings.clickhouse_database

    def rows(self, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
        """Query with `{db}` standing for the test's database."""
        return self.clickhouse.rows(sql.replace("{db}", self.database), parameters or None)


def serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    """Serve an ASGI app on a free loopback port from a thread; returns once it listens."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{port}"


GatewayFactory = Callable[..., RunningGateway]


@pytest.fixture
def start_gateway(clickhouse: ClickHouse, redis_url: str) -> Iterator[GatewayFactory]:
    """Start gateways with settings overrides; each gets a database of its own."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(*, redis: bool = True, **overrides: Any) -> RunningGateway:
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
        server, thread, url = serve(create_app(settings, gateway=gateway))
        running.append((server, thread))
        return RunningGateway(url=url, settings=settings, gateway=gateway, clickhouse=shared)

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def gateway(start_gateway: GatewayFactory) -> RunningGateway:
    """A gateway with Redis dedupe and the test write keys."""
    return start_gateway()
