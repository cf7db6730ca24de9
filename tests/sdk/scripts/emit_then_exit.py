"""Child process: queue events, then let the interpreter exit without flush or shutdown.

`python emit_then_exit.py HOST ID... [--spool DIR] [--shutdown-timeout S] [--report]
[--unreferenced] [--in-backoff K]`, run by tests/sdk/test_process.py.

- `--report` prints `stats()` as one JSON line after the client's own exit hook ran.
- `--unreferenced` keeps no reference to the client once the events are queued.
- `--in-backoff K` queues the first K events, waits until the consumer is pausing before
  a retry of them, then queues the rest.
"""

from __future__ import annotations

import argparse
import atexit
import sys
import time
from pathlib import Path

import msgspec

from headwater.sdk import Client, ClientOptions

DEADLINE = 20.0  # seconds this child waits for its consumer before giving up on its own


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("ids", nargs="+")
    parser.add_argument("--spool", type=Path)
    parser.add_argument("--shutdown-timeout", type=float, default=5.0)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--unreferenced", action="store_true")
    parser.add_argument("--in-backoff", type=int, default=0)
    return parser.parse_args()


def make_client(args: argparse.Namespace) -> Client:
    options = ClientOptions(
        flush_interval=60.0,  # only the exit hook (or a full batch) sends
        shutdown_timeout=args.shutdown_timeout,
        spool_dir=args.spool,
        max_batch_events=args.in_backoff or 500,
    )
    return Client("test-write-key", host=args.host, options=options)


def emit(client: Client, ids: list[str], *, in_backoff: int) -> None:
    for event_id in ids[:in_backoff]:
        client.capture("exit_event", distinct_id="u_exit", event_id=event_id)
    if in_backoff:
        wait_for_first_retry(client)
    for event_id in ids[in_backoff:]:
        client.capture("exit_event", distinct_id="u_exit", event_id=event_id)


def wait_for_first_retry(client: Client) -> None:
    deadline = time.monotonic() + DEADLINE
    while client.stats().retried < 1:
        if time.monotonic() > deadline:
            sys.exit("the consumer never retried")
        time.sleep(0.01)


def report(holder: list[Client]) -> None:
    print(msgspec.json.encode(holder[0].stats()).decode(), flush=True)


def main() -> Client | None:
    """The client, for the caller to keep referenced until the interpreter exits."""
    args = parse_args()
    if args.unreferenced:
        emit(make_client(args), args.ids, in_backoff=args.in_backoff)
        return None
    holder: list[Client] = []
    if args.report:
        # Exit hooks run last-registered first: this one runs after the client's.
        atexit.register(report, holder)
    client = make_client(args)
    holder.append(client)
    emit(client, args.ids, in_backoff=args.in_backoff)
    return client


if __name__ == "__main__":
    kept = main()  # a module global: the client lives until the interpreter exits
