"""Where the gateway's event loop spends its time under load: cProfile of the gateway.

    uv run --frozen python -m benchmarks.gateway_profile [--size 100] [--connections 32]

Starts the gateway as `benchmarks.gateway_load` does, but under cProfile
(`python -m benchmarks.gateway_server`), posts `--size`-event bodies back to back for
`--seconds`, stops it, and prints the functions with the most own time and the
gateway's and its libraries' functions by cumulative time. cProfile sees the event loop
thread only (the chDB inserts run on another), and its per-call overhead inflates code
made of many small calls (redis-py's command packing) more than C code (msgspec): read
the shares, not the absolute times. `--save FILE` keeps the profile for `pstats`/snakeviz.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import pstats
import tempfile
from pathlib import Path

from benchmarks.gateway_client import LoadGenerator
from benchmarks.gateway_server import WRITE_KEY, GatewayProcess


def profile(
    *,
    size: int,
    connections: int,
    seconds: float,
    out: Path,
    gateway_src: list[str],
    log_level: str,
) -> str:
    """Run the load against a profiled gateway; a one-line account of the run."""
    gateway = GatewayProcess(profile=out, log_level=log_level, pythonpath=gateway_src)
    try:
        with gateway:
            load = LoadGenerator(gateway.port, WRITE_KEY, size=size)
            cpu = gateway.cpu_seconds()[0]
            tally = asyncio.run(load.closed_loop(connections=connections, duration=seconds))
            busy = (gateway.cpu_seconds()[0] - cpu) / tally.elapsed
    finally:
        gateway.forget_ids()
        gateway.remove()
    return (
        f"{tally.requests:,} requests of {size} events in {tally.elapsed:.1f} s under cProfile:"
        f" {tally.accepted / tally.elapsed:,.0f} events/s, gateway CPU {busy:.2f} cores,"
        f" non-200: {tally.failed}"
    )


def report(path: Path, top: int) -> str:
    stream = io.StringIO()
    stats = pstats.Stats(str(path), stream=stream)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(r"headwater|redis|litestar|h11|uvicorn", top)
    return stream.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100, help="events per request")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--gateway-src", action="append", default=[], help="first on the gateway's PYTHONPATH"
    )
    parser.add_argument("--save", type=Path, default=None, help="keep the profile here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = args.save or Path(scratch) / "gateway.prof"
        line = profile(
            size=args.size,
            connections=args.connections,
            seconds=args.seconds,
            out=out,
            gateway_src=args.gateway_src,
            log_level=args.log_level,
        )
        print(line)
        print(report(out, args.top))


if __name__ == "__main__":
    main()
