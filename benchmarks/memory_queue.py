"""Peak memory of a `Client` whose consumer cannot deliver, offered 1,000,000 events.

    uv run --frozen python -m benchmarks.memory_queue

Each configuration runs in a fresh child process, so that its peak RSS is its own. The
client's host is a closed port on 127.0.0.1 (connection refused: the consumer holds one
batch of 500 and backs off), `max_queue_events=1_000_000`, and `max_queue_bytes` is the
bound under test: 64 MiB, the default, which the byte limit hits first, and 512 MiB,
which holds all 1,000,000. The child reports RSS after start-up (client made, nothing
queued) and after the millionth `track()`, the queue and the drops by reason.

The calls are timed in chunks of 10,000, so that the cost of an accepted call and of a
refused one (queue full) are told apart; the third configuration repeats the first with
the `headwater.sdk` logger at ERROR, to show what the per-event warning costs.
"""

from __future__ import annotations

import argparse
import logging
import resource
import subprocess
import sys
import time

import msgspec

from benchmarks.receivers import ROOT, closed_port_url
from benchmarks.workload import DISTINCT_ID, ORDER
from headwater.sdk import Client, ClientOptions

MIB = 1024 * 1024
EVENTS = 1_000_000
CHUNK = 10_000
# (max_queue_bytes in MiB, headwater.sdk logger at ERROR)
CONFIGURATIONS = ((64, False), (512, False), (64, True))


class Measurement(msgspec.Struct, kw_only=True):
    """What one child process saw."""

    max_queue_bytes: int
    quiet_logger: bool
    offered: int
    queued: int
    queued_bytes: int
    enqueued: int
    dropped_by_reason: dict[str, int]
    rss_start: int
    rss_end: int
    peak_rss_end: int
    seconds: float
    accepted_seconds: float  # in chunks where every call was accepted
    accepted_calls: int
    refused_seconds: float  # in chunks where every call was refused
    refused_calls: int


def _rss() -> int:
    """Resident set size of this process now, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _offer(client: Client, offered: int) -> tuple[list[float], list[int]]:
    """Track `offered` events in chunks; the time and the drops of each chunk."""
    seconds, drops = [], []
    for start in range(0, offered, CHUNK):
        dropped = client.stats().dropped
        began = time.perf_counter()
        for _ in range(min(CHUNK, offered - start)):
            client.track(ORDER, distinct_id=DISTINCT_ID)
        seconds.append(time.perf_counter() - began)
        drops.append(client.stats().dropped - dropped)
    return seconds, drops


def measure(max_queue_bytes: int, offered: int, *, quiet_logger: bool) -> Measurement:
    """Offer `offered` events to an undeliverable client bounded by `max_queue_bytes`."""
    if quiet_logger:
        logging.getLogger("headwater.sdk").setLevel(logging.ERROR)
    options = ClientOptions(max_queue_events=EVENTS, max_queue_bytes=max_queue_bytes)
    client = Client("bench-write-key", host=closed_port_url(), options=options)
    rss_start = _rss()
    seconds, drops = _offer(client, offered)
    stats = client.stats()
    rss_end, peak_rss_end = _rss(), _peak_rss()
    client.shutdown(timeout=0)
    accepted = [s for s, d in zip(seconds, drops, strict=True) if d == 0]
    refused = [s for s, d in zip(seconds, drops, strict=True) if d == CHUNK]
    return Measurement(
        max_queue_bytes=max_queue_bytes,
        quiet_logger=quiet_logger,
        offered=offered,
        queued=stats.queued,
        queued_bytes=stats.queued_bytes,
        enqueued=stats.enqueued,
        dropped_by_reason=stats.dropped_by_reason,
        rss_start=rss_start,
        rss_end=rss_end,
        peak_rss_end=peak_rss_end,
        seconds=sum(seconds),
        accepted_seconds=sum(accepted),
        accepted_calls=len(accepted) * CHUNK,
        refused_seconds=sum(refused),
        refused_calls=len(refused) * CHUNK,
    )


def _in_child(max_queue_bytes: int, offered: int, *, quiet_logger: bool) -> Measurement:
    command = [sys.executable, "-m", "benchmarks.memory_queue", "--events", str(offered)]
    command += ["--child", str(max_queue_bytes)] + (["--quiet-logger"] if quiet_logger else [])
    done = subprocess.run(command, cwd=ROOT, capture_output=True, check=True, timeout=300)
    return msgspec.json.decode(done.stdout, type=Measurement)


def _per_call(seconds: float, calls: int) -> str:
    return f"{seconds / calls * 1e6:.2f} µs" if calls else "-"


def _row(m: Measurement) -> str:
    grown = m.rss_end - m.rss_start
    drops = ", ".join(f"{k} {v:,}" for k, v in sorted(m.dropped_by_reason.items())) or "none"
    logger = "ERROR" if m.quiet_logger else "default"
    return (
        f"| {m.max_queue_bytes // MIB} MiB | {logger} | {m.offered:,} | {m.queued:,} "
        f"| {m.queued_bytes / MIB:.1f} MiB | {drops} | {m.rss_start / MIB:.0f} MiB "
        f"| {m.peak_rss_end / MIB:.0f} MiB | {grown / MIB:.0f} MiB "
        f"| {grown / max(m.enqueued, 1):.0f} B | {_per_call(m.seconds, m.offered)} "
        f"| {_per_call(m.accepted_seconds, m.accepted_calls)} "
        f"| {_per_call(m.refused_seconds, m.refused_calls)} |"
    )


def main() -> None:
    """Run each configuration in a child process; print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--child", type=int, metavar="MAX_QUEUE_BYTES", help=argparse.SUPPRESS)
    parser.add_argument("--quiet-logger", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        result = measure(args.child, args.events, quiet_logger=args.quiet_logger)
        sys.stdout.buffer.write(msgspec.json.encode(result))
        return
    print(
        "| max_queue_bytes | logger | offered | queued | queued bytes | dropped | RSS at start "
        "| peak RSS | RSS growth | growth per event | per track() | accepted | refused |"
    )
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for limit, quiet in CONFIGURATIONS:
        print(_row(_in_child(limit * MIB, args.events, quiet_logger=quiet)), flush=True)


if __name__ == "__main__":
    main()
