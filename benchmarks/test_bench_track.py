"""The cost of one event on the caller's thread: Headwater's `track()` and `capture()`
against `posthog.Posthog(send=False).capture()`, on the same event, side by side.

    uv run --frozen pytest benchmarks/test_bench_track.py --benchmark-enable

Every contestant runs the same fixed schedule (`ROUNDS` rounds of `ITERATIONS` calls, after
`WARMUP_ROUNDS`), so that the figures are per call and comparable. Our idle client has a
queue with room for every call and batch limits it never reaches, so that its consumer
thread sleeps throughout: like posthog with `send=False`, nothing is sent while the
caller is timed. After the run each test checks that every call was accepted (nothing
dropped), so that a full queue cannot flatter our figure. `test_headwater_track_delivering`
measures the same call while the consumer delivers to a receiver in another process.
`test_headwater_track_spooled` and `test_headwater_capture_spooled` time the calls with the
durable spool on (`spool_dir` under pytest's tmp_path): each call writes its event to a
segment file before it returns.
Without `--benchmark-enable` (the default in `addopts`) each test makes one call: a smoke test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import posthog
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks.receivers import ReceiverProcess, closed_port_url
from benchmarks.workload import (
    DISTINCT_ID,
    EVENT_NAME,
    ORDER,
    ORDER_WITHOUT_COUPON,
    PROPERTIES,
)
from headwater.sdk import Client, ClientOptions

ROUNDS = 200
ITERATIONS = 1_000
WARMUP_ROUNDS = 20
CALLS = (WARMUP_ROUNDS + ROUNDS) * ITERATIONS + 1  # pedantic makes one more call for its result

GIB = 1024 * 1024 * 1024

pytestmark = pytest.mark.benchmark(group="track")


def _run(benchmark: BenchmarkFixture, call: Any, *args: Any, **kwargs: Any) -> int:
    """Time `call` on the fixed schedule; returns how many calls were made."""
    benchmark.pedantic(  # type: ignore[no-untyped-call]  # pytest-benchmark has no annotations
        call,
        args=args,
        kwargs=kwargs,
        rounds=ROUNDS,
        iterations=ITERATIONS,
        warmup_rounds=WARMUP_ROUNDS,
    )
    return 1 if benchmark.disabled else CALLS  # disabled: one call, as a smoke test


def _assert_all_queued(client: Client, calls: int) -> None:
    stats = client.stats()
    assert stats.dropped == 0, stats
    assert stats.enqueued == stats.queued == calls, stats


def _assert_all_spooled(client: Client, calls: int) -> None:
    stats = client.stats()
    assert stats.dropped == 0, stats
    assert stats.enqueued == stats.spooled == calls, stats
    assert stats.queued == 0, stats


def _idle_options(**changes: Any) -> ClientOptions:
    """Room for every call, no batch ever full, no timer: the consumer sleeps throughout."""
    return ClientOptions(
        max_queue_events=2 * CALLS,
        max_queue_bytes=GIB,
        max_batch_events=2 * CALLS,
        max_batch_bytes=GIB,
        flush_interval=3600,
        **changes,
    )


@pytest.fixture
def idle_client() -> Iterator[Client]:
    """A client whose consumer sleeps: room for every call, no batch ever full, no timer."""
    client = Client("bench-write-key", host=closed_port_url(), options=_idle_options())
    yield client
    client.shutdown(timeout=0)  # the queued events are thrown away: the test counted them


@pytest.fixture
def spooled_client(tmp_path: Path) -> Iterator[Client]:
    """An idle client with the durable spool on: every call appends to a segment file."""
    options = _idle_options(spool_dir=tmp_path / "spool", spool_max_bytes=GIB)
    client = Client("bench-write-key", host=closed_port_url(), options=options)
    yield client
    client.shutdown(timeout=0)  # the spooled events stay on disk, in pytest's tmp_path


@pytest.fixture
def posthog_client() -> Iterator[Any]:
    """posthog's own client, keeping events instead of sending them (`send=False`)."""
    client = posthog.Posthog(project_api_key="phc_bench", host=closed_port_url(), send=False)
    yield client
    client.shutdown()


def test_headwater_track(benchmark: BenchmarkFixture, idle_client: Client) -> None:
    calls = _run(benchmark, idle_client.track, ORDER, distinct_id=DISTINCT_ID)
    _assert_all_queued(idle_client, calls)


def test_headwater_track_none_property(benchmark: BenchmarkFixture, idle_client: Client) -> None:
    """The same order without its optional coupon: `null` in the JSON (see the NaN check)."""
    calls = _run(benchmark, idle_client.track, ORDER_WITHOUT_COUPON, distinct_id=DISTINCT_ID)
    _assert_all_queued(idle_client, calls)


def test_headwater_capture(benchmark: BenchmarkFixture, idle_client: Client) -> None:
    calls = _run(
        benchmark, idle_client.capture, EVENT_NAME, distinct_id=DISTINCT_ID, properties=PROPERTIES
    )
    _assert_all_queued(idle_client, calls)


def test_headwater_track_spooled(benchmark: BenchmarkFixture, spooled_client: Client) -> None:
    calls = _run(benchmark, spooled_client.track, ORDER, distinct_id=DISTINCT_ID)
    _assert_all_spooled(spooled_client, calls)


def test_headwater_capture_spooled(benchmark: BenchmarkFixture, spooled_client: Client) -> None:
    calls = _run(
        benchmark,
        spooled_client.capture,
        EVENT_NAME,
        distinct_id=DISTINCT_ID,
        properties=PROPERTIES,
    )
    _assert_all_spooled(spooled_client, calls)


def test_posthog_capture(benchmark: BenchmarkFixture, posthog_client: Any) -> None:
    _run(
        benchmark,
        posthog_client.capture,
        EVENT_NAME,
        distinct_id=DISTINCT_ID,
        properties=PROPERTIES,
    )
    assert posthog_client.capture(EVENT_NAME, distinct_id=DISTINCT_ID, properties=PROPERTIES)


def test_headwater_track_delivering(benchmark: BenchmarkFixture) -> None:
    """`track()` while the consumer sends batches of 500 to a receiver in another process."""
    with ReceiverProcess("fast") as receiver:
        client = Client(
            "bench-write-key",
            host=receiver.url,
            options=ClientOptions(max_queue_events=2 * CALLS, max_queue_bytes=GIB),
        )
        calls = _run(benchmark, client.track, ORDER, distinct_id=DISTINCT_ID)
        assert client.flush(timeout=30)
        stats = client.stats()
        client.shutdown()
    assert stats.dropped == 0, stats
    assert stats.sent == stats.enqueued == calls == receiver.received, stats
