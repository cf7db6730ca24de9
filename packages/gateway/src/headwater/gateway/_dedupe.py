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
import contextlib
import enum
import itertools
import math
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


class Claim(enum.StrEnum):
    """What a claim found for one id: one character of a claim's answer."""

    SEEN = "0"  # stored before: a duplicate
    NEW = "1"  # ours now: insert it, then confirm or release
    PENDING = "2"  # another request is inserting it right now


class DedupeStore(Protocol):
    """Where the gateway remembers which event ids it has stored."""

    def ticket(self, project: str, ids: Sequence[str]) -> str:
        """A new ticket: the name one request claims a project's `ids` (and only those)
        under."""
        ...

    async def claim(self, project: str, ids: Sequence[str], ticket: str) -> str:
        """One `Claim` character per id, in order (a string: a request whose ids are all
        new is told so by one `count`, not a loop)."""
        ...

    async def confirm(self, tickets: Sequence[str]) -> None: ...

    async def release(self, ticket: str, project: str, ids: Sequence[str]) -> None: ...

    async def ping(self) -> bool: ...

    async def start(self) -> None:
        """Begin saying this process is alive (its pending claims count only while so)."""
        ...

    async def close(self) -> None: ...


class _Tickets:
    """Ticket names unique across processes: a random base per store and a counter."""

    def __init__(self) -> None:
        self.base = secrets.token_hex(6)
        self._count = itertools.count()

    def __call__(self) -> str:
        return f"{self.base}.{next(self._count):x}"


class MemoryDedupeStore:
    """The in-process store: the newest `capacity` ids, each for at most `ttl` seconds."""

    def __init__(self, *, ttl: float, pending_ttl: float, capacity: int = 2_000_000) -> None:
        self._ttl = ttl
        self._pending_ttl = pending_ttl
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()  # key → (ticket, until)
        self._pending: OrderedDict[str, tuple[list[str], float]] = OrderedDict()
        self._tickets = _Tickets()

    def ticket(self, project: str, ids: Sequence[str]) -> str:
        return self._tickets()

    async def start(self) -> None:
        """Nothing to say: the store lives and dies with its process."""

    async def claim(self, project: str, ids: Sequence[str], ticket: str) -> str:
        now = time.monotonic()
        self._expire_tickets(now)
        held, _ = self._pending.pop(ticket, ([], 0.0))
        self._pending[ticket] = (held, now + self._pending_ttl)
        out = []
        for event_id in ids:
            key = f"{project}:{event_id}"
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
        return "".join(out)

    async def confirm(self, tickets: Sequence[str]) -> None:
        until = time.monotonic() + self._ttl
        for ticket in tickets:
            held, _ = self._pending.pop(ticket, ([], 0.0))
            for key in held:
                if self._entries.get(key, ("",))[0] == ticket:
                    self._entries[key] = ("", until)  # "": stored
                    self._entries.move_to_end(key)
        self._evict()

    async def release(self, ticket: str, project: str, ids: Sequence[str]) -> None:
        self._pending.pop(ticket, None)
        for event_id in ids:
            key = f"{project}:{event_id}"
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


# Redis keeps the ids a project's gateways claimed in hashes, one per time bucket:
# `<prefix>:ids:<project>:<bucket>` maps an event id to the ticket that claimed it, and
# `<prefix>:ticket:<ticket>` is 'p' while that request inserts, 'd' once its events are
# stored. A ticket is `<process>.<n>`; `<prefix>:alive:<process>` exists while that
# gateway process runs (it renews the key every `ALIVE_SECONDS` / 4): a pending ticket
# whose process is gone is dead at once, not after the pending TTL, so a client's retry
# after a gateway was killed mid-insert is stored within seconds of the restart (a copy
# the dead insert may have stored is collapsed by the table).
#
# A claim reads the current bucket and the `depth` before it (`HMGET`, every id of the
# call at once) and writes its new ids into the current one (one `HSET`). A bucket
# spans `width` = TTL/`depth` seconds and is unlinked (freed in the background, however
# big) once it falls out of the window, so an id is remembered for between TTL and
# TTL + `width`; each bucket also expires on its own, in case no gateway claims anything
# for that long. Against a key with an expiry per id, in the steady state (every bucket
# full, ids expiring as they come), this takes half the memory per id and 20-38% less
# Redis CPU; each bucket read costs a lookup per id, hence two buckets per TTL, not more
# (`benchmarks/dedupe_redis.py`, BENCHMARKS.md gateway section 2).
#
# A request of one id marks its id 'd' itself at the confirm and drops its ticket key, so
# single-event traffic keeps one hash field per event. Its ticket names the id:
# `<unique>=<project>:<id>`.
#
# Each script takes ARGV = (pending TTL, key prefix, bucket width, depth, lines): one line
# per caller, `<ticket> \x01<project> <id> <id> ...` (a confirm's or a release's line is
# its tickets alone). Claims answer one byte per id. The lines travel as one argument, not
# as KEYS: redis-py packs each argument in Python (~2 µs each), which for a coalesced call
# of thousands of ids cost more than the rest of a request. The script builds each key,
# so the store needs a standalone Redis (or one shard); keys and project names hold no
# whitespace (`Settings`).
_WINDOW = """
local pending, prefix, width, depth = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local bucket = math.floor(tonumber(redis.call('TIME')[1]) / width)
local CHUNK = 4000  -- arguments per call: Lua's unpack() stops at about 8,000
-- into[name] = the value of the key `head .. name`, for every name of `names` (MGET)
local function read_keys(head, names, into)
  for first = 1, #names, CHUNK do
    local last, keys = math.min(first + CHUNK - 1, #names), {}
    for j = first, last do keys[#keys + 1] = head .. names[j] end
    local found = redis.call('MGET', unpack(keys))
    for j = first, last do into[names[j]] = found[j - first + 1] end
  end
end
"""

