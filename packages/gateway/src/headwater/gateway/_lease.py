"""Who forwards: one process among the gateways sharing a ClickHouse database.

The lease is a Redis lock (redis-py's `Lock`: a token under a key with a time to live,
renewed by its holder, deleted only by it). Without Redis there is nothing to share it
through: embedded, chDB already belongs to one process; against a server, each gateway
then forwards on its own (PostHog collapses the repeats of a uuid, at a cost), which the
gateway says once at start-up.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol

import redis
from redis.exceptions import LockError, RedisError

logger = logging.getLogger("headwater.gateway")


class Lease(Protocol):
    """The right to forward a database's events."""

    def hold(self) -> bool:
        """Take the lease, or renew it when held; whether this process holds it now."""
        ...

    def release(self) -> None:
        """Give the lease up (another process may take it at once)."""
        ...


class SoleLease:
    """The lease of a process that shares forwarding with no one."""

    def hold(self) -> bool:
        """Always held."""
        return True

    def release(self) -> None:
        """Nothing to give up."""


class RedisLease:
    """A Redis lock under `key`, held for `ttl` seconds past each `hold()`."""

    def __init__(self, url: str, *, key: str, ttl: float) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._lock = self._redis.lock(key, timeout=ttl, thread_local=False)
        self._key = key
        self._held = False
        self._failing = False

    def hold(self) -> bool:
        """Renew the lock when held, else try to take it; False when Redis does not answer."""
        try:
            self._held = self._renew() or bool(self._lock.acquire(blocking=False))
        except RedisError as exc:
            if not self._failing:
                logger.warning("forwarding paused: Redis does not answer for its lease (%s)", exc)
            self._failing, self._held = True, False
            return False
        if self._failing:
            logger.info("Redis answers again: the forwarding lease is %s", self._state)
        self._failing = False
        return self._held

    def _renew(self) -> bool:
        if not self._held:
            return False
        try:
            self._lock.reacquire()
        except LockError:  # expired, and perhaps taken by another gateway meanwhile
            logger.warning("the forwarding lease %s was lost; trying to take it again", self._key)
            return False
        return True

    @property
    def _state(self) -> str:
        return "held here" if self._held else "held elsewhere"

    def release(self) -> None:
        """Delete the lock if this process holds it; close the connection."""
        if self._held:
            with contextlib.suppress(LockError, RedisError):  # expired, or Redis away: it expires
                self._lock.release()
            self._held = False
        self._redis.close()
