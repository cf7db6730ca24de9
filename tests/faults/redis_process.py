"""A `redis-server` the test owns, on a port of its own, that it can SIGKILL and restart.

No persistence (`--save ""`, no AOF): a restart comes back empty, as a Redis without a
disk, or one whose data was lost, does.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from ..redis_server import free_port

START_SECONDS = 20.0


class RedisProcess:
    """redis-server on 127.0.0.1:`port`; `url` stays the same across restarts."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("the fault tests need redis-server on the PATH")
        self._binary = binary
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (empty) and wait until it answers."""
        assert self._process is None or self._process.poll() is not None, "already running"
        self._process = subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_SECONDS
        while not self.answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def answers(self) -> bool:
        try:
            with redis.Redis.from_url(self.url, socket_connect_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        assert self._process is not None
        self._process.kill()
        self._process.wait(START_SECONDS)

    def keys(self) -> int:
        """How many keys it holds now."""
        with redis.Redis.from_url(self.url) as client:
            return int(client.dbsize())

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(START_SECONDS)
