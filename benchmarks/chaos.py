"""The fault scenarios for minutes, several faults each (issue 16): the table in RELIABILITY.md.

    uv run --frozen python -m benchmarks.chaos [--scenarios 1,1b,2,3,4,5,6] [--rate 500]
        [--scale 1.0] [--no-forward] [--write]

Each scenario of `tests/faults/scenarios.py` (the short tests run the same with one fault)
runs with the SDK's and the gateway's default settings, except what the scenario itself is
(scenario 5 gives the SDK a 1 s request timeout, the proxy holds answers 1.5 s): an
application process tracks `--rate` events/s into `headwater serve` (embedded chDB, a
redis-server of the run's own), while the faults of `CHAOS` hit one after another, each
after `calm_seconds` of steady tracking. The gateway forwards to a PostHog stand-in on
loopback unless `--no-forward`; its forward lag is from the event's `timestamp` (when
`track()` was called) to the stand-in receiving it, and before the gateway stops the run
waits (up to 90 s) for every tracked id to arrive there. Scenario 1b is scenario 1 without
Redis (the in-process dedupe store, which a restart empties): it tells what the killed
gateway's Redis claims cost apart from what the restart itself costs.

Columns: events (ids `track()` returned), faults, lost (returned, not stored), twice before
merge (`count() - uniqExact(event_id)` without FINAL, when the gateway has stopped), twice
after FINAL, time to recover (the longest, over the faults, from the repair until the
application had settled every event it had tracked by then), forward lag peak, and what
the SDK counted (retries, batches answered as duplicates, drops). `--scale` multiplies
every duration (0.2 for a quick look). `--write` puts the table in RELIABILITY.md between
the markers of its "Fault scenarios" section (appending the section when it is absent).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from tests.faults.outcome import Outcome
from tests.faults.scenarios import SCENARIOS, Plan
from tests.gateway.posthog_standin import posthog_standin

ROOT = Path(__file__).resolve().parent.parent
RELIABILITY = ROOT / "RELIABILITY.md"
BEGIN, END = "<!-- chaos table: begin -->", "<!-- chaos table: end -->"
COMMAND = "uv run --frozen python -m benchmarks.chaos --write"

CHAOS = {
    # a restart takes seconds of its own; the killed gateway's Redis claims are free once
    # it stops saying it is alive (5 s)
    "1": Plan(faults=4, fault_seconds=1.0, calm_seconds=30.0),
    "1b": Plan(faults=4, fault_seconds=1.0, calm_seconds=30.0),
    "2": Plan(faults=5, fault_seconds=5.0, calm_seconds=20.0),
    # longer than the gateway's insert deadline (10 s): requests are answered 503
    "3": Plan(faults=4, fault_seconds=15.0, calm_seconds=20.0),
    # PostHog unreachable for 2 minutes (the gateway SIGKILLed after one), then 30 s of
    # 500s and 30 s of 429s
    "4": Plan(faults=2, fault_seconds=120.0, calm_seconds=20.0),
    "5": Plan(faults=5, fault_seconds=10.0, calm_seconds=20.0),
    "6": Plan(faults=5, fault_seconds=2.0, calm_seconds=20.0),
}


def scaled(plan: Plan, scale: float, rate: float) -> Plan:
    return dataclasses.replace(
        plan,
        fault_seconds=plan.fault_seconds * scale,
        calm_seconds=plan.calm_seconds * scale,
        rate=rate,
    )


def run_one(number: str, plan: Plan, *, forward: bool) -> Outcome:
    directory = Path(tempfile.mkdtemp(prefix=f"hw-chaos-{number}-"))
    with ExitStack() as stack:
        standin = stack.enter_context(posthog_standin()) if forward else None
        outcome = SCENARIOS[number].run(directory, plan, forward_to=standin)
    if outcome.lost or outcome.twice_after_final:
        print(f"  kept for a look: {directory}", file=sys.stderr)
    else:
        shutil.rmtree(directory)
    return outcome


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def row(number: str, outcome: Outcome) -> str:
    notes = outcome.notes
    sdk = f"{notes.get('sdk_retried', 0)} retries, {notes.get('sdk_duplicates', 0)} duplicates"
    if outcome.sdk_drops:
        sdk += ", dropped " + ", ".join(f"{n} {why}" for why, n in outcome.sdk_drops.items())
    forward = "off" if outcome.forwarded is None else seconds(outcome.forward_lag_peak)
    if outcome.forwarded is not None and (outcome.forward_lost or outcome.forward_twice):
        forward += f" ({outcome.forward_lost} not forwarded, {outcome.forward_twice} twice)"
    cells = [
        number,
        SCENARIOS[number].fault,
        f"{outcome.events:,}",
        str(len(outcome.faults)),
        str(len(outcome.lost)),
        str(outcome.twice_before_merge),
        str(outcome.twice_after_final),
        seconds(outcome.recovered_in),
        forward,
        sdk,
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| # | fault | events | faults | lost | twice before merge | twice after FINAL"
    " | time to recover | forward lag peak | the SDK counted |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
)


def table(rows: list[str], *, rate: float, scale: float, started: str, took: float) -> str:
    return "\n".join(
        [
            f"`{COMMAND}` on {started} (rate {rate:g} events/s, scale {scale:g},"
            f" {took / 60:.0f} min on a shared two-core machine):",
            "",
            HEADER,
            *rows,
        ]
    )


def write(text: str) -> None:
    """Put `text` between the markers in RELIABILITY.md (re-read now: others edit it)."""
    current = RELIABILITY.read_text() if RELIABILITY.exists() else "# Reliability\n"
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in current and END in current:
        pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
        updated = pattern.sub(lambda _: block, current, count=1)
    else:
        updated = current.rstrip("\n") + f"\n\n## Fault scenarios\n\n{block}\n"
    RELIABILITY.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(CHAOS))
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--no-forward", action="store_true")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d")
    began = time.monotonic()
    rows = []
    for number in args.scenarios.split(","):
        plan = scaled(CHAOS[number], args.scale, args.rate)
        print(f"scenario {number}: {SCENARIOS[number].fault}, {plan}", file=sys.stderr)
        try:
            outcome = run_one(number, plan, forward=not args.no_forward)
        except AssertionError as exc:  # a part did not start or stop: the others still run
            print(f"scenario {number} failed: {exc}", file=sys.stderr)
            rows.append(f"| {number} | {SCENARIOS[number].fault} | the run failed: {exc!s:.80} |")
            continue
        print(outcome.summary(), file=sys.stderr)
        print(f"  recoveries: {[seconds(t) for t in outcome.recover_seconds]}", file=sys.stderr)
        rows.append(row(number, outcome))
    text = table(
        rows, rate=args.rate, scale=args.scale, started=started, took=time.monotonic() - began
    )
    print(text)
    if args.write:
        write(text)


if __name__ == "__main__":
    main()
