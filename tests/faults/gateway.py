"""`headwater serve` in a child process that a test can SIGKILL and start again.

The gateway keeps its port, its chDB directory, its Redis and its write key across
restarts, as a supervisor (systemd, Kubernetes) would restart it. Its log (JSON lines)
goes to `gateway.log` in its directory, every life of it appended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ..redis_server import free_port
from .tracking_app import WRITE_KEY

PROJECT = "faults"
START_SECONDS = 90.0  # the most a start may take on a busy two-core machine
STOP_SECONDS = 60.0
SWITCH_SCRIPT = Path(__file__).with_name("serve_with_insert_switch.py")


class GatewayProcess:
    """One gateway: started, killed and restarted on the same port and directory.

    `insert_switch=True` runs it through `serve_with_insert_switch.py` (the same app, and
    a switch that makes ClickHouse refuse inserts, see `fail_inserts`).
    """

    def __init__(
        self,
        directory: Path,
        *,
        redis_url: str | None = None,
        posthog: tuple[str, str] | None = None,
        env: dict[str, str] | None = None,
        insert_switch: bool = False,
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.chdb_dir = directory / "clickhouse"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.control = directory / "control"
        self.control.mkdir(exist_ok=True)
        self.env = {
            "HEADWATER_CLICKHOUSE_URL": f"chdb://{self.chdb_dir}",
            "HEADWATER_WRITE_KEYS": f"{WRITE_KEY}:{PROJECT}",
            "HEADWATER_MODEL_SCHEDULE": "false",
            **({"HEADWATER_REDIS_URL": redis_url} if redis_url else {}),
            **(
                {"HEADWATER_POSTHOG_HOST": posthog[0], "HEADWATER_POSTHOG_API_KEY": posthog[1]}
                if posthog
                else {}
            ),
            **(env or {}),
        }
        self._insert_switch = insert_switch
        self._process: subprocess.Popen[bytes] | None = None
        self.lives = 0

    @property
    def pid(self) -> int:
        """The process id of its current life."""
        assert self._process is not None, "not started"
        return self._process.pid

    def _command(self) -> list[str]:
        where = ["--host", "127.0.0.1", "--port", str(self.port)]
        if self._insert_switch:
            return [sys.executable, str(SWITCH_SCRIPT), str(self.control), *where]
        return [str(Path(sys.executable).with_name("headwater")), "serve", *where]

    def start(self) -> None:
        """Start it and wait until `/readyz` says ClickHouse (and Redis) answer."""
        assert self._process is None or self._process.poll() is not None, "already running"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
        with (self.directory / "gateway.log").open("ab") as log:
            self._process = subprocess.Popen(
                self._command(),
                cwd=self.directory,
                env={**inherited, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.lives += 1
        deadline = time.monotonic() + START_SECONDS
        while not self._ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the gateway did not start:\n{self.log_tail()}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye."""
        assert self._process is not None
        self._process.kill()
        self._process.wait(STOP_SECONDS)

    def stop(self) -> int:
        """SIGINT (it drains what it holds); its exit code."""
        assert self._process is not None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
        return self._process.wait(STOP_SECONDS)

    def close(self) -> None:
        """Make sure it is gone (after a failed test)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(STOP_SECONDS)

    # -- the insert switch (insert_switch=True) --------------------------------

    def fail_inserts(self, failing: bool) -> None:
        """Make ClickHouse refuse (or take again) inserts into `events`; returns once the
        gateway process has applied it."""
        assert self._insert_switch, "started without the insert switch"
        wanted, applied = self.control / "fail-inserts", self.control / "fail-inserts.applied"
        if failing:
            wanted.touch()
        else:
            wanted.unlink()
        deadline = time.monotonic() + START_SECONDS
        while applied.exists() != failing:
            if time.monotonic() > deadline:
                raise AssertionError(f"the insert switch did not move:\n{self.log_tail()}")
            time.sleep(0.02)

    def log_tail(self, lines: int = 40) -> str:
        path = self.directory / "gateway.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        path = self.directory / "gateway.log"
        return path.read_text(errors="replace") if path.exists() else ""
