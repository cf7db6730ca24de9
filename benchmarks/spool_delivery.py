"""Delivery of one `Client` with the durable spool off and on, to the fast receiver.

    uv run --frozen python -m benchmarks.spool_delivery [--events 200000] [--runs 3]

As `benchmarks.load_consumer` (the same orders, default batching of 500 events with gzip,
JSON, the fast receiver in a child process): track `--events` orders as fast as the
caller's thread can, then `flush()`, and check that every event arrived and none was
dropped. With the spool on, each `track()` writes its event to a segment file under a
temporary directory before returning, and the consumer reads the batches back from those
files. Prints a Markdown table row per run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.load_consumer import Run
from benchmarks.receivers import ReceiverProcess
from benchmarks.workload import orders
from headwater.sdk import Client, ClientOptions

GIB = 1024 * 1024 * 1024


def measure(count: int, *, spool: Path | None) -> Run:
    """Track `count` orders with or without a spool, flush, and check the arrivals."""
    workload = orders(count)
    with ReceiverProcess("fast") as receiver:
        options = ClientOptions(
            max_queue_events=count, max_queue_bytes=GIB, spool_dir=spool, spool_max_bytes=GIB
        )
        client = Client("bench-write-key", host=receiver.url, options=options)
        start = time.perf_counter()
        for order, distinct_id in workload:
            client.track(order, distinct_id=distinct_id)
        enqueued = time.perf_counter()
        sent_before_flush = client.stats().sent
        flushed = client.flush(timeout=120)
        done = time.perf_counter()
        stats = client.stats()
        client.shutdown()
    if not flushed or stats.dropped or stats.sent != count or receiver.received != count:
        raise AssertionError(f"not every event arrived: {stats}, received {receiver.received}")
    return Run(
        receiver="fast",
        encoding="spool" if spool is not None else "memory",
        events=count,
        enqueue_s=enqueued - start,
        flush_s=done - enqueued,
        sent_before_flush=sent_before_flush,
    )


def main() -> None:
    """Alternate runs without and with the spool; print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print("| spool | events | tracking s | per track() | sent while tracking | flush s "
          "| end to end ev/s | drain ev/s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for _ in range(args.runs):
        for spooled in (False, True):
            with tempfile.TemporaryDirectory(prefix="spool-delivery-") as directory:
                run = measure(args.events, spool=Path(directory) if spooled else None)
            print(
                f"| {'on' if spooled else 'off'} | {run.events:,} | {run.enqueue_s:.2f}"
                f" | {run.enqueue_s / run.events * 1e6:.2f} µs | {run.sent_before_flush:,}"
                f" | {run.flush_s:.2f} | {run.end_to_end:,.0f} | {run.drain:,.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
