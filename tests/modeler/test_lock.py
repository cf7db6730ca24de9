"""Two runs never overlap; a dead holder's lock is freed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from headwater.modeler import FileLock, ModelConfig, RedisLock, RunLocked, Runner

from .conftest import Warehouse

HOLD = """
import sys, time
from pathlib import Path
from headwater.modeler import FileLock
with FileLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_run_while_another_holds_the_lock_is_refused(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    path = tmp_path / "run.lock"
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RunLocked, match="another model run holds"), FileLock(path):
            pass
        os.kill(holder.pid, signal.SIGKILL)  # the holder dies without letting go
        holder.wait(timeout=10)
        with FileLock(path):  # the kernel freed it
            pass


def test_the_runner_takes_its_lock(warehouse: Warehouse, tmp_path: Path) -> None:
    lock = tmp_path / "shared.lock"
    runner = Runner(warehouse.clickhouse, ModelConfig(), lock=FileLock(lock))
    with FileLock(lock), pytest.raises(RunLocked):
        runner.run()


REDIS_HOLD = """
import sys, time
from headwater.modeler import RedisLock
with RedisLock(sys.argv[1], key=sys.argv[2], ttl=1):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_redis_lock_expires_after_its_holder_dies(redis_url: str) -> None:
    key = f"hw:test-lock:{uuid.uuid4().hex}"
    with subprocess.Popen(
        [sys.executable, "-c", REDIS_HOLD, redis_url, key], stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RunLocked, match=f"another model run holds the Redis lock {key}"):
            RedisLock(redis_url, key=key).__enter__()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        deadline = time.monotonic() + 10  # the key's 1 s TTL runs out
        while True:
            try:
                with RedisLock(redis_url, key=key, ttl=5):
                    break
            except RunLocked:
                assert time.monotonic() < deadline
                time.sleep(0.1)
