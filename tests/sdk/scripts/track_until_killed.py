"""Child process: track at a steady rate with the spool on until the test kills it.

`python track_until_killed.py HOST SPOOL_DIR SERIES [--rate N] [--client thread|asyncio]`,
run by tests/sdk/test_spool.py. Event n has the id `event_id(SERIES, n)`; right after
`track()` returns it, the id is written to stdout as one line (flushed), so that every
printed id is one whose call had returned. Exits 1 if nobody kills it within DEADLINE.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from headwater.sdk import AsyncClient, Client, ClientOptions, Event

DEADLINE = 20.0  # seconds: the test kills this process long before


class Tick(Event, name="tick"):
    n: int


def event_id(series: int, n: int) -> str:
    """The id of event `n` of `series` (UUIDv7-shaped, so that the gateway takes it)."""
    return f"0196{series:04x}-0000-7000-8000-{n:012x}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("spool", type=Path)
    parser.add_argument("series", type=int)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--client", choices=["thread", "asyncio"], default="thread")
    return parser.parse_args()


def options(args: argparse.Namespace) -> ClientOptions:
    return ClientOptions(spool_dir=args.spool, flush_interval=0.2, max_batch_events=100)


def track_one(hw: Client | AsyncClient, args: argparse.Namespace, n: int) -> None:
    """Track event `n`; print its id once the call returned."""
    returned = hw.track(Tick(n=n), distinct_id="u_killed", event_id=event_id(args.series, n))
    if returned is None:
        sys.exit(f"track() refused event {n}: {hw.stats()}")
    sys.stdout.write(returned + "\n")
    sys.stdout.flush()


def track_forever(args: argparse.Namespace) -> None:
    """Track event after event at `--rate` per second from this (the main) thread."""
    hw = Client("test-key", host=args.host, options=options(args))
    start = time.monotonic()
    for n in range(int(DEADLINE * args.rate)):
        track_one(hw, args, n)
        time.sleep(max(0.0, start + (n + 1) / args.rate - time.monotonic()))
    sys.exit("nobody killed this process")


async def track_on_a_loop(args: argparse.Namespace) -> None:
    """The same from a coroutine, while the client's delivery task runs on the loop."""
    async with AsyncClient("test-key", host=args.host, options=options(args)) as hw:
        start = time.monotonic()
        for n in range(int(DEADLINE * args.rate)):
            track_one(hw, args, n)
            await asyncio.sleep(max(0.0, start + (n + 1) / args.rate - time.monotonic()))
    sys.exit("nobody killed this process")


def main() -> None:
    args = parse_args()
    if args.client == "asyncio":
        asyncio.run(track_on_a_loop(args))
    else:
        track_forever(args)


if __name__ == "__main__":
    main()
