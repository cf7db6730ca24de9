"""Child process: an application tracking typed events with the SDK at a steady rate.

`python tracking_app.py HOST WORKDIR --rate N [--request-timeout S] [--backoff-cap S]
[--max-retries N] [--spool DIR] [--kill-after N] [--max-seconds S] [--flush-timeout S]`,
started by `tests.faults.application`. Options not given keep `ClientOptions`' defaults.

In WORKDIR it writes, each line as soon as it is known (line-buffered: a line written is
the kernel's, whatever then happens to this process):

- `ids`: every id `track()` returned, right after it returned;
- `drops`: `<reason> <id>` for every event the client gave up on (its `on_error`);
- `progress`: one JSON line about every 0.1 s — `t` (the machine's monotonic clock, which
  the test process shares), `tracked`, `refused` (track() returned None) and the client's
  `stats()`; the last line has `"final": true` and the result of `flush()`.

It tracks until the file `WORKDIR/stop` appears (or `--max-seconds`), then flushes, shuts
the client down and exits 0. `--kill-after N` makes it SIGKILL itself right after the Nth
id was written: an application that dies with events it was told were accepted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import msgspec

from headwater.sdk import AnyMessage, Client, ClientOptions, Event

WRITE_KEY = "wk_faults"
PROGRESS_INTERVAL = 0.1  # seconds between two progress lines
TICK = 0.005  # seconds the loop sleeps between two rounds of tracking


class FaultProbe(Event, name="fault_probe"):
    """The one event the application tracks: a sequence number within its process."""

    seq: int
    life: int  # which process of the run tracked it (scenario 6 runs several)
    payload: str


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--rate", type=float, required=True, help="events per second")
    parser.add_argument("--request-timeout", type=float)
    parser.add_argument("--backoff-cap", type=float)
    parser.add_argument("--max-retries", type=int)
    parser.add_argument("--spool", type=Path)
    parser.add_argument("--kill-after", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--flush-timeout", type=float, default=120.0)
    parser.add_argument("--life", type=int, default=0)
    return parser.parse_args()


class Application:
    """The tracking loop, its files and its client."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        workdir: Path = args.workdir
        self.ids = (workdir / "ids").open("a", buffering=1)
        self.drops = (workdir / "drops").open("a", buffering=1)
        self.progress = (workdir / "progress").open("a", buffering=1)
        self.stop_file = workdir / "stop"
        self.tracked = 0
        self.refused = 0
        self._drops_lock = threading.Lock()
        tuned = {
            name: value
            for name in ("request_timeout", "backoff_cap", "max_retries")
            if (value := getattr(args, name)) is not None
        }
        options = ClientOptions(spool_dir=args.spool, shutdown_timeout=args.flush_timeout, **tuned)
        self.client = Client(WRITE_KEY, host=args.host, options=options, on_error=self.on_error)

    def on_error(self, exc: Exception, messages: list[AnyMessage]) -> None:
        with self._drops_lock:
            reason = type(exc).__name__
            self.drops.write("".join(f"{reason} {m.event_id}\n" for m in messages))

    def report(self, **extra: Any) -> None:
        line = {
            "t": time.monotonic(),
            "tracked": self.tracked,
            "refused": self.refused,
            "stats": self.client.stats(),
            **extra,
        }
        self.progress.write(msgspec.json.encode(line).decode() + "\n")

    def track_one(self) -> None:
        seq = self.tracked + self.refused
        event = FaultProbe(seq=seq, life=self.args.life, payload="x" * 64)
        event_id = self.client.track(event, distinct_id=f"user_{seq % 97}")
        if event_id is None:
            self.refused += 1
            return
        self.ids.write(event_id + "\n")
        self.tracked += 1
        if self.tracked == self.args.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def run(self) -> None:
        self.report()
        started = time.monotonic()
        reported = started
        while not self.stop_file.exists():
            now = time.monotonic()
            if now - started > self.args.max_seconds:
                break
            due = int((now - started) * self.args.rate)
            while self.tracked + self.refused < due:
                self.track_one()
            if now - reported >= PROGRESS_INTERVAL:
                self.report()
                reported = now
            time.sleep(TICK)
        flushed = self.client.flush(self.args.flush_timeout)
        self.report(flushed=flushed)
        clean = self.client.shutdown(self.args.flush_timeout)
        self.report(final=True, flushed=flushed, clean=clean)


def close_all(files: list[IO[str]]) -> None:
    for file in files:
        file.close()


def main() -> None:
    app = Application(parse_args())
    app.run()
    close_all([app.ids, app.drops, app.progress])
    sys.exit(0)


if __name__ == "__main__":
    main()
