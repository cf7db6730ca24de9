"""A soak: the SDK tracking into `headwater serve` for minutes with forwarding on.

    uv run --frozen python -m benchmarks.soak [--minutes 10] [--fraction 0.5] [--rate N]

1. **The benchmarked rate**, measured first in this run: an application (the fault
   tests' `tracking_app.py`, the SDK with its defaults) is asked for 40,000 events/s, more
   than one such process tracks here, into a gateway set up as the soak's (forwarding
   on) for `--calibrate` seconds; the events the gateway acknowledged per second.
   (`--rate N` skips this and takes N.)
2. **The soak**: a fresh gateway (Redis of its own, chDB, forwarding to a PostHog
   stand-in in a child process that counts the uuids it receives) and the application
   tracking at `--fraction` of that rate for `--minutes`. Every 10 s: the gateway's and
   the application's RSS, the forward lag (events and seconds, from `/metrics`), what
   the application tracked and the gateway acknowledged.
3. The application flushes and exits; forwarding catches up (up to 5 minutes); the
   gateway stops. Then every id `track()` returned is looked up among the stored ids and
   the ids PostHog received: lost, twice after FINAL, not forwarded, forwarded twice.

Prints the samples, the start / middle / end summary, and the totals.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.chdb_elsewhere import query_elsewhere
from tests.faults.application import Application
from tests.faults.gateway import PROJECT, GatewayProcess
from tests.faults.redis_process import RedisProcess

SAMPLE_SECONDS = 10.0
# Offered while calibrating: more than one application process tracks here (about 13,000
# events/s), and little enough that its progress thread still gets the GIL.
CALIBRATION_RATE = 40_000
WARM_UP_SECONDS = 15.0
ROW = "  {:5.0f} | {:15.1f} | {:11.1f} | {:10,.0f} | {:5.1f} | {:7,} | {:,}"
CATCH_UP_SECONDS = 300.0


def rss_mib(pid: int) -> float:
    """The resident set of process `pid`, MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, flags=re.MULTILINE)
    assert match is not None
    return int(match.group(1)) / 1024


def lag(url: str) -> tuple[float, float]:
    """(events, seconds) the gateway's forwarding is behind."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = []
    for name in ("headwater_forward_lag_events", "headwater_forward_lag_seconds"):
        match = re.search(rf'^{name}{{project="{PROJECT}"}} (\S+)$', text, flags=re.MULTILINE)
        found.append(float(match.group(1)) if match else 0.0)
    return found[0], found[1]


class Receiver:
    """The PostHog stand-in of `benchmarks.forward_catchup`, in a child process, writing the
    uuids it receives to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.forward_catchup", "--receive", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()

    def received(self) -> list[str]:
        """Every uuid received so far (whole lines)."""
        text = self.path.read_text() if self.path.exists() else ""
        return text[: text.rfind("\n") + 1].split()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)


def calibrate(directory: Path, seconds: float) -> float:
    """Events per second the gateway, forwarding as in the soak, acknowledged from an
    application tracking flat out."""
    redis = RedisProcess(directory / "redis")
    redis.start()
    receiver = Receiver(directory / "received")
    gateway = GatewayProcess(
        directory / "gateway", redis_url=redis.url, posthog=(receiver.url, "phc_soak")
    )
    gateway.start()
    try:
        app = Application(directory / "app", host=gateway.url, rate=CALIBRATION_RATE)
        app.wait_settled(1)
        time.sleep(WARM_UP_SECONDS)  # past the settle time: the forwarder at work too
        first = app.latest()
        time.sleep(seconds)
        last = app.latest()
        assert first is not None
        assert last is not None
        app.finish()
        sent = int(last.stats["sent"]) - int(first.stats["sent"])  # not what it dropped
        return sent / (last.t - first.t)
    finally:
        gateway.close()
        redis.close()
        receiver.close()