_CLAIM = (
    _WINDOW
    + """
local groups, names, out, n, writers = {}, {}, {}, 0, {}
for line in string.gmatch(ARGV[5], '[^\\n]+') do
  local ticket, group
  for word in string.gmatch(line, '%S+') do
    if not ticket then
      ticket = word
    elseif string.byte(word) == 1 then
      local name = string.sub(word, 2)
      group = groups[name]
      if not group then
        group = {ids = {}, at = {}, tickets = {}}
        groups[name], names[#names + 1] = group, name
      end
    else
      n = n + 1
      local size = #group.ids + 1
      group.ids[size], group.at[size], group.tickets[size] = word, n, ticket
    end
  end
end
for _, name in ipairs(names) do
  local group = groups[name]
  local ids, count = group.ids, #group.ids
  local base = prefix .. 'ids:' .. name .. ':'
  -- who holds each id: the newest bucket that has it says
  local holders, wanted = {}, {}
  for i = 1, count do wanted[i] = i end
  for back = 0, depth do
    if #wanted == 0 then break end
    local key, missing = base .. (bucket - back), {}
    for first = 1, #wanted, CHUNK do
      local last, asked = math.min(first + CHUNK - 1, #wanted), {}
      for j = first, last do asked[#asked + 1] = ids[wanted[j]] end
      local found = redis.call('HMGET', key, unpack(asked))
      for j = first, last do
        local holder = found[j - first + 1]
        if holder then holders[wanted[j]] = holder else missing[#missing + 1] = wanted[j] end
      end
    end
    wanted = missing
  end
  -- what became of the holders' requests
  local states, tickets = {}, {}
  for i = 1, count do
    local holder = holders[i]
    if holder and holder ~= 'd' and not states[holder] then
      states[holder] = false
      tickets[#tickets + 1] = holder
    end
  end
  read_keys(prefix .. 'ticket:', tickets, states)
  -- a pending ticket of a process that no longer says it is alive is dead with it
  local owners, bases = {}, {}
  for _, holder in ipairs(tickets) do
    if states[holder] == 'p' then
      local base = string.match(holder, '^([^.]*)%.')
      if base and owners[base] == nil then
        owners[base] = false
        bases[#bases + 1] = base
      end
    end
  end
  read_keys(prefix .. 'alive:', bases, owners)
  for _, holder in ipairs(tickets) do
    local base = string.match(holder, '^([^.]*)%.')
    if states[holder] == 'p' and base and not owners[base] then states[holder] = false end
  end
  local claimed, fields = {}, {}  -- claimed: id → ticket, in this call
  for i = 1, count do
    local id, ticket = ids[i], group.tickets[i]
    local answer, holder = '1', claimed[id]
    if holder then
      if holder ~= ticket then answer = '2' end  -- another request of this call has it
    else
      holder = holders[i]
      if holder and holder ~= ticket then
        local state = holder == 'd' and 'd' or states[holder]
        if state == 'd' then
          answer = '0'
        elseif state == 'p' then
          answer = '2'
        else  -- released, or its claimer died: ours now
          holder = nil
        end
      end
      if not holder then
        fields[#fields + 1], fields[#fields + 2] = id, ticket
        writers[ticket] = true
      end
      if answer == '1' then claimed[id] = ticket end
    end
    out[group.at[i]] = answer
  end
  local key = base .. bucket
  for first = 1, #fields, CHUNK do
    redis.call('HSET', key, unpack(fields, first, math.min(first + CHUNK - 1, #fields)))
  end
  if #fields > 0 then redis.call('EXPIRE', key, (depth + 3) * width) end
  redis.call('UNLINK', base .. (bucket - depth - 1), base .. (bucket - depth - 2))
end
-- a ticket key only for a request that now holds ids (one of duplicates alone needs none)
for ticket in pairs(writers) do
  redis.call('SET', prefix .. 'ticket:' .. ticket, 'p', 'EX', pending)
end
return table.concat(out)
"""
)

