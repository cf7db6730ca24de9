"""The gateway under test, in a process of its own on 127.0.0.1.

`GatewayProcess` starts `headwater serve` (the installed console script, so that the
child's pid is the gateway's) with a fresh chDB directory, Redis dedupe under a prefix
unique to the run and a benchmark write key; it waits for `/readyz`, reads `/metrics`,
reads the process's CPU time from `/proc`, and stops it with SIGINT (uvicorn's graceful
shutdown: the group committer drains). `count_stored()` then opens the chDB directory
from the benchmark's process and counts the rows.

With `profile=Path` the gateway runs under cProfile instead:
`python -m benchmarks.gateway_server PROFILE_OUT PORT LOG_LEVEL` serves
`create_app(Settings.from_env())`
with uvicorn as `headwater serve` does (same options) and dumps the event loop thread's
profile on shutdown. The chDB insert thread is not in it (cProfile sees one thread).
"""

from __future__ import annotations

import cProfile
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx
import redis

from headwater.gateway import ClickHouse

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/0"
WRITE_KEY = "bench_write_key"
PROJECT = "bench"
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def process_cpu_seconds(pid: int, *, thread: int | None = None) -> float:
    """User + system CPU time of a process (all threads) or of one of its threads."""
    path = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores, from /proc."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / _TICKS, sum(fields) / _TICKS


def wait_until_idle(*, busy: float = 0.15, timeout: float = 300.0) -> float:
    """Wait (up to `timeout` s) for a second in which under `busy` of all cores worked.

    Returns the last second's busy share: other work on the two cores moves the figures.
    """
    deadline = time.monotonic() + timeout
    while True:
        busy0, total0 = machine_cpu_seconds()
        time.sleep(1.0)
        busy1, total1 = machine_cpu_seconds()
        share = (busy1 - busy0) / max(total1 - total0, 1e-9)
        if share < busy or time.monotonic() > deadline:
            return share
        time.sleep(2.0)


def redis_cpu_seconds() -> float:
    """The Redis server's own CPU time (user + system, main thread and children)."""
    info = redis.Redis.from_url(REDIS_URL).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as {`name{labels}`: value}, comments left out."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


class GatewayProcess:
    """`headwater serve` in a child process, on a temporary directory; a context manager."""

    def __init__(
        self,
        *,
        env: dict[str, str] | None = None,
        profile: Path | None = None,
        log_level: str = "INFO",
        pythonpath: list[str] | None = None,
    ) -> None:
        """`pythonpath` entries come before the installed packages (a modified copy of the
        gateway's `src/`, to measure a proposed change)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.directory = Path(tempfile.mkdtemp(prefix="hw-gateway-bench-"))
        self.chdb_dir = self.directory / "clickhouse"
        self.redis_prefix = f"hwbench-{os.getpid()}-{time.time_ns()}"
        self.env = {
            "HEADWATER_CLICKHOUSE_URL": f"chdb://{self.chdb_dir}",
            "HEADWATER_REDIS_URL": REDIS_URL,
            "HEADWATER_REDIS_PREFIX": self.redis_prefix,
            "HEADWATER_WRITE_KEYS": f"{WRITE_KEY}:{PROJECT}",
            "HEADWATER_DEDUPE_TTL_SECONDS": "1800",  # the run cleans up; this is the backstop
            # Embedded `serve` runs the models every 5 minutes in its process: not measured here.
            "HEADWATER_MODEL_SCHEDULE": "false",
            **(env or {}),
        }
        self._profile = profile
        self._pythonpath = os.pathsep.join([*(pythonpath or []), str(ROOT)])
        self._log_level = log_level
        self._process: subprocess.Popen[bytes] | None = None
        self._log = (self.directory / "gateway.log").open("wb")
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def _command(self) -> list[str]:
        if self._profile is not None:
            return [sys.executable, "-m", "benchmarks.gateway_server", str(self._profile),
                    str(self.port), self._log_level]  # fmt: skip
        serve = Path(sys.executable).parent / "headwater"
        return [str(serve), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", self._log_level]  # fmt: skip

    def __enter__(self) -> GatewayProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
        self._process = subprocess.Popen(
            self._command(),
            cwd=self.directory,
            env={**env, **self.env, "PYTHONPATH": self._pythonpath},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready(60)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the gateway did not become ready; its log:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        """The gateway's /metrics now."""
        return parse_metrics(httpx.get(f"{self.url}/metrics", timeout=10).text)

    def cpu_seconds(self) -> tuple[float, float]:
        """(whole process, main thread) CPU seconds: the main thread runs the event loop
        and all of the gateway's Python; chDB's inserts and merges run on other threads."""
        return process_cpu_seconds(self.pid), process_cpu_seconds(self.pid, thread=self.pid)

    def thread_cpu_seconds(self) -> dict[str, float]:
        """CPU seconds by thread name (`event loop` for the main thread; chDB names its
        threads, e.g. MergeMutate; Python's own threads carry the process's name)."""
        by_name: dict[str, float] = {}
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                name = (task / "comm").read_text().strip()
                seconds = process_cpu_seconds(self.pid, thread=int(task.name))
            except (FileNotFoundError, ProcessLookupError):
                continue  # the thread ended meanwhile
            name = "event loop" if task.name == str(self.pid) else name
            by_name[name] = by_name.get(name, 0.0) + seconds
        return by_name

    def log_tail(self, lines: int = 30) -> str:
        if not self._log.closed:
            self._log.flush()
        text = (self.directory / "gateway.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGINT, then wait for the graceful shutdown (kill after 60 s)."""
        process = self._process
        if process is None or self.returncode is not None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            self.returncode = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            self.returncode = process.wait()
        self._log.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def count_stored(self) -> tuple[int, int]:
        """(rows, distinct event ids) in the stopped gateway's `events` table."""
        assert self.returncode is not None, "stop the gateway first: chDB allows one process"
        clickhouse = ClickHouse.connect(f"chdb://{self.chdb_dir}", database="headwater")
        try:
            ((rows, ids),) = clickhouse.rows(
                "SELECT count(), uniqExact(event_id) FROM headwater.events"
            )
        finally:
            clickhouse.close()
        return int(rows), int(ids)

    def forget_ids(self) -> int:
        """Delete the run's dedupe keys from Redis; how many there were."""
        return delete_prefix(self.redis_prefix)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def delete_prefix(prefix: str) -> int:
    """UNLINK every Redis key under `prefix:`; the number deleted."""
    client = redis.Redis.from_url(REDIS_URL)
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            deleted += int(client.unlink(*batch))
            batch.clear()
    if batch:
        deleted += int(client.unlink(*batch))
    client.close()
    return deleted


def _serve_profiled(out: Path, port: int, log_level: str) -> None:
    """`headwater serve` under cProfile (the event loop thread), dumped at shutdown."""
    import uvicorn  # noqa: PLC0415  (only the profiled child needs these)

    from headwater.gateway import Settings, create_app  # noqa: PLC0415
    from headwater.gateway._logging import configure_logging  # noqa: PLC0415

    configure_logging(log_level)
    app = create_app(Settings.from_env())
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    _serve_profiled(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
