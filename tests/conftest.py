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
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouse]:
    """One chDB directory for the session (a process holds one); tests differ by database."""
    client = ClickHouse.connect(f"chdb://{tmp_path_factory.mktemp('chdb')}", database="headwater")
    yield client
    client.close()
