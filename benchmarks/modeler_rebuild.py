"""The modeler on 10 million events, embedded (chDB): a full rebuild, then an incremental
daily run after one more day of events arrives.

    uv run --frozen python -m benchmarks.modeler_rebuild [--events 10000000] [--days 90]

The events are generated inside ClickHouse (`numbers()`), shaped like the synthetic shop:
200,000 users, page views, carts, checkouts, orders and identifies over `--days` days.
The chDB directory is a fresh temporary one, removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from headwater.gateway import migrate
from headwater.modeler import ClickHouse, FileLock, ModelConfig, Runner, RunReport

# One event per number: user, day and time of day, kind and measures from hashes of n.
EVENTS = """
INSERT INTO {db}.events (project, event_id, event, distinct_id, timestamp, received_at,
                         properties, lib, source)
SELECT
    'bench' AS project,
    generateUUIDv4(number) AS event_id,
    multiIf(k < 60, 'page_view', k < 75, 'add_to_cart', k < 83, 'checkout_started',
            k < 88, 'order_completed', k < 90, '$identify', 'feature_used') AS event,
    concat('u', toString(cityHash64(number, 1) % {users})) AS distinct_id,
    {start} + toIntervalMillisecond(
        (cityHash64(number, 2) % {days}) * 86400000 + cityHash64(number, 3) % 86400000
    ) AS timestamp,
    timestamp AS received_at,
    multiIf(event = 'order_completed',
            concat('{{"revenue_cents":', toString(cityHash64(number, 4) % 20000), ',"items_count":',
                   toString(1 + cityHash64(number, 5) % 5), '}}'),
            event = '$identify',
            concat('{{"$set":{{"plan":"',
                   ['free', 'pro', 'team'][1 + cityHash64(number, 6) % 3],
                   '","signed_up_at":"2026-01-01T00:00:00Z"}}}}'),
            event = 'feature_used',
            concat('{{"duration_seconds":', toString(cityHash64(number, 7) % 600), '}}'),
            '{{}}') AS properties,
    'bench' AS lib,
    'native' AS source
FROM (SELECT number + {offset} AS number, cityHash64(number + {offset}, 0) % 100 AS k
      FROM numbers({count}))
"""


FIRST = "toDateTime64('2026-08-01 00:00:00', 3, 'UTC')"


def load(ch: ClickHouse, *, count: int, offset: int, users: int, days: int, start: str) -> float:
    begun = time.perf_counter()
    sql = EVENTS.format(
        db=ch.database, count=count, offset=offset, users=users, days=days, start=start
    )
    ch.command(sql)
    return time.perf_counter() - begun


def show(report: RunReport) -> None:
    for r in report.results:
        print(f"  {r.model:24} {r.partitions:4} partitions {r.rows:>11,} rows {r.seconds:6.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--users", type=int, default=200_000)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="hw-modeler-bench-"))
    try:
        ch = ClickHouse.connect(f"chdb://{directory / 'ch'}", database="bench")
        migrate(ch)
        seconds = load(
            ch, count=args.events, offset=0, users=args.users, days=args.days, start=FIRST
        )
        print(f"loaded {args.events:,} events over {args.days} days in {seconds:.1f}s")
        runner = Runner(ch, ModelConfig(), lock=FileLock(directory / "lock"))
        begun = time.perf_counter()
        report = runner.run()
        full = time.perf_counter() - begun
        print(f"full rebuild: {full:.1f}s, {args.events / full:,.0f} events/s")
        show(report)
        daily = args.events // args.days
        # the next day's events arrive (timestamps on the day after the last)
        next_day = f"{FIRST} + toIntervalDay({args.days})"
        load(ch, count=daily, offset=args.events, users=args.users, days=1, start=next_day)
        begun = time.perf_counter()
        report = runner.run()
        incremental = time.perf_counter() - begun
        print(f"incremental daily run ({daily:,} new events): {incremental:.1f}s")
        show(report)
        ch.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
