"""Sustained delivery rate of one `Client` to a receiver on 127.0.0.1, in events per second.

    uv run --frozen python -m benchmarks.load_consumer [--events 200000]

For each receiver and encoding: track `--events` distinct orders as fast as the caller's
thread can, then `flush()`, and check that every event arrived, none was dropped. The
client keeps its default batching (500 events, gzip); its queue has room for every event.

- end to end: events / (first `track()` .. `flush()` returned); the caller's thread
  and the consumer share the GIL while both run.
- drain: the events sent after the last `track()`, over the time `flush()` took: the
  consumer alone.

Receivers: `fast` and `loopback` run in a child process, `loopback-inproc` in this one
(the stdlib `LoopbackReceiver` then takes GIL time from the client).
"""

from __future__ import annotations

import argparse
import time

import msgspec

from benchmarks.receivers import InProcessLoopback, ReceiverProcess
from benchmarks.workload import orders
from headwater.sdk import Client, ClientOptions, Encoding

RECEIVERS = ("fast", "loopback", "loopback-inproc")
ENCODINGS: tuple[Encoding, ...] = ("json", "msgpack")


class Run(msgspec.Struct, kw_only=True):
    """The outcome of one delivery run."""

    receiver: str
    encoding: str
    events: int
    enqueue_s: float
    flush_s: float
    sent_before_flush: int

    @property
    def end_to_end(self) -> float:
        """Events per second from the first `track()` until `flush()` returned."""
        return self.events / (self.enqueue_s + self.flush_s)

    @property
    def drain(self) -> float:
        """Events per second the consumer sent once the caller had stopped."""
        return (self.events - self.sent_before_flush) / self.flush_s


def measure(kind: str, encoding: Encoding, count: int) -> Run:
    """Track `count` orders to a fresh receiver of `kind`, flush, and check the arrivals."""
    workload = orders(count)
    receiver = InProcessLoopback() if kind == "loopback-inproc" else ReceiverProcess(kind)
    with receiver:
        options = ClientOptions(
            encoding=encoding, max_queue_events=count, max_queue_bytes=1024 * 1024 * 1024
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
        receiver=kind,
        encoding=encoding,
        events=count,
        enqueue_s=enqueued - start,
        flush_s=done - enqueued,
        sent_before_flush=sent_before_flush,
    )


def _row(run: Run) -> str:
    return (
        f"| {run.receiver} | {run.encoding} | {run.events:,} | {run.enqueue_s:.2f} "
        f"| {run.sent_before_flush:,} | {run.flush_s:.2f} | {run.end_to_end:,.0f} "
        f"| {run.drain:,.0f} |"
    )


def main() -> None:
    """Measure every receiver and encoding asked for; print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--receiver", choices=RECEIVERS, action="append")
    parser.add_argument("--encoding", choices=ENCODINGS, action="append")
    args = parser.parse_args()
    print(
        "| receiver | encoding | events | tracking s | sent while tracking | flush s "
        "| end to end ev/s | drain ev/s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind in args.receiver or RECEIVERS:
        for encoding in args.encoding or ENCODINGS:
            print(_row(measure(kind, encoding, args.events)), flush=True)


if __name__ == "__main__":
    main()
