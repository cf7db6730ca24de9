"""Child process: a client queues events, the process forks, and each side sends its own.

`python fork_then_flush.py HOST --parent-ids ID... --child-ids ID... [--spool DIR]
[--child-exit os_exit|interpreter]`, run by tests/sdk/test_process.py. The test runs this
in a subprocess so that the pytest process never forks while it has threads.

Prints one JSON line per side, the child's first: `{"side", "flushed", "stats"}`
(the parent's line also has the child's `exit_code`). With `--child-exit interpreter` the
child neither flushes nor reports: it leaves its events to the exit hook.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

import msgspec

from headwater.sdk import Client, ClientOptions, Stats


class Report(msgspec.Struct, kw_only=True):
    side: str
    flushed: bool
    stats: Stats
    exit_code: int | None = None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("--parent-ids", nargs="+", required=True)
    parser.add_argument("--child-ids", nargs="+", required=True)
    parser.add_argument("--spool", type=Path)
    parser.add_argument("--child-exit", choices=["os_exit", "interpreter"], default="os_exit")
    return parser.parse_args()


def emit(client: Client, side: str, ids: list[str]) -> None:
    for event_id in ids:
        client.capture(f"{side}_event", distinct_id=f"u_{side}", event_id=event_id)


def write(report: Report) -> None:
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    sys.stdout.flush()


def run_child(client: Client, args: argparse.Namespace) -> NoReturn:
    emit(client, "child", args.child_ids)
    if args.child_exit == "interpreter":
        sys.exit(0)  # unwinds to the interpreter, whose exit hooks deliver the events
    flushed = client.flush(timeout=10)
    write(Report(side="child", flushed=flushed, stats=client.stats()))
    os._exit(0)  # as gunicorn and multiprocessing children end: no exit hooks


def make_client(args: argparse.Namespace) -> Client:
    options = ClientOptions(flush_interval=60.0, spool_dir=args.spool)
    return Client("test-write-key", host=args.host, options=options)


def main(client: Client, args: argparse.Namespace) -> None:
    emit(client, "parent", args.parent_ids)
    pid = os.fork()
    if pid == 0:
        run_child(client, args)
    _, status = os.waitpid(pid, 0)
    flushed = client.flush(timeout=10)
    stats = client.stats()
    client.shutdown()
    write(
        Report(
            side="parent", flushed=flushed, stats=stats, exit_code=os.waitstatus_to_exitcode(status)
        )
    )


if __name__ == "__main__":
    ARGS = parse_args()
    # A module global, so that the client outlives `main` until the interpreter exits.
    CLIENT = make_client(ARGS)
    main(CLIENT, ARGS)
