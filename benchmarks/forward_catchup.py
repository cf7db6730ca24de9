"""How fast the forwarder catches up a backlog: PostHog back after an outage.

    uv run --frozen python -m benchmarks.forward_catchup [--events 200000] [--batch 500,1000]

1. A fresh chDB directory; `--events` stored events of one project (ten properties each,
   as JSON rows through the same `insert_lines` the gateway uses): the **raw insert**
   rate of this run, the yardstick.
2. A PostHog stand-in in a child process (`/batch/`: gunzip, decode, count the uuids;
   HTTP/1.1 keep-alive), so that it does not compete with the forwarder for its GIL.
3. For each `--batch` size, a new forwarding cursor (a database of its own, the same
   rows copied) and `Forwarder.drain()` timed: the **catch-up** rate, events/s, and its
   ratio to the raw insert; the stand-in must have received every uuid once.
"""

from __future__ import annotations

import argparse
import gzip
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import clickhouse_connect
import msgspec

from headwater.gateway._clickhouse import EVENT_COLUMNS, migrate
from headwater.gateway._forward_store import ForwardStore
from headwater.gateway._forwarder import Forwarder, Pace
from headwater.gateway._lease import SoleLease
from headwater.gateway._metrics import ForwardMetrics
from headwater.gateway._settings import PostHogRoutes, Settings
from headwater.modeler import ClickHouse

_decode = msgspec.json.Decoder(dict[str, Any])


def receive(path: Path | None = None) -> None:
    """The stand-in: serve until stdin closes; print `received unique` on the last line.
    With `path`, every uuid received is also appended to that file, a line each."""
    seen: list[str] = []
    record = path.open("a", encoding="ascii") if path is not None else None
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()  # headers and body are two writes: no Nagle wait between them
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            uuids = [event["uuid"] for event in _decode.decode(body)["batch"]]
            with lock:
                if record is None:
                    seen.extend(uuids)
                else:  # (a soak's uuids: on disk, not in this process's memory)
                    record.write("\n".join(uuids) + "\n")
                    record.flush()
            self.send_response(200)
            self.send_header("Content-Length", "13")
            self.end_headers()
            self.wfile.write(b'{"status": 1}')

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    host, port = server.server_address[:2]
    print(f"http://{host!s}:{port}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
    print(len(seen), len(set(seen)), flush=True)


def _rows(count: int) -> bytes:
    start = datetime.now(UTC) - timedelta(hours=3)
    lines = []
    for n in range(count):
        properties: dict[str, object] = {f"p{k}": f"value {n % 97} {k}" for k in range(8)}
        properties |= {"revenue_cents": n % 5000, "$current_url": f"https://shop.test/{n % 50}"}
        lines.append(
            msgspec.json.encode(
                [
                    "shop",
                    str(uuid.uuid4()),
                    f"event_{n % 20}",
                    f"user_{n % 5000}",
                    (start + timedelta(milliseconds=n)).isoformat(),
                    (start + timedelta(milliseconds=n)).isoformat(),
                    json.dumps(properties),
                    "bench",
                    "native",
                ]
            )
        )
    return b"\n".join(lines) + b"\n"


def _store(clickhouse: ClickHouse, body: bytes, count: int) -> float:
    """Insert in blocks of 50,000 rows; the seconds taken."""
    lines = body.splitlines(keepends=True)
    began = time.perf_counter()
    for first in range(0, count, 50_000):
        clickhouse.insert_lines("events", EVENT_COLUMNS, b"".join(lines[first : first + 50_000]))
    return time.perf_counter() - began


def main() -> None:
    """Run the benchmark; print one line per measurement."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", default="500,1000")
    args = parser.parse_args()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.forward_catchup", "--receive"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdout is not None
    assert receiver.stdin is not None
    url = receiver.stdout.readline().strip()
    directory = Path(tempfile.mkdtemp(prefix="forward-catchup-"))
    client = clickhouse_connect.get_client(dsn=f"chdb://{directory}")
    body = _rows(args.events)
    settings = Settings(
        clickhouse_url=f"chdb://{directory}",
        write_keys={"k": "shop"},
        posthog_host=url,
        posthog_api_key="phc_bench",
    )
    for size in (int(s) for s in args.batch.split(",")):
        clickhouse = ClickHouse(client, database=f"catchup_{size}", embedded=True)
        migrate(clickhouse)
        store = ForwardStore(clickhouse, settle=0)
        store.begin()  # forwarding began before the backlog was stored
        insert = _store(clickhouse, body, args.events)
        time.sleep(0.1)
        forwarder = Forwarder(
            store,
            PostHogRoutes(settings),
            lease=SoleLease(),
            metrics=ForwardMetrics(),
            pace=Pace(batch_size=size),
        )
        began = time.perf_counter()
        handled = forwarder.drain()
        took = time.perf_counter() - began
        raw = args.events / insert
        rate = handled / took
        print(
            f"batch {size}: raw insert {raw:,.0f} events/s ({insert:.2f} s);"
            f" catch-up {rate:,.0f} events/s ({took:.2f} s, {handled:,} events);"
            f" ratio {rate / raw:.3f}",
            flush=True,
        )
    receiver.stdin.close()
    received, unique = (int(x) for x in receiver.stdout.read().split())
    receiver.wait()
    expected = args.events * len(args.batch.split(","))
    print(f"the stand-in received {received:,} events, {unique:,} unique (sent {expected:,})")


if __name__ == "__main__":
    if "--receive" in sys.argv:
        after = sys.argv[sys.argv.index("--receive") + 1 :]
        receive(Path(after[0]) if after else None)
    else:
        main()
