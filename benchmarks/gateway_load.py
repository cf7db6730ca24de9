"""The gateway under load from another process, with Redis dedupe and embedded ClickHouse.

    uv run --frozen python -m benchmarks.gateway_load [--seconds 20] [--connections 64,128]

One run, in order (about 3 minutes with the defaults):

1. Wait (up to 5 minutes) for a second in which the machine's cores are under 15% busy.
2. **Stage limits** in this process: msgspec decode, Redis claim, ClickHouse (chDB)
   insert, each alone (`benchmarks.gateway_stages`), plus the gateway's per-event Python
   work and the Redis claim + confirm pair, to say where the gateway's time goes.
3. `headwater serve` in a child process (`benchmarks.gateway_server`): fresh chDB
   directory, Redis on 127.0.0.1:6379 under a prefix of its own, one write key.
4. **batch**: keep-alive connections post 100-event bodies back to back for `--seconds`
   (after a 3 s warm-up), once per `--connections` value: events stored per second. The
   best of these whose events were all claimed in Redis is the sustained rate.
5. **half load**: the same bodies at a fixed arrival rate of half the sustained rate,
   open loop: latency p50/p90/p99/max, measured from each request's scheduled time.
   Every phase also reports the gateway's own p99 (arrival to answer, the bucket of
   `headwater_request_duration_seconds` that holds it), without the time a request
   waited for one of the client's connections.
6. **single**: 1-event bodies back to back, once per `--single-connections` value.
7. **empty**: `{"batch": []}` back to back: the HTTP stack's floor, nothing to store.
8. **duplicates**: 100-event bodies whose ids were all stored in step 4, back to back.
9. Stop the gateway (SIGINT: it drains), open its chDB directory here and check that the
   `events` table holds exactly the events the gateway acknowledged as accepted, each
   once; delete the run's Redis keys.

Every event id is unique unless duplicated on purpose (step 8). The load generator
(`benchmarks.gateway_client`, raw asyncio streams) is this process; it, the gateway and
Redis share the machine's two cores, and each phase reports the CPU each of them used
and what other processes took meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.gateway_client import LoadGenerator, Tally
from benchmarks.gateway_server import (
    WRITE_KEY,
    GatewayProcess,
    machine_cpu_seconds,
    redis_cpu_seconds,
    wait_until_idle,
)
from benchmarks.gateway_stages import (
    Stage,
    decode_stage,
    insert_stage,
    redis_stage,
    rows_stage,
)
from benchmarks.gateway_workload import Bodies, sample_bodies

BATCH = 100
LIMIT_STAGES = ("decode", "redis claim", "clickhouse insert")  # the three stages


@dataclass
class Phase:
    """One load phase: the client's tally and what the gateway, Redis and the rest did."""

    name: str
    what: str
    size: int
    tally: Tally
    gateway_cpu: float  # cores, over the phase
    loop_cpu: float  # cores: the gateway's main thread (event loop, every line of Python)
    redis_cpu: float  # cores
    machine_cpu: float  # cores, every process
    metrics: dict[str, float] = field(default_factory=dict)  # deltas over the phase
    threads: dict[str, float] = field(default_factory=dict)  # the gateway's, cores by name

    @property
    def events_per_s(self) -> float:
        return self.tally.accepted / self.tally.elapsed

    @property
    def requests_per_s(self) -> float:
        return self.tally.requests / self.tally.elapsed

    @property
    def client_cpu(self) -> float:
        return self.tally.cpu_seconds / self.tally.elapsed

    @property
    def other_cpu(self) -> float:
        return max(0.0, self.machine_cpu - self.gateway_cpu - self.client_cpu - self.redis_cpu)

    @property
    def bypassed(self) -> int:
        """Events accepted without a Redis claim (Redis failed and the gateway let them in)."""
        return int(self.metrics.get("headwater_dedupe_bypassed_total", 0.0))

    def per_unit_us(self, cores: float) -> float:
        """µs of `cores` per stored event, or per request when none was stored."""
        per = self.tally.accepted or self.tally.requests
        return 1e6 * cores * self.tally.elapsed / max(per, 1)

    def loop_stalls(self, seconds: float) -> int:
        """Times the gateway's event loop woke a 100 ms timer `seconds` or more late."""
        name = "headwater_event_loop_lag_seconds"
        total = self.metrics.get(f"{name}_count", 0.0)
        return int(total - self.metrics.get(f'{name}_bucket{{le="{seconds}"}}', total))

    def gateway_percentile(self, q: float) -> str:
        """The gateway's own `q` latency (arrival to answer, every route), as the upper
        bound of its histogram bucket: "≤ 150" ms. The client's figures add the time a
        request waited for a free connection."""
        buckets: dict[float, float] = collections.defaultdict(float)
        for key, count in self.metrics.items():
            if key.startswith("headwater_request_duration_seconds_bucket{"):
                buckets[float(key.split('le="')[1].split('"')[0])] += count
        total = buckets.get(float("inf"), 0.0)
        if not total:
            return "-"
        bound = min(le for le, count in buckets.items() if count >= q * total)
        return f"≤ {1000 * bound:g}" if bound != float("inf") else "> 10000"

    def mean_commit(self) -> tuple[float, float]:
        """(rows per insert, ms per insert) of the group commits during the phase."""
        inserts = self.metrics.get("headwater_commit_rows_count", 0.0)
        if not inserts:
            return 0.0, 0.0
        rows = self.metrics["headwater_commit_rows_sum"] / inserts
        return rows, 1000 * self.metrics["headwater_commit_seconds_sum"] / inserts


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if not k.endswith("_created")}


