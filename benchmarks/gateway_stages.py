"""The gateway's stages alone, in this process, on the bodies the load test sends.

Each stage runs for about `seconds` and reports events per second and the CPU it used
(this process's `process_time` over wall time, so 1.0 is one core busy):

- **decode**: the gateway's msgspec decoder of a native JSON body (the SDK's `Batch`, its
  properties left as text: `_native._json_batch`), 100 events a body.
- **redis claim**: the gateway's `RedisDedupeStore.claim()` of 100 ids, `concurrency`
  calls in flight (the gateway's requests overlap too). Redis's own CPU is reported too.
- **clickhouse insert**: the gateway's `ClickHouse.insert_lines()` (chDB, a fresh
  directory, the gateway's migrations) of `JSONColumns` blocks of `block` rows made by
  the gateway's own `Columns.block` and `encode_blocks`, one insert at a time as the
  committer.

Besides these three, the gateway's per-request Python work without I/O is measured
(`parse_native` + `Columns.block` + `encode_blocks`, as `Ingestor.ingest` and the sink do
it) and the Redis `claim` + `confirm` pair that every request makes, to locate the
gateway's costs.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from benchmarks.gateway_server import REDIS_URL, delete_prefix, redis_cpu_seconds
from benchmarks.gateway_workload import run_prefix
from headwater.gateway import ClickHouse, RedisDedupeStore, Settings, migrate
from headwater.gateway._clickhouse import EVENT_COLUMNS
from headwater.gateway._events import Columns, Context, EventWindow, RowBlock, encode_blocks, now
from headwater.gateway._native import _json_batch, parse_native


@dataclass
class Stage:
    """One stage's rate."""

    name: str
    what: str
    events: int
    seconds: float
    cpu: float  # cores of this process busy (process_time / wall)
    redis_cpu: float = 0.0  # cores of the Redis server busy

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def _repeat(step: Callable[[], int], seconds: float) -> tuple[int, float, float]:
    """Call `step` (which returns events done) for about `seconds`: (events, wall, cpu)."""
    step()  # warm-up
    events = 0
    cpu = time.process_time()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        events += step()
    wall = time.perf_counter() - start
    return events, wall, (time.process_time() - cpu) / wall


def decode_stage(bodies: list[bytes], seconds: float) -> Stage:
    decoder = _json_batch
    cursor = iter(range(1 << 62))

    def step() -> int:
        return len(decoder.decode(bodies[next(cursor) % len(bodies)]).batch)

    events, wall, cpu = _repeat(step, seconds)
    what = "msgspec decode as the gateway does (properties left as text), 100-event bodies"
    return Stage("decode", what, events, wall, cpu)


WINDOW = EventWindow.of(Settings(clickhouse_url="chdb:///unused"))  # the default window


def _context() -> Context:
    return Context(project="bench", source="native", lib="bench", received_at=now(),
                   sent_at=None, max_event_bytes=1_000_000, window=WINDOW)  # fmt: skip


def row_block(body: bytes) -> RowBlock:
    """A body's events as the gateway's rows (every workload event passes the checks)."""
    columns, _, _ = parse_native(body, "json")
    assert isinstance(columns, Columns)
    block = columns.block(_context())
    assert block is not None
    return block


def rows_stage(bodies: list[bytes], seconds: float) -> Stage:
    cursor = iter(range(1 << 62))

    def step() -> int:
        block = row_block(bodies[next(cursor) % len(bodies)])
        encode_blocks([block])
        return len(block)

    events, wall, cpu = _repeat(step, seconds)
    what = "`parse_native` + `Columns.block` + `encode_blocks`"
    return Stage("gateway python", what, events, wall, cpu)


async def _redis_loop(
    store: RedisDedupeStore, *, confirm: bool, concurrency: int, seconds: float
) -> tuple[int, float]:
    events = 0
    stop = time.perf_counter() + seconds
    prefix = run_prefix().decode()

    async def worker() -> None:
        nonlocal events
        while time.perf_counter() < stop:
            ids = [f"{prefix}-{n:012x}" for n in range(events, events + 100)]
            events += len(ids)  # before the await: no two workers take the same ids
            ticket = store.ticket("bench", ids)
            await store.claim("bench", ids, ticket)
            if confirm:
                await store.confirm([ticket])

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return events, time.perf_counter() - start


def redis_stage(seconds: float, *, confirm: bool, concurrency: int) -> Stage:
    prefix = f"hwbench-stage-{uuid.uuid4().hex[:12]}"

    async def run() -> tuple[int, float]:
        store = RedisDedupeStore(REDIS_URL, prefix=prefix, ttl=1800, pending_ttl=60)
        try:
            await _redis_loop(store, confirm=confirm, concurrency=concurrency, seconds=0.3)
            return await _redis_loop(
                store, confirm=confirm, concurrency=concurrency, seconds=seconds
            )
        finally:
            await store.close()

    redis_cpu = redis_cpu_seconds()
    cpu = time.process_time()
    events, wall = asyncio.run(run())
    stage = Stage(
        "redis claim + confirm" if confirm else "redis claim",
        f"`RedisDedupeStore.{'claim` + `confirm' if confirm else 'claim'}` of 100 ids, "
        f"{concurrency} in flight",
        events,
        wall,
        (time.process_time() - cpu) / wall,
        (redis_cpu_seconds() - redis_cpu) / wall,
    )
    delete_prefix(prefix)
    return stage


def insert_stage(bodies: list[bytes], seconds: float, *, block: int, scratch: Path) -> Stage:
    """Insert blocks of `block` rows (ids never repeated) into a fresh chDB `events` table
    in a new directory under `scratch`, which the caller deletes after every measurement:
    a burst of deleted files slows ext4's file creation, and with it every chDB insert, for
    about 30 s (the kernel skips recently freed inodes).

    Only the inserts are timed, not the making of each block.
    """
    blocks = [row_block(body) for body in bodies]
    prefix = run_prefix().decode()
    directory = Path(tempfile.mkdtemp(prefix="hw-stage-chdb-", dir=scratch))
    clickhouse = ClickHouse.connect(f"chdb://{directory}", database="headwater")
    events = 0
    wall = cpu = 0.0
    try:
        migrate(clickhouse)
        while wall < seconds or events < 2 * block:
            payload = encode_blocks(_fresh(blocks, prefix, events, block))
            started, cpu_started = time.perf_counter(), time.process_time()
            token = uuid.uuid4().hex
            clickhouse.insert_lines(
                "events", EVENT_COLUMNS, payload, token=token, fmt="JSONColumns"
            )
            wall += time.perf_counter() - started
            cpu += time.process_time() - cpu_started
            events += block
        ((stored,),) = clickhouse.rows("SELECT count() FROM headwater.events")
    finally:
        clickhouse.close()
    if stored != events:
        raise AssertionError(f"{events} rows inserted, {stored} in the table")
    return Stage(
        f"clickhouse insert {block:,}",
        f"chDB `insert_lines` of {block:,}-row JSONColumns blocks",
        events,
        wall,
        cpu / wall,
    )


def _fresh(blocks: list[RowBlock], prefix: str, first: int, count: int) -> list[RowBlock]:
    """`count` rows taken in turn from `blocks`, the `first`-th on, each with a new id."""
    taken: list[RowBlock] = []
    number = first
    while number < first + count:
        block = blocks[number // 100 % len(blocks)]
        size = min(len(block), first + count - number)
        ids = [f"{prefix}-{n:012x}" for n in range(number, number + size)]
        taken.append(msgspec.structs.replace(block.take(list(range(size))), event_ids=ids))
        number += size
    return taken
