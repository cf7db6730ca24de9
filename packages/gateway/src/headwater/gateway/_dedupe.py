"""Seen event ids: claimed before the insert, confirmed after it, released if it failed.

Two stores behind one Protocol: Redis (production, shared by every gateway worker) and
an in-process store (embedded mode: one process, bounded, reset by a restart; the
ReplacingMergeTree collapses what slips past it).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Protocol

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
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


# Each script takes ARGV = (TTL, key prefix, ids joined by newlines) and answers one byte
# per id (claims). The ids travel as one argument, not as KEYS: redis-py packs each
# argument in Python (~2 µs each), which for a coalesced call of thousands of ids cost
# more than the rest of a request. The script builds each key, so the store needs a
# standalone Redis (or one shard); project names cannot hold a newline (`Settings`).
_CLAIM = """
local ttl, prefix = ARGV[1], ARGV[2]
local out, n = {}, 0
for id in string.gmatch(ARGV[3], '[^\\n]+') do
  n = n + 1
  local key = prefix .. id
  if redis.call('SET', key, 'p', 'NX', 'EX', ttl) then
    out[n] = '1'
  elseif redis.call('GET', key) == 'd' then
    out[n] = '0'
  else
    out[n] = '2'
  end
end
return table.concat(out)
"""

_CONFIRM = """
local ttl, prefix = ARGV[1], ARGV[2]
for id in string.gmatch(ARGV[3], '[^\\n]+') do
  redis.call('SET', prefix .. id, 'd', 'EX', ttl)
end
return 0
"""

_RELEASE = """
local prefix = ARGV[2]
for id in string.gmatch(ARGV[3], '[^\\n]+') do
  local key = prefix .. id
  if redis.call('GET', key) == 'p' then redis.call('DEL', key) end
end
return 0
"""

_CLAIMS = {ord(str(int(claim))): claim for claim in Claim}


class Coalescer:
    """Calls of one script made in the same event-loop tick, sent as one call.

    Under load, dozens of requests claim (and confirm) at once; one round trip for all of
    them costs redis-py's ~130 µs of Python once instead of per request. A call waits for
    at most one loop iteration. A single Lua call holds Redis for its whole length, so the
    ids of one tick are cut into calls of at most `max_ids`.
    """

    def __init__(
        self, run: Callable[[list[str]], Awaitable[bytes]], *, max_ids: int = 5_000
    ) -> None:
        self._run = run
        self._max_ids = max_ids
        self._queued: list[tuple[Sequence[str], asyncio.Future[bytes]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(self, ids: Sequence[str]) -> bytes:
        """One status byte per id (for claims), or b"" (confirm, release)."""
        loop = asyncio.get_running_loop()
        if not self._queued:
            loop.call_soon(self._send)
        done: asyncio.Future[bytes] = loop.create_future()
        self._queued.append((ids, done))
        return await done

    def _send(self) -> None:
        queued, self._queued = self._queued, []
        group: list[tuple[Sequence[str], asyncio.Future[bytes]]] = []
        size = 0
        for call in queued:
            if group and size + len(call[0]) > self._max_ids:
                self._start(group)
                group, size = [], 0
            group.append(call)
            size += len(call[0])
        self._start(group)

    def _start(self, group: list[tuple[Sequence[str], asyncio.Future[bytes]]]) -> None:
        task = asyncio.get_running_loop().create_task(self._call(group))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _call(self, group: list[tuple[Sequence[str], asyncio.Future[bytes]]]) -> None:
        ids = [key for keys, _ in group for key in keys]
        try:
            found = await self._run(ids)
        except BaseException as exc:  # every caller of the group gets the same failure
            for _, done in group:
                if not done.done():
                    done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for keys, done in group:
            if not done.done():
                done.set_result(found[start : start + len(keys)])  # b"" for confirm, release
            start += len(keys)


class RedisDedupeStore:
    """Ids in Redis as `<prefix>:seen:<project>:<event_id>`: 'p' while pending, 'd' once stored.

    Claims, confirms and releases of concurrent requests are coalesced per loop tick.
    """

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
        scripts = {
            "claim": (self._redis.register_script(_CLAIM), pending_ttl),
            "confirm": (self._redis.register_script(_CONFIRM), ttl),
            "release": (self._redis.register_script(_RELEASE), 0),
        }
        self._calls = {
            name: Coalescer(partial(self._script, name, script, seconds))
            for name, (script, seconds) in scripts.items()
        }

    async def _script(self, name: str, script: AsyncScript, ttl: int, ids: list[str]) -> bytes:
        try:
            found = await script(args=[ttl, self._prefix, "\n".join(ids)])
        except RedisError as exc:
            raise DedupeUnavailable(f"Redis {name} failed: {exc}") from exc
        return found if isinstance(found, bytes) else b""

    async def claim(self, keys: Sequence[str]) -> list[Claim]:
        if not keys:
            return []
        found = await self._calls["claim"](keys)
        return [_CLAIMS[status] for status in found]

    async def confirm(self, keys: Sequence[str]) -> None:
        if keys:
            await self._calls["confirm"](keys)

    async def release(self, keys: Sequence[str]) -> None:
        if keys:
            await self._calls["release"](keys)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except RedisError:
            return False

    async def close(self) -> None:
        await self._redis.aclose()
