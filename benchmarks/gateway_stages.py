"""The gateway's stages alone, in this process, on the bodies the load test sends.

Each stage runs for about `seconds` and reports events per second and the CPU it used
(this process's `process_time` over wall time, so 1.0 is one core busy):

- **decode**: the gateway's msgspec decoder of a native JSON body (the SDK's `Batch`, its
  properties left as text: `_native._json_batch`), 100 events a body.
- **redis claim**: the gateway's `RedisDedupeStore.claim()` of 100 ids, `concurrency`
  calls in flight (the gateway's requests overlap too). Redis's own CPU is reported too.
- **clickhouse insert**: the gateway's `ClickHouse.insert_lines()` (chDB, a fresh
  directory, the gateway's migrations) of JSONCompactEachRow blocks of `block` rows made
  by the gateway's own `to_row` and row encoder, one insert at a time as the committer.

Besides these three, the gateway's per-event Python work without I/O is measured
(`parse_native` + `to_row` + row encode, as `Ingestor.ingest` does it) and the Redis
`claim` + `confirm` pair that every request makes, to locate the gateway's costs.
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
from headwater.gateway import ClickHouse, RedisDedupeStore, migrate
from headwater.gateway._clickhouse import EVENT_COLUMNS
from headwater.gateway._events import Context, EventRow, now, to_row
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


def _context() -> Context:
    return Context(project="bench", source="native", lib="bench", received_at=now(),
                   sent_at=None, max_event_bytes=1_000_000)  # fmt: skip


_row_encoder = msgspec.json.Encoder()


def encoded_rows(body: bytes) -> list[bytes]:
    """A body's events as the JSONCompactEachRow lines the gateway inserts."""
    items, _, _ = parse_native(body, "json")
    ctx = _context()
    lines = []
    for item in items:
        row = to_row(item, ctx)  # type: ignore[arg-type]  # every workload event is valid
        assert isinstance(row, EventRow), row
        lines.append(_row_encoder.encode(row))
    return lines


def rows_stage(bodies: list[bytes], seconds: float) -> Stage:
    cursor = iter(range(1 << 62))

    def step() -> int:
        return len(encoded_rows(bodies[next(cursor) % len(bodies)]))

    events, wall, cpu = _repeat(step, seconds)
    return Stage("gateway python", "`parse_native` + `to_row` + row encode", events, wall, cpu)


async def _redis_loop(
    store: RedisDedupeStore, *, confirm: bool, concurrency: int, seconds: float
) -> tuple[int, float]:
    events = 0
    stop = time.perf_counter() + seconds
    prefix = run_prefix().decode()

    async def worker() -> None:
        nonlocal events
        while time.perf_counter() < stop:
            keys = [f"bench:{prefix}-{n:012x}" for n in range(events, events + 100)]
            events += len(keys)  # before the await: no two workers take the same ids
            ticket = store.ticket(keys)
            await store.claim(keys, ticket)
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


def _row_templates(bodies: list[bytes]) -> list[bytes]:
    """Encoded rows with `%s-%012x` where the event id was (a fresh id per row later)."""
    templates = []
    for body in bodies:
        items, _, _ = parse_native(body, "json")
        for item, line in zip(items, encoded_rows(body), strict=True):
            event_id = str(item.event_id).encode()
            templates.append(line.replace(b"%", b"%%").replace(event_id, b"%s-%012x"))
    return templates


def insert_stage(bodies: list[bytes], seconds: float, *, block: int, scratch: Path) -> Stage:
    """Insert blocks of `block` rows (ids never repeated) into a fresh chDB `events` table
    in a new directory under `scratch`, which the caller deletes after every measurement:
    a burst of deleted files slows ext4's file creation, and with it every chDB insert, for
    about 30 s (the kernel skips recently freed inodes).

    Only the inserts are timed, not the making of each block.
    """
    templates = _row_templates(bodies)
    prefix = run_prefix()
    directory = Path(tempfile.mkdtemp(prefix="hw-stage-chdb-", dir=scratch))
    clickhouse = ClickHouse.connect(f"chdb://{directory}", database="headwater")
    events = 0
    wall = cpu = 0.0
    try:
        migrate(clickhouse)
        while wall < seconds or events < 2 * block:
            payload = b"\n".join(
                templates[n % len(templates)] % (prefix, n) for n in range(events, events + block)
            )
            started, cpu_started = time.perf_counter(), time.process_time()
            clickhouse.insert_lines("events", EVENT_COLUMNS, payload, token=uuid.uuid4().hex)
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
        f"chDB `insert_lines` of {block:,}-row JSONCompactEachRow blocks",
        events,
        wall,
        cpu / wall,
    )
