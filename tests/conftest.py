"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from headwater.modeler import ClickHouse
from headwater.sdk.testing import LoopbackReceiver
from tests.redis_server import test_redis


@pytest.fixture
def receiver() -> Iterator[LoopbackReceiver]:
    """A native-protocol HTTP server on 127.0.0.1 that records what it receives."""
    with LoopbackReceiver() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Redis on 127.0.0.1:6379, or a redis-server this session starts on a free port."""
    with test_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session's chDB directory: a process can open one, so every test shares it."""
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture(scope="session")
def clickhouse(chdb_url: str) -> Iterator[ClickHouse]:
    """The session's ClickHouse; tests differ by database."""
    client = ClickHouse.connect(chdb_url, database="headwater")
    yield client
    client.close()
