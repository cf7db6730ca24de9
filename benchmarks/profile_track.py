"""Where `track()` spends its time: cProfile over 100,000 calls on an idle client.

    uv run --frozen python -m benchmarks.profile_track [--calls 100000] [--without-coupon]

cProfile adds its own cost to every Python call, so read the shares, not the totals;
`test_bench_track.py` has the real figures.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats

from benchmarks.receivers import closed_port_url
from benchmarks.workload import DISTINCT_ID, ORDER, ORDER_WITHOUT_COUPON
from headwater.sdk import Client, ClientOptions

GIB = 1024 * 1024 * 1024


def main() -> None:
    """Profile `--calls` calls of `track()` and print the 15 costliest functions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--without-coupon", action="store_true", help="track an order with None")
    args = parser.parse_args()
    event = ORDER_WITHOUT_COUPON if args.without_coupon else ORDER
    options = ClientOptions(
        max_queue_events=args.calls,
        max_queue_bytes=GIB,
        max_batch_events=args.calls,
        max_batch_bytes=GIB,
        flush_interval=3600,
    )
    # The batch limits and the interval keep the consumer asleep while the loop runs.
    client = Client("bench-write-key", host=closed_port_url(), options=options)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(args.calls):
        client.track(event, distinct_id=DISTINCT_ID)
    profile.disable()
    stats = client.stats()
    client.shutdown(timeout=0)
    if stats.dropped or stats.queued != args.calls:
        raise SystemExit(f"not every call was accepted: {stats}")
    pstats.Stats(profile).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