def measure(
    gateway: GatewayProcess, name: str, what: str, size: int, run: Callable[[], Tally]
) -> Phase:
    """Run one phase; take CPU times and the gateway's metrics around it."""
    metrics, (gateway_cpu, loop_cpu) = gateway.metrics(), gateway.cpu_seconds()
    redis_cpu, machine_cpu = redis_cpu_seconds(), machine_cpu_seconds()[0]
    threads = gateway.thread_cpu_seconds()
    tally = run()
    elapsed = tally.elapsed
    gateway_after, loop_after = gateway.cpu_seconds()
    threads_after = gateway.thread_cpu_seconds()
    return Phase(
        name=name,
        what=what,
        size=size,
        tally=tally,
        gateway_cpu=(gateway_after - gateway_cpu) / elapsed,
        loop_cpu=(loop_after - loop_cpu) / elapsed,
        redis_cpu=(redis_cpu_seconds() - redis_cpu) / elapsed,
        machine_cpu=(machine_cpu_seconds()[0] - machine_cpu) / elapsed,
        metrics=_delta(metrics, gateway.metrics()),
        threads={
            name: (seconds - threads.get(name, 0.0)) / elapsed
            for name, seconds in threads_after.items()
        },
    )


@dataclass
class Options:
    seconds: float
    connections: list[int]
    single_connections: list[int]
    latency_connections: int
    stage_seconds: float
    log_level: str
    gateway_src: list[str]
    env: dict[str, str]


def stages(seconds: float, scratch: Path) -> list[Stage]:
    bodies = sample_bodies(200, BATCH)
    return [
        decode_stage(bodies, seconds),
        redis_stage(seconds, confirm=False, concurrency=1),
        redis_stage(seconds, confirm=False, concurrency=8),
        insert_stage(bodies, seconds, block=10_000, scratch=scratch),
        insert_stage(bodies, seconds, block=50_000, scratch=scratch),
        rows_stage(bodies, seconds),
        redis_stage(seconds, confirm=True, concurrency=8),
    ]


def _closed(generator: LoadGenerator, connections: int, seconds: float) -> Callable[[], Tally]:
    return lambda: asyncio.run(generator.closed_loop(connections=connections, duration=seconds))


def load_phases(gateway: GatewayProcess, options: Options) -> list[Phase]:
    """Warm-up, batch, half load, single, empty and duplicates against a running gateway."""
    secs, conns = options.seconds, options.connections[0]
    batch = LoadGenerator(gateway.port, WRITE_KEY, size=BATCH)
    back_to_back = f"{conns} connections, back to back"
    phases = [measure(gateway, "warm-up", "discarded", BATCH, _closed(batch, conns, 3))]
    for connections in options.connections:
        what = f"{connections} connections, back to back"
        phases.append(measure(gateway, "batch", what, BATCH, _closed(batch, connections, secs)))
    rate = sustained(phases).events_per_s / 2 / BATCH

    def half_load() -> Tally:
        pool = options.latency_connections
        return asyncio.run(batch.open_loop(rate=rate, duration=secs, connections=pool))

    what = f"{rate:,.1f} requests/s fixed arrival rate ({options.latency_connections} conns)"
    phases.append(measure(gateway, "half load", what, BATCH, half_load))
    for connections in options.single_connections:
        single = LoadGenerator(gateway.port, WRITE_KEY, size=1)
        what = f"{connections} connections, back to back"
        phases.append(measure(gateway, "single", what, 1, _closed(single, connections, secs)))
    empty = LoadGenerator(gateway.port, WRITE_KEY, size=0)
    short = min(secs, 10)
    phases.append(measure(gateway, "empty", back_to_back, 0, _closed(empty, conns, short)))
    repeat = Bodies(prefix=batch.bodies.prefix, wrap=batch.bodies.events)
    again = LoadGenerator(gateway.port, WRITE_KEY, size=BATCH, bodies=repeat)
    what = f"{back_to_back}, every id stored before"
    phases.append(measure(gateway, "duplicates", what, BATCH, _closed(again, conns, short)))
    return phases


