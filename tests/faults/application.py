"""The application under test, seen from the test: `tracking_app.py` in a child process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("tracking_app.py")
WAIT_SECONDS = 120.0  # the most any wait here lasts; the test's own timeout is shorter


@dataclass(frozen=True)
class Progress:
    """One line of the application's `progress` file."""

    t: float  # time.monotonic() of the machine
    tracked: int
    refused: int
    stats: dict[str, Any]
    final: bool = False
    flushed: bool | None = None
    clean: bool | None = None

    @property
    def settled(self) -> int:
        """Events the client is done with: acknowledged by the gateway, or given up on."""
        return int(self.stats["sent"]) + int(self.stats["dropped"])


class Application:
    """One process of the application (a run may start several on one spool);
    `options` are `ClientOptions` fields it sets, the others keep their defaults."""

    def __init__(
        self,
        workdir: Path,
        *,
        host: str,
        rate: float,
        options: dict[str, float] | None = None,
        spool: Path | None = None,
        kill_after: int = 0,
        life: int = 0,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True)
        command = [sys.executable, str(SCRIPT), host, str(workdir), "--rate", str(rate),
                   "--life", str(life)]  # fmt: skip
        for name, value in (options or {}).items():  # ClientOptions: request_timeout=1.0
            command += [f"--{name.replace('_', '-')}", str(value)]
        if spool is not None:
            command += ["--spool", str(spool)]
        if kill_after:
            command += ["--kill-after", str(kill_after)]
        self._stderr = (workdir / "stderr").open("wb")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(command, stdout=self._stderr, stderr=subprocess.STDOUT)

    # -- reading what it wrote -------------------------------------------------

    def ids(self) -> list[str]:
        """Every id `track()` returned, in order (whole lines only)."""
        text = _read(self.workdir / "ids")
        return text[: text.rfind("\n") + 1].split()

    def drops(self) -> list[tuple[str, str]]:
        """(reason, id) of every event the client gave up on."""
        lines = _read(self.workdir / "drops").splitlines()
        return [(reason, event_id) for reason, event_id in (line.split() for line in lines)]

    def progress(self) -> list[Progress]:
        lines = _read(self.workdir / "progress").splitlines(keepends=True)
        return [Progress(**json.loads(line)) for line in lines if line.endswith("\n")]

    def latest(self) -> Progress | None:
        found = self.progress()
        return found[-1] if found else None

    def log(self) -> str:
        return _read(self.workdir / "stderr")

    # -- driving it ------------------------------------------------------------

    def wait_tracked(self, count: int) -> None:
        """Until the application has tracked `count` events (or it ended)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while (latest := self.latest()) is None or latest.tracked < count:
            self._check_alive(deadline)
            time.sleep(0.05)

    def wait_settled(self, count: int) -> None:
        """Until the client has settled `count` events (acknowledged or given up)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while (latest := self.latest()) is None or latest.settled < count:
            self._check_alive(deadline)
            time.sleep(0.05)

    def _check_alive(self, deadline: float) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"the application exited ({self.process.returncode}):\n{self.log()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError("the application made no progress in time")

    def finish(self) -> Progress:
        """Ask it to stop tracking, flush and exit; its last progress line."""
        (self.workdir / "stop").touch()
        code = self.process.wait(WAIT_SECONDS)
        self._stderr.close()
        assert code == 0, f"the application exited with {code}:\n{self.log()}"
        last = self.latest()
        assert last is not None
        assert last.final, last
        return last

    def wait_killed(self) -> None:
        """Until it SIGKILLed itself (`kill_after`)."""
        code = self.process.wait(WAIT_SECONDS)
        self._stderr.close()
        assert code == -signal.SIGKILL, f"exit {code}, not SIGKILL:\n{self.log()}"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(WAIT_SECONDS)
        self._stderr.close()

    def close(self) -> None:
        """Make sure the process is gone (after a failed test)."""
        if self.process.poll() is None:
            self.kill()
        self._stderr.close()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
