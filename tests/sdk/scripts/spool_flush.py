"""Child process: open a spool (left by other processes), flush it, report.

`python spool_flush.py HOST SPOOL_DIR [--client thread|asyncio] [--emit N] [--then-kill]`,
run by tests/sdk/test_spool.py. With `--emit N` it first captures N events of its own.
Prints one JSON line, `{"flushed": bool, "stats": Stats}`, taken after `flush(timeout=20)`,
then shuts the client down, or with `--then-kill` sends itself SIGKILL instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import msgspec

from headwater.sdk import AsyncClient, Client, ClientOptions, Stats


class Report(msgspec.Struct, kw_only=True):
    flushed: bool
    stats: Stats


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("spool", type=Path)
    parser.add_argument("--client", choices=["thread", "asyncio"], default="thread")
    parser.add_argument("--emit", type=int, default=0)
    parser.add_argument("--then-kill", action="store_true")
    return parser.parse_args()


def emit(hw: Client | AsyncClient, count: int) -> None:
    for n in range(count):
        hw.capture("flushed_event", distinct_id="u_flush", properties={"n": n})


def report(flushed: bool, stats: Stats, args: argparse.Namespace) -> None:
    """Print the report; with `--then-kill`, die at once: no shutdown, no exit hook."""
    sys.stdout.write(msgspec.json.encode(Report(flushed=flushed, stats=stats)).decode() + "\n")
    sys.stdout.flush()
    if args.then_kill:
        os.kill(os.getpid(), signal.SIGKILL)


def flush_thread(args: argparse.Namespace, options: ClientOptions) -> None:
    hw = Client("test-key", host=args.host, options=options)
    emit(hw, args.emit)
    report(hw.flush(timeout=20), hw.stats(), args)
    hw.shutdown()


async def flush_asyncio(args: argparse.Namespace, options: ClientOptions) -> None:
    hw = AsyncClient("test-key", host=args.host, options=options)
    emit(hw, args.emit)
    report(await hw.flush(timeout=20), hw.stats(), args)
    await hw.shutdown()


def main() -> None:
    args = parse_args()
    options = ClientOptions(spool_dir=args.spool, flush_interval=60.0)
    if args.client == "asyncio":
        asyncio.run(flush_asyncio(args, options))
    else:
        flush_thread(args, options)


if __name__ == "__main__":
    main()
