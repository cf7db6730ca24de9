"""An asyncio HTTP/1.1 load generator for `POST /v1/events` on 127.0.0.1.

Raw keep-alive streams, no HTTP library: the load generator shares the machine's two
cores with the gateway, so it must cost little; a small request costs this client
50-70 µs of CPU (a 100-event one ~160 µs, most of it making the body), which
`gateway_load` reports per phase. Bodies come from `gateway_workload.Bodies` (fresh ids).

- `closed_loop`: `connections` workers, each posting its next body as soon as the last
  one is answered, for `duration` seconds: the gateway's capacity.
- `open_loop`: requests at a fixed arrival rate over a pool of connections, whatever the
  answers' pace; latency is measured from each request's *scheduled* time, so a stalled
  gateway shows in the tail (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import msgspec

from benchmarks.gateway_workload import Bodies
from headwater.sdk import BatchResult

_result = msgspec.json.Decoder(BatchResult)


class HttpError(Exception):
    """The gateway answered something this client cannot read."""


@dataclass
class Tally:
    """What one load phase sent and got back."""

    requests: int = 0
    events_sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds
    elapsed: float = 0.0
    cpu_seconds: float = 0.0  # this process's, during the phase

    @property
    def failed(self) -> int:
        return self.requests - self.statuses[200]

    def percentile(self, q: float) -> float:
        """The q-quantile of the latencies (nearest rank), in seconds."""
        ordered = sorted(self.latencies)
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Connection:
    """One keep-alive HTTP/1.1 connection posting native batches."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        """(status, response body) of one request; `head` ends just before the length."""
        self._writer.write(b"%s%d\r\n\r\n%s" % (head, len(body), body))
        status_line, _, headers = (await self._reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
        length = 0
        for line in headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        try:
            status = int(status_line.split(b" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise HttpError(f"not an HTTP status line: {status_line!r}") from exc
        return status, await self._reader.readexactly(length)

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


def request_head(port: int, key: str) -> bytes:
    return (
        f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        "Content-Length: "
    ).encode()


class LoadGenerator:
    """Posts bodies of `size` events to the gateway on `port` with `key`."""

    def __init__(self, port: int, key: str, *, size: int, bodies: Bodies | None = None) -> None:
        self.port = port
        self.size = size
        self.bodies = bodies or Bodies()
        self._head = request_head(port, key)

    async def _send(self, connection: Connection, tally: Tally, scheduled: float) -> None:
        body = self.bodies.body(self.size)
        status, answer = await connection.post(self._head, body)
        tally.latencies.append(time.perf_counter() - scheduled)
        tally.requests += 1
        tally.events_sent += self.size
        tally.statuses[status] += 1
        if status == 200:
            result = _result.decode(answer)
            tally.accepted += result.accepted
            tally.duplicates += result.duplicates
            tally.rejected += len(result.rejected)

    async def closed_loop(self, *, connections: int, duration: float) -> Tally:
        """Each connection sends back to back for `duration` s; in-flight requests finish."""
        pool = [await Connection.open(self.port) for _ in range(connections)]
        tally = Tally()
        cpu = time.process_time()
        start = time.perf_counter()
        stop = start + duration

        async def worker(connection: Connection) -> None:
            while time.perf_counter() < stop:
                await self._send(connection, tally, time.perf_counter())

        await asyncio.gather(*(worker(c) for c in pool))
        tally.elapsed = time.perf_counter() - start
        tally.cpu_seconds = time.process_time() - cpu
        await asyncio.gather(*(c.close() for c in pool))
        return tally

    async def open_loop(self, *, rate: float, duration: float, connections: int) -> Tally:
        """`rate` requests/s for `duration` s over at most `connections` connections."""
        idle: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(connections):
            idle.put_nowait(await Connection.open(self.port))
        tally = Tally()
        tasks: set[asyncio.Task[None]] = set()

        async def one(scheduled: float) -> None:
            connection = await idle.get()
            try:
                await self._send(connection, tally, scheduled)
            finally:
                idle.put_nowait(connection)

        cpu = time.process_time()
        start = time.perf_counter()
        for n in range(int(rate * duration)):
            scheduled = start + n / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        tally.elapsed = time.perf_counter() - start
        tally.cpu_seconds = time.process_time() - cpu
        while not idle.empty():
            await idle.get_nowait().close()
        return tally
