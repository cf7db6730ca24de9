"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from headwater.sdk.testing import LoopbackReceiver


@pytest.fixture
def receiver() -> Iterator[LoopbackReceiver]:
    """A native-protocol HTTP server on 127.0.0.1 that records what it receives."""
    with LoopbackReceiver() as server:
        yield server