def soak(directory: Path, rate: float, minutes: float) -> None:
    """Track at `rate` for `minutes` with forwarding on; print what was measured."""
    redis = RedisProcess(directory / "redis")
    redis.start()
    receiver = Receiver(directory / "received")
    gateway = GatewayProcess(
        directory / "gateway", redis_url=redis.url, posthog=(receiver.url, "phc_soak")
    )
    gateway.start()
    samples: list[tuple[float, float, float, float, float, int, int]] = []
    try:
        app = Application(directory / "app", host=gateway.url, rate=rate)
        began = time.monotonic()
        print("  t (s) | gateway RSS MiB | app RSS MiB | lag events | lag s | tracked | acked")
        while (now := time.monotonic()) - began < minutes * 60:
            time.sleep(SAMPLE_SECONDS - (now - began) % SAMPLE_SECONDS)
            latest = app.latest()
            behind, seconds = lag(gateway.url)
            sample = (
                time.monotonic() - began,
                rss_mib(gateway.pid),
                rss_mib(app.process.pid),
                behind,
                seconds,
                latest.tracked if latest else 0,
                int(latest.stats["sent"]) if latest else 0,
            )
            samples.append(sample)
            print(
                "  {:5.0f} | {:15.1f} | {:11.1f} | {:10,.0f} | {:5.1f} | {:7,} | {:,}".format(
                    *sample
                )
            )
        final = app.finish()
        caught_up = _catch_up(gateway.url)
        gateway.stop()
    finally:
        gateway.close()
        redis.close()
        receiver.close()
    _report(samples, app.ids(), caught_up=caught_up, gateway=gateway, receiver=receiver)
    print(f"the application's last flush() returned {final.flushed}")


def _catch_up(url: str) -> float:
    """Seconds until the forwarding lag is 0 (or CATCH_UP_SECONDS)."""
    began = time.monotonic()
    while lag(url)[0] and time.monotonic() - began < CATCH_UP_SECONDS:
        time.sleep(1)
    return time.monotonic() - began


def _report(
    samples: list[tuple[float, float, float, float, float, int, int]],
    ids: list[str],
    *,
    caught_up: float,
    gateway: GatewayProcess,
    receiver: Receiver,
) -> None:
    marks = {"start": samples[0], "middle": samples[len(samples) // 2], "end": samples[-1]}
    for label, (t, gw, app, behind, seconds, _, _) in marks.items():
        print(
            f"{label:>6} (t={t:.0f} s): gateway RSS {gw:.1f} MiB, application RSS {app:.1f} MiB,"
            f" forward lag {behind:,.0f} events / {seconds:.1f} s"
        )
    peak = max(samples, key=lambda s: s[4])
    print(f"forward lag peak: {peak[3]:,.0f} events / {peak[4]:.1f} s at t={peak[0]:.0f} s")
    stored = dict(
        query_elsewhere(
            gateway.chdb_dir,
            "SELECT toString(event_id), count() FROM headwater.events FINAL GROUP BY event_id",
        )
    )
    forwarded: dict[str, int] = {}
    for uuid in receiver.received():
        forwarded[uuid] = forwarded.get(uuid, 0) + 1
    tracked = set(ids)
    print(
        f"tracked {len(ids):,}; stored {len(stored):,};"
        f" lost {len(tracked - stored.keys()):,};"
        f" twice after FINAL {sum(1 for n in stored.values() if n > 1):,};"
        f" forwarded {len(forwarded):,} (caught up {caught_up:.0f} s after the application"
        f" stopped); not forwarded {len(tracked - forwarded.keys()):,};"
        f" forwarded twice {sum(1 for n in forwarded.values() if n > 1):,}"
    )


def main() -> None:
    """Calibrate (unless --rate), then soak."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--calibrate", type=float, default=20.0, help="seconds")
    parser.add_argument("--rate", type=float, default=0.0, help="the benchmarked rate")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="headwater-soak-"))
    rate = args.rate or calibrate(directory / "calibrate", args.calibrate)
    print(f"benchmarked rate: {rate:,.0f} events/s; soaking at {args.fraction * rate:,.0f}")
    soak(directory / "soak", args.fraction * rate, args.minutes)


if __name__ == "__main__":
    main()
