"""One run at a time: a lock that is freed when its holder dies.

Embedded (one machine): an `flock` on a file beside the data — the kernel releases it
when the process exits, however it exits. A ClickHouse server shared by several hosts
takes the lock in Redis when `HEADWATER_REDIS_URL` is set (a key with a TTL that the
holder keeps extending), so a dead holder's lock expires.
"""

from __future__ import annotations

import fcntl
import os
import threading
import uuid
from pathlib import Path
from types import TracebackType
from typing import Protocol

import redis

from ._errors import RunLocked


class RunLock(Protocol):
    def __enter__(self) -> RunLock: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class FileLock:
    """An exclusive, non-blocking `flock` on `path`."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise RunLocked(f"another model run holds {self._path}") from exc
        self._fd = fd
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class RedisLock:
    """`SET key token NX EX ttl`, extended every ttl/3 while held; deleted only by its owner."""

    _OWNED = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call"
    _RELEASE = _OWNED + "('DEL', KEYS[1]) end return 0"
    _EXTEND = _OWNED + "('EXPIRE', KEYS[1], ARGV[2]) end return 0"

    def __init__(self, url: str, *, key: str, ttl: int = 60) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=5)
        self._key = key
        self._ttl = ttl
        self._token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> RedisLock:
        if not self._redis.set(self._key, self._token, nx=True, ex=self._ttl):
            raise RunLocked(f"another model run holds the Redis lock {self._key}")
        self._heartbeat = threading.Thread(target=self._extend, daemon=True)
        self._heartbeat.start()
        return self

    def _extend(self) -> None:
        while not self._stop.wait(self._ttl / 3):
            self._redis.eval(self._EXTEND, 1, self._key, self._token, self._ttl)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        self._redis.eval(self._RELEASE, 1, self._key, self._token)
        self._redis.close()