def sustained(phases: list[Phase]) -> Phase:
    """The batch phase that stored the most events per second with every event claimed
    in Redis (or, when none was, the one that stored the most)."""
    batches = [p for p in phases if p.name == "batch"]
    claimed = [p for p in batches if not p.bypassed] or batches
    return max(claimed, key=lambda p: p.events_per_s)


def check_stored(gateway: GatewayProcess, phases: list[Phase]) -> tuple[int, int]:
    """The stopped gateway's table holds each acknowledged event once; (rows, acked)."""
    acked = sum(p.tally.accepted for p in phases)
    failed = {p.name: dict(p.tally.statuses) for p in phases if p.tally.failed}
    rows, ids = gateway.count_stored()
    duplicates = phases[-1]
    if failed or rows != acked or ids != rows or duplicates.tally.accepted:
        raise AssertionError(
            f"stored {rows} rows ({ids} ids), acknowledged {acked}; non-200: {failed};"
            f" the duplicates phase had {duplicates.tally.accepted} accepted"
        )
    return rows, acked


def log_levels(gateway: GatewayProcess) -> tuple[collections.Counter[str], list[str]]:
    """How many lines of each level the gateway logged; the first warning messages."""
    levels: collections.Counter[str] = collections.Counter()
    warnings: list[str] = []
    for line in (gateway.directory / "gateway.log").read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            levels["not json"] += 1
            continue
        levels[entry.get("level", "?")] += 1
        if entry.get("level") in ("warning", "error") and len(warnings) < 3:
            warnings.append(str(entry.get("message", ""))[:200])
    return levels, warnings


def stage_limits(stages_: list[Stage]) -> dict[str, float]:
    """Each of the three named stages' best rate over its variants."""
    return {
        family: max(s.rate for s in stages_ if s.name.startswith(family)) for family in LIMIT_STAGES
    }


