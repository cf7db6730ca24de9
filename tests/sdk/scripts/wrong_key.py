"""Child process: a client whose write key the gateway refuses, in an app with no logging set up.

`python wrong_key.py HOST COUNT`, run by tests/sdk/test_refused_key.py. Captures COUNT
events in batches of two, flushes, and prints `{"flushed": bool, "stats": Stats}` as one
JSON line. Whatever the SDK logs reaches stderr only through Python's last-resort handler.
"""

from __future__ import annotations

import sys

import msgspec

from headwater.sdk import Client, ClientOptions, Stats


class Report(msgspec.Struct, kw_only=True):
    flushed: bool
    stats: Stats


def main() -> None:
    host, count = sys.argv[1], int(sys.argv[2])
    options = ClientOptions(flush_interval=60.0, max_batch_events=2)
    with Client("wrong-key", host=host, options=options) as hw:
        for n in range(count):
            hw.capture("refused_event", distinct_id="u_refused", properties={"n": n})
        report = Report(flushed=hw.flush(timeout=10), stats=hw.stats())
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")


if __name__ == "__main__":
    main()