_CONFIRM = (
    _WINDOW
    + """
for ticket in string.gmatch(ARGV[5], '%S+') do
  local name, id = string.match(ticket, '^[^=]*=(.*):([^:]*)$')
  if name then  -- one id: marked stored itself
    local base = prefix .. 'ids:' .. name .. ':'
    for back = 0, depth do
      local key = base .. (bucket - back)
      if redis.call('HGET', key, id) == ticket then
        redis.call('HSET', key, id, 'd')
        break
      end
    end
    redis.call('DEL', prefix .. 'ticket:' .. ticket)
  else  -- its ids outlive their bucket by at most a width
    redis.call('SET', prefix .. 'ticket:' .. ticket, 'd', 'EX', (depth + 2) * width)
  end
end
return ''
"""
)

_RELEASE = """
for ticket in string.gmatch(ARGV[5], '%S+') do
  local held = ARGV[2] .. 'ticket:' .. ticket
  if redis.call('GET', held) ~= 'd' then redis.call('DEL', held) end
end
return ''
"""

BUCKETS = 2  # time buckets per TTL: an id is kept for the TTL to 3/2 of it
ALIVE_SECONDS = 5  # a gateway that has not said it is alive for this long is taken as dead


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
    """Ids in Redis in hashes per project and time bucket, each id holding the ticket that
    claimed it; tickets as `<prefix>:ticket:<ticket>`, 'p' while pending, 'd' once stored.
    The id of a one-event request is marked 'd' itself (see the scripts above).

    Claims, confirms and releases of concurrent requests are coalesced per loop tick.
    """

    def __init__(self, url: str, *, prefix: str = "hw", ttl: int, pending_ttl: int) -> None:
        # redis-py's default asyncio pool refuses a command past max_connections ("Too many
        # connections"), which would read as "Redis is down" under load: wait for one instead.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=32, timeout=2, socket_timeout=2, socket_connect_timeout=2
        )
        self._redis = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it
        width = max(1, math.ceil(ttl / BUCKETS))
        self._args: list[int | str] = [pending_ttl, f"{prefix}:", width, BUCKETS]
        self._tickets = _Tickets()
        self._alive_key = f"{prefix}:alive:{self._tickets.base}"
        self._heartbeat: asyncio.Task[None] | None = None
        self._calls = {
            name: Coalescer(partial(self._script, name, self._redis.register_script(script)))
            for name, script in (("claim", _CLAIM), ("confirm", _CONFIRM), ("release", _RELEASE))
        }

    def ticket(self, project: str, ids: Sequence[str]) -> str:
        # One id, the most common request of all: the ticket names it, so that the confirm
        # can mark the id itself and Redis keeps one entry per event rather than two.
        return f"{self._tickets()}={project}:{ids[0]}" if len(ids) == 1 else self._tickets()

    async def _script(self, name: str, script: AsyncScript, lines: list[str]) -> bytes:
        try:
            found = await script(args=[*self._args, "\n".join(lines)])
        except RedisError as exc:
            raise DedupeUnavailable(f"Redis {name} failed: {exc}") from exc
        return found if isinstance(found, bytes) else b""

    async def claim(self, project: str, ids: Sequence[str], ticket: str) -> str:
        if not ids:
            return ""
        found = await self._calls["claim"]([ticket, "\x01" + project, *ids], len(ids))
        if len(found) != len(ids):  # an answer per id, or none to trust
            raise DedupeUnavailable(f"Redis claim answered {len(found)} of {len(ids)} ids")
        return found.decode("ascii")

    async def confirm(self, tickets: Sequence[str]) -> None:
        if tickets:
            await self._calls["confirm"](tickets)

    async def release(self, ticket: str, project: str, ids: Sequence[str]) -> None:
        await self._calls["release"]([ticket])

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except RedisError:
            return False

    async def start(self) -> None:
        """Say this process is alive now, then every `ALIVE_SECONDS` / 4 until `close`."""
        await self._say_alive()
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name="alive")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(ALIVE_SECONDS / 4)
            await self._say_alive()

    async def _say_alive(self) -> None:
        # Redis away: claims fail too meanwhile; the next beat tries again
        with contextlib.suppress(RedisError):
            await self._redis.set(self._alive_key, b"1", ex=ALIVE_SECONDS)

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(RedisError):
                await self._redis.delete(self._alive_key)
        await self._redis.aclose()
