"""Seen event ids: claimed before the insert, confirmed after it, released if it failed.

Two stores behind one Protocol: Redis (production, shared by every gateway worker) and
an in-process store (embedded mode: one process, bounded, reset by a restart; the
ReplacingMergeTree collapses what slips past it).

A request claims its ids under a ticket of its own, and its outcome is settled on the
ticket: `confirm` marks the ticket stored (one write per request, not one per event),
`release` frees the ids still held under it. An id held under a ticket that is neither
pending nor stored (released, or its claimer died and the pending TTL ran out) is free.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import NamedTuple, Protocol

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

    def ticket(self, keys: Sequence[str]) -> str:
        """A new ticket: the name one request claims `keys` (and only those) under."""
        ...

    async def claim(self, keys: Sequence[str], ticket: str) -> list[Claim]: ...

    async def confirm(self, tickets: Sequence[str]) -> None: ...

    async def release(self, ticket: str, keys: Sequence[str]) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class _Tickets:
    """Ticket names unique across processes: a random base per store and a counter."""

    def __init__(self) -> None:
        self._base = secrets.token_hex(6)
        self._count = itertools.count()

    def __call__(self) -> str:
        return f"{self._base}.{next(self._count):x}"


class MemoryDedupeStore:
    """The in-process store: the newest `capacity` ids, each for at most `ttl` seconds."""

    def __init__(self, *, ttl: float, pending_ttl: float, capacity: int = 2_000_000) -> None:
        self._ttl = ttl
        self._pending_ttl = pending_ttl
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()  # key → (ticket, until)
        self._pending: OrderedDict[str, tuple[list[str], float]] = OrderedDict()
        self._tickets = _Tickets()

    def ticket(self, keys: Sequence[str]) -> str:
        return self._tickets()

    async def claim(self, keys: Sequence[str], ticket: str) -> list[Claim]:
        now = time.monotonic()
        self._expire_tickets(now)
        held, _ = self._pending.pop(ticket, ([], 0.0))
        self._pending[ticket] = (held, now + self._pending_ttl)
        out = []
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == ticket:  # ours already
                out.append(Claim.NEW)
                continue
            if entry is not None and entry[1] > now:
                if entry[0] == "":
                    out.append(Claim.SEEN)
                    continue
                if entry[0] in self._pending:
                    out.append(Claim.PENDING)
                    continue
            self._entries[key] = (ticket, now + self._pending_ttl)
            self._entries.move_to_end(key)
            held.append(key)
            out.append(Claim.NEW)
        self._evict()
        return out

    async def confirm(self, tickets: Sequence[str]) -> None:
        until = time.monotonic() + self._ttl
        for ticket in tickets:
            held, _ = self._pending.pop(ticket, ([], 0.0))
            for key in held:
                if self._entries.get(key, ("",))[0] == ticket:
                    self._entries[key] = ("", until)  # "": stored
                    self._entries.move_to_end(key)
        self._evict()

    async def release(self, ticket: str, keys: Sequence[str]) -> None:
        self._pending.pop(ticket, None)
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == ticket:
                del self._entries[key]

    def _expire_tickets(self, now: float) -> None:
        """Forget tickets past the pending TTL (oldest first): their ids are free again."""
        while self._pending and next(iter(self._pending.values()))[1] <= now:
            self._pending.popitem(last=False)

    def _evict(self) -> None:
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._entries.clear()
        self._pending.clear()


# Each script takes ARGV = (TTL, pending TTL, key prefix, lines): one line per caller,
# `<ticket> <key> <key> ...` (a confirm's line is its tickets alone). Claims answer one
# byte per key. The lines travel as one argument, not as KEYS: redis-py packs each
# argument in Python (~2 µs each), which for a coalesced call of thousands of ids cost
# more than the rest of a request. The script builds each key, so the store needs a
# standalone Redis (or one shard); keys and project names hold no whitespace (`Settings`).
#
# An id's value is the ticket that claimed it, and `<prefix>ticket:<ticket>` is 'p' while
# that request inserts, 'd' once it stored its events. A request of one id needs no
# ticket key: its ticket is `=<key>`, and the id itself holds 'p' (with the pending TTL)
# and then 'd', as every id did before tickets.
_CLAIM = """
local ttl, pending, prefix = ARGV[1], ARGV[2], ARGV[3]
local out, n = {}, 0
for line in string.gmatch(ARGV[4], '[^\\n]+') do
  local ticket, mark, life
  for word in string.gmatch(line, '%S+') do
    if not ticket then
      ticket, mark, life = word, word, ttl
      if string.sub(ticket, 1, 1) == '=' then
        mark, life = 'p', pending
      else
        redis.call('SET', prefix .. 'ticket:' .. ticket, 'p', 'EX', pending)
      end
    else
      n = n + 1
      local key = prefix .. 'seen:' .. word
      out[n] = '1'
      if not redis.call('SET', key, mark, 'NX', 'EX', life) then
        local holder = redis.call('GET', key)
        local state = holder
        if holder == ticket then  -- ours already
          state = nil
        elseif holder and holder ~= 'p' and holder ~= 'd' then
          state = redis.call('GET', prefix .. 'ticket:' .. holder)
        end
        if state == 'd' then
          out[n] = '0'
        elseif state == 'p' then
          out[n] = '2'
        else  -- released, or its claimer died: ours now
          redis.call('SET', key, mark, 'EX', life)
        end
      end
    end
  end