def stage_table(stages_: list[Stage], gateway_rate: float) -> str:
    lines = [
        "| stage | what | events/s | CPU µs/event here | Redis CPU µs/event | gateway ÷ stage |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for s in stages_:
        lines.append(
            f"| {s.name} | {s.what} | {s.rate:,.0f} | {1e6 * s.cpu / s.rate:.2f} |"
            f" {1e6 * s.redis_cpu / s.rate:.2f} | {gateway_rate / s.rate:.1%} |"
        )
    return "\n".join(lines)


def phase_table(phases: list[Phase]) -> str:
    lines = [
        "| phase | load | events/body | requests/s | events stored/s | p50 ms | p90 ms | p99 ms"
        " | max ms | gateway p99 ms | non-200 | dedupe bypassed | rows/insert | ms/insert"
        " | loop late > 50 ms | > 100 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        t = p.tally
        rows, ms = p.mean_commit()
        lines.append(
            f"| {p.name} | {p.what} | {p.size} | {p.requests_per_s:,.0f} |"
            f" {p.events_per_s:,.0f} | {1000 * t.percentile(0.5):.1f} |"
            f" {1000 * t.percentile(0.9):.1f} | {1000 * t.percentile(0.99):.1f} |"
            f" {1000 * max(t.latencies, default=0):.1f} | {p.gateway_percentile(0.99)} |"
            f" {t.failed} | {p.bypassed:,} |"
            f" {rows:,.0f} | {ms:.1f} | {p.loop_stalls(0.05)} | {p.loop_stalls(0.1)} |"
        )
    return "\n".join(lines)


def cpu_table(phases: list[Phase]) -> str:
    lines = [
        "| phase | s | gateway cores | of which event loop | gateway µs/event |"
        " event loop µs/event | Redis µs/event | client cores | Redis cores |"
        " other processes' cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        lines.append(
            f"| {p.name} ({p.size}) | {p.tally.elapsed:.1f} | {p.gateway_cpu:.2f} |"
            f" {p.loop_cpu:.2f} | {p.per_unit_us(p.gateway_cpu):,.1f} |"
            f" {p.per_unit_us(p.loop_cpu):,.1f} | {p.per_unit_us(p.redis_cpu):,.1f} |"
            f" {p.client_cpu:.2f} | {p.redis_cpu:.2f} | {p.other_cpu:.2f} |"
        )
    lines.append("\nThe gateway's threads, cores (at least 0.01):\n")
    for p in phases:
        busy = sorted(((c, n) for n, c in p.threads.items() if c >= 0.01), reverse=True)
        lines.append(f"- {p.name} ({p.size}): " + ", ".join(f"{n} {c:.2f}" for c, n in busy))
    return "\n".join(lines)


def summary(stages_: list[Stage], phases: list[Phase]) -> str:
    full = sustained(phases)
    half = next(p for p in phases if p.name == "half load")
    single = max((p for p in phases if p.name == "single"), key=lambda p: p.requests_per_s)
    limits = stage_limits(stages_)
    slowest = min(limits, key=lambda name: limits[name])
    p99 = 1000 * half.tally.percentile(0.99)
    checks = [
        ("batch: events stored/s", full.events_per_s, ">= 150,000", full.events_per_s >= 150e3),
        ("half load: p99 ms", p99, "<= 100", p99 <= 100),
        ("single: requests/s", single.requests_per_s, ">= 5,000", single.requests_per_s >= 5e3),
    ]
    lines = ["| figure | measured | target | met |", "|---|---:|---|---|"]
    lines += [f"| {n} | {v:,.1f} | {t} | {'yes' if ok else 'NO'} |" for n, v, t, ok in checks]
    named = ", ".join(f"{name} {rate:,.0f}" for name, rate in limits.items())
    lines.append(
        f"\nstage limits (events/s, best variant): {named}. Slowest: {slowest}; the gateway"
        f" stored {full.events_per_s:,.0f} events/s ="
        f" **{full.events_per_s / limits[slowest]:.1%}** of it."
    )
    return "\n".join(lines)


def parse_options() -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per load phase")
    parser.add_argument("--connections", default="64,128", help="batch phases, comma-separated")
    parser.add_argument("--single-connections", default="64,256", help="comma-separated")
    parser.add_argument("--latency-connections", type=int, default=64, help="open-loop pool")
    parser.add_argument("--stage-seconds", type=float, default=3.0)
    parser.add_argument("--log-level", default="INFO", help="the gateway's (`serve --log-level`)")
    parser.add_argument(
        "--gateway-src",
        action="append",
        default=[],
        help="put this directory first on the gateway's PYTHONPATH (a modified copy of its"
        " src/, or extra packages such as uvloop), to measure a proposed change; repeatable",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="HEADWATER_NAME=VALUE",
        help="a setting for the gateway, e.g. HEADWATER_COMMIT_MAX_DELAY_MS=50; repeatable",
    )
    args = parser.parse_args()
    return Options(
        seconds=args.seconds,
        connections=[int(n) for n in args.connections.split(",")],
        single_connections=[int(n) for n in args.single_connections.split(",")],
        latency_connections=args.latency_connections,
        stage_seconds=args.stage_seconds,
        log_level=args.log_level,
        gateway_src=args.gateway_src,
        env=dict(pair.split("=", 1) for pair in args.env),
    )


def main() -> None:
    options = parse_options()
    busy = wait_until_idle()
    print(f"machine busy before the run: {busy:.0%} of {os.cpu_count()} cores", flush=True)
    # Every chDB directory is deleted at the end, none between measurements (see
    # `insert_stage`): deleting one slows the next measurement's inserts.
    with tempfile.TemporaryDirectory(prefix="hw-bench-stages-") as scratch:
        stage_results = stages(options.stage_seconds, Path(scratch))
        gateway = GatewayProcess(
            log_level=options.log_level, pythonpath=options.gateway_src, env=options.env
        )
        try:
            with gateway:
                phases = load_phases(gateway, options)
            rows, acked = check_stored(gateway, phases)
            levels, warnings = log_levels(gateway)
        except BaseException:
            print(gateway.log_tail(), file=sys.stderr)
            raise
        finally:
            keys = gateway.forget_ids()
            gateway.remove()
    measured = phases[1:]
    print(f"\n### Stages\n\n{stage_table(stage_results, sustained(measured).events_per_s)}")
    print(f"\n### Load\n\n{phase_table(measured)}\n\n{cpu_table(measured)}")
    print(f"\n{summary(stage_results, measured)}")
    print(
        f"\nChecked: {rows:,} rows in the stopped gateway's chDB `events`, each id once,"
        f" = {acked:,} events acknowledged as accepted;"
        f" {keys:,} Redis keys (ids and tickets) deleted;"
        f" gateway exit code {gateway.returncode}; its log lines by level: {dict(levels)}"
    )
    for message in warnings:
        print(f"  gateway warning: {message}")


if __name__ == "__main__":
    main()
