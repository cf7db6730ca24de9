"""Child process: a client with a spool whose gateway is down.

`python spool_offline.py HOST SPOOL_DIR TIMESTAMP ID... [--max-bytes N] [--on-full POLICY]
[--file-limit BYTES] [--big INDEX] [--then exit|hang]`, run by tests/sdk/test_process.py and
test_spool.py. Every event is captured at TIMESTAMP (ISO 8601) so that all have the same
encoded size, and is in the spool when its call returns. Then `flush(timeout=0)` wakes the
consumer, which reads a batch and tries to send it. Once that attempt failed, the child
prints `stats()` as one JSON line, then exits (its exit hook releases the spool for the
next process) or hangs until the test kills it. `--file-limit` lets this process write
files of at most BYTES bytes (RLIMIT_FSIZE, SIGXFSZ ignored): a write past it fails as on
a full disk. `--big INDEX` gives the event at INDEX a 100,000-character property.
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import msgspec

from headwater.sdk import Client, ClientOptions

DEADLINE = 20.0  # seconds this child waits, for its consumer or for its killer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("spool", type=Path)
    parser.add_argument("timestamp", type=datetime.fromisoformat)
    parser.add_argument("ids", nargs="+")
    parser.add_argument("--max-bytes", type=int, default=256 * 1024 * 1024)
    parser.add_argument("--on-full", default="drop_newest")
    parser.add_argument("--file-limit", type=int)
    parser.add_argument("--big", type=int)
    parser.add_argument("--then", choices=["exit", "hang"], default="exit")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.file_limit is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.file_limit, args.file_limit))
    options = ClientOptions(
        spool_dir=args.spool,
        spool_max_bytes=args.max_bytes,
        on_full=args.on_full,
        max_batch_events=len(args.ids),
        flush_interval=60.0,
        shutdown_timeout=0.2,
    )
    client = Client("test-write-key", host=args.host, options=options)
    for index, event_id in enumerate(args.ids):
        client.capture(
            "offline_event",
            distinct_id="u_offline",
            timestamp=args.timestamp,
            event_id=event_id,
            properties={"pad": "x" * 100_000} if index == args.big else None,
        )
    client.flush(timeout=0)  # wakes the consumer; nothing is delivered while the gateway is down
    deadline = time.monotonic() + DEADLINE
    while client.stats().retried < 1:
        if time.monotonic() > deadline:
            sys.exit("the consumer never retried")
        time.sleep(0.01)
    sys.stdout.write(msgspec.json.encode(client.stats()).decode() + "\n")
    sys.stdout.flush()
    if args.then == "hang":
        time.sleep(DEADLINE)  # the test kills this process long before


if __name__ == "__main__":
    main()