end
return table.concat(out)
"""

_CONFIRM = """
local ttl, prefix = ARGV[1], ARGV[3]
for ticket in string.gmatch(ARGV[4], '%S+') do
  if string.sub(ticket, 1, 1) == '=' then
    redis.call('SET', prefix .. 'seen:' .. string.sub(ticket, 2), 'd', 'EX', ttl)
  else
    redis.call('SET', prefix .. 'ticket:' .. ticket, 'd', 'EX', ttl)
  end
end
return ''
"""

_RELEASE = """
local prefix = ARGV[3]
for line in string.gmatch(ARGV[4], '[^\\n]+') do
  local ticket, mark
  for word in string.gmatch(line, '%S+') do
    if not ticket then
      ticket, mark = word, word
      if string.sub(ticket, 1, 1) == '=' then
        mark = 'p'
      else
        local held = prefix .. 'ticket:' .. ticket
        if redis.call('GET', held) == 'd' then break end  -- stored: nothing to release
        redis.call('DEL', held)
      end
    else
      local key = prefix .. 'seen:' .. word
      if redis.call('GET', key) == mark then redis.call('DEL', key) end
    end
  end
end
return ''
"""

_CLAIMS = {ord(str(int(claim))): claim for claim in Claim}


class Coalescer:
    """Calls of one script made in the same event-loop tick, sent as one call.

    Under load, dozens of requests claim (and confirm) at once; one round trip for all of
    them costs redis-py's ~130 µs of Python once instead of per request. A call waits for
    at most one loop iteration. A single Lua call holds Redis for its whole length, so the
    lines of one tick are cut into calls of at most `max_words` words.
    """

    def __init__(
        self, run: Callable[[list[str]], Awaitable[bytes]], *, max_words: int = 5_000
    ) -> None:
        self._run = run
        self._max_words = max_words
        self._queued: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(self, words: Sequence[str], answers: int = 0) -> bytes:
        """The caller's `answers` bytes of the call's answer (one per claimed id)."""
        loop = asyncio.get_running_loop()
        if not self._queued:
            loop.call_soon(self._send)
        done: asyncio.Future[bytes] = loop.create_future()
        self._queued.append(_Call(" ".join(words), len(words), answers, done))
        return await done

    def _send(self) -> None:
        queued, self._queued = self._queued, []
        group: list[_Call] = []
        size = 0
        for call in queued:
            if group and size + call.words > self._max_words:
                self._start(group)
                group, size = [], 0
            group.append(call)
            size += call.words
        self._start(group)

    def _start(self, group: list[_Call]) -> None:
        task = asyncio.get_running_loop().create_task(self._call(group))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _call(self, group: list[_Call]) -> None:
        try:
            found = await self._run([call.line for call in group])
        except BaseException as exc:  # every caller of the group gets the same failure
            for call in group:
                if not call.done.done():
                    call.done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for call in group:
            if not call.done.done():
                call.done.set_result(found[start : start + call.answers])
            start += call.answers


class _Call(NamedTuple):
    line: str
    words: int
    answers: int
    done: asyncio.Future[bytes]


class RedisDedupeStore:
    """Ids in Redis as `<prefix>:seen:<project>:<event_id>`, each holding the ticket that
    claimed it; tickets as `<prefix>:ticket:<ticket>`, 'p' while pending, 'd' once stored.
    The id of a one-event request holds 'p' or 'd' itself.

    Claims, confirms and releases of concurrent requests are coalesced per loop tick.
    """

    def __init__(self, url: str, *, prefix: str = "hw", ttl: int, pending_ttl: int) -> None:
        # redis-py's default asyncio pool refuses a command past max_connections ("Too many
        # connections"), which would read as "Redis is down" under load: wait for one instead.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=32, timeout=2, socket_timeout=2, socket_connect_timeout=2
        )
        self._redis = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it
        self._args: list[int | str] = [ttl, pending_ttl, f"{prefix}:"]
        self._tickets = _Tickets()
        self._calls = {
            name: Coalescer(partial(self._script, name, self._redis.register_script(script)))
            for name, script in (("claim", _CLAIM), ("confirm", _CONFIRM), ("release", _RELEASE))
        }

    def ticket(self, keys: Sequence[str]) -> str:
        # One id, the most common request of all: the id itself carries the state, and
        # Redis keeps one key per event rather than two.
        return "=" + keys[0] if len(keys) == 1 else self._tickets()

    async def _script(self, name: str, script: AsyncScript, lines: list[str]) -> bytes:
        try:
            found = await script(args=[*self._args, "\n".join(lines)])
        except RedisError as exc:
            raise DedupeUnavailable(f"Redis {name} failed: {exc}") from exc
        return found if isinstance(found, bytes) else b""

    async def claim(self, keys: Sequence[str], ticket: str) -> list[Claim]:
        if not keys:
            return []
        found = await self._calls["claim"]([ticket, *keys], len(keys))
        return [_CLAIMS[status] for status in found]

    async def confirm(self, tickets: Sequence[str]) -> None:
        if tickets:
            await self._calls["confirm"](tickets)

    async def release(self, ticket: str, keys: Sequence[str]) -> None:
        await self._calls["release"]([ticket, *keys])

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except RedisError:
            return False

    async def close(self) -> None:
        await self._redis.aclose()
