"""Redis dedupe in its steady state: CPU and memory per event id with a full TTL of ids.

    uv run --frozen python -m benchmarks.dedupe_redis [--ttl 20] [--seconds 60]

The gateway's `RedisDedupeStore` claims and confirms fresh ids, 100 per request and 8
requests in flight (as `gateway_load`'s "redis claim + confirm" stage), back to back for
`--seconds`, with a short `--ttl`, so that the store reaches the state a production one
lives in: every time bucket (or key) that a claim reads holds ids, and ids expire as fast
as new ones come. It reports, over the last half of the run:

- Redis CPU per claimed id (`INFO cpu`, user + system; expiry and unlinking included);
- Redis memory per id claimed within the last TTL (`used_memory` against its value before
  the run): the bytes one id costs, plus however long past the TTL the store keeps it.

Redis at 127.0.0.1:6379, under a prefix unique to the run, deleted at the end. To compare
another version of the store, put its `src/` first on `PYTHONPATH`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import redis

from headwater.gateway._dedupe import RedisDedupeStore

from .gateway_server import REDIS_URL, delete_prefix


def _cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class _Load:
    """Claims and confirms fresh ids; remembers (time, ids so far) after each request."""

    def __init__(self, store: RedisDedupeStore) -> None:
        self.store = store
        self.claimed: list[tuple[float, int]] = [(time.monotonic(), 0)]

    @property
    def total(self) -> int:
        return self.claimed[-1][1]

    def since(self, moment: float) -> int:
        """Ids claimed after `moment`."""
        return self.total - max((n for t, n in self.claimed if t <= moment), default=0)

    async def run(self, seconds: float) -> None:
        stop = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < stop:
                ids = [str(uuid.uuid4()) for _ in range(100)]
                ticket = self.store.ticket("bench", ids)
                await self.store.claim("bench", ids, ticket)
                await self.store.confirm([ticket])
                self.claimed.append((time.monotonic(), self.total + len(ids)))

        await asyncio.gather(*(worker() for _ in range(8)))


def measure(ttl: int, seconds: float) -> str:
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"hw-dedupe-{uuid.uuid4().hex[:8]}"
    memory_before = int(client.info("memory")["used_memory"])
    half: tuple[float, float, int] = (0.0, 0.0, 0)

    async def run() -> _Load:
        nonlocal half
        load = _Load(RedisDedupeStore(REDIS_URL, prefix=prefix, ttl=ttl, pending_ttl=60))
        await load.run(seconds / 2)  # fills the store: from here on, ids expire as they come
        half = (time.monotonic(), _cpu(client), load.total)
        await load.run(seconds / 2)
        await load.store.close()
        return load

    try:
        load = asyncio.run(run())
        end, cpu = time.monotonic(), _cpu(client)
        memory = int(client.info("memory")["used_memory"]) - memory_before
    finally:
        deleted = delete_prefix(prefix)
        client.close()
    measured = load.total - half[2]
    live = load.since(end - ttl)
    return (
        f"ttl {ttl} s, {seconds:.0f} s: {load.total:,} ids claimed,"
        f" {measured / (end - half[0]):,.0f}/s in the last half;"
        f" Redis CPU {(cpu - half[1]) / measured * 1e6:.2f} µs/id;"
        f" Redis memory {memory / live:.0f} bytes per id claimed within the TTL"
        f" ({live:,} ids, {memory / 1e6:,.0f} MB); {deleted:,} keys deleted"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--ttl", type=int, default=20, help="dedupe TTL, seconds")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    print(measure(args.ttl, args.seconds))


if __name__ == "__main__":
    main()
