"""Seen event ids: claimed before the insert, confirmed after it, released if it failed.

Two stores behind one Protocol: Redis (production, shared by every gateway worker) and
an in-process store (embedded mode: one process, bounded, reset by a restart; the
ReplacingMergeTree collapses what slips past it).
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ._errors import DedupeUnavailable


class Claim(enum.IntEnum):
    """What a claim found for one id."""

    SEEN = 0  # stored before: a duplicate
    NEW = 1  # ours now: insert it, then confirm or release
    PENDING = 2  # another request is inserting it right now


class DedupeStore(Protocol):
    """Where the gateway remembers which event ids it has stored."""

    async def claim(self, keys: Sequence[str]) -> list[Claim]: ...

    async def confirm(self, keys: Sequence[str]) -> None: ...

    async def release(self, keys: Sequence[str]) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryDedupeStore:
    """The in-process store: the newest `capacity` ids, each for at most `ttl` seconds."""

    def __init__(self, *, ttl: float, pending_ttl: float, capacity: int = 2_000_000) -> None:
        self._ttl = ttl
        self._pending_ttl = pending_ttl
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[bool, float]] = OrderedDict()  # key → (done, until)

    async def claim(self, keys: Sequence[str]) -> list[Claim]:
        now = time.monotonic()
        out = []
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and entry[1] > now:
                out.append(Claim.SEEN if entry[0] else Claim.PENDING)
                continue
            self._entries[key] = (False, now + self._pending_ttl)
            self._entries.move_to_end(key)
            out.append(Claim.NEW)
        self._evict()
        return out

    async def confirm(self, keys: Sequence[str]) -> None:
        until = time.monotonic() + self._ttl
        for key in keys:
            self._entries[key] = (True, until)
            self._entries.move_to_end(key)
        self._evict()

    async def release(self, keys: Sequence[str]) -> None:
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and not entry[0]:
                del self._entries[key]

    def _evict(self) -> None:
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._entries.clear()


# One round trip for a whole batch: SET NX each id as pending; report what was there.
_CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, 'p', 'NX', 'EX', ARGV[1]) then
    out[i] = 1
  elseif redis.call('GET', key) == 'd' then
    out[i] = 0
  else
    out[i] = 2
  end
end
return out
"""

_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == 'p' then redis.call('DEL', key) end
end
return 0
"""


class RedisDedupeStore:
    """Ids in Redis as `<prefix>:seen:<project>:<event_id>`: 'p' while pending, 'd' once stored."""

    def __init__(self, url: str, *, prefix: str = "hw", ttl: int, pending_ttl: int) -> None:
        self._prefix = f"{prefix}:seen:"
        # redis-py's default asyncio pool refuses a command past max_connections ("Too many
        # connections"), which would read as "Redis is down" under load: wait for one instead.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=32, timeout=2, socket_timeout=2, socket_connect_timeout=2
        )
        self._redis = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it
        self._ttl = ttl
        self._pending_ttl = pending_ttl
        self._claim = self._redis.register_script(_CLAIM)
        self._release = self._redis.register_script(_RELEASE)

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def claim(self, keys: Sequence[str]) -> list[Claim]:
        if not keys:
            return []
        try:
            found = await self._claim(keys=[self._key(k) for k in keys], args=[self._pending_ttl])
        except RedisError as exc:
            raise DedupeUnavailable(f"Redis claim failed: {exc}") from exc
        return [Claim(int(v)) for v in found]

    async def confirm(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(self._key(key), "d", ex=self._ttl)
                await pipe.execute()
        except RedisError as exc:
            raise DedupeUnavailable(f"Redis confirm failed: {exc}") from exc

    async def release(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        try:
            await self._release(keys=[self._key(k) for k in keys])
        except RedisError as exc:
            raise DedupeUnavailable(f"Redis release failed: {exc}") from exc

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except RedisError:
            return False

    async def close(self) -> None:
        await self._redis.aclose()
