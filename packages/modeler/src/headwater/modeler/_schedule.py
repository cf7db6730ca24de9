"""When the next scheduled run is due: every N seconds, or at a cron expression's times."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from croniter import croniter

from ._errors import ConfigError, ModelerError
from ._runner import Runner

logger = logging.getLogger("headwater.modeler")


class Timer:
    """Seconds to wait before the next run."""

    def __init__(self, *, interval: int, cron: str = "") -> None:
        if cron and not croniter.is_valid(cron):
            raise ConfigError(f"schedule: {cron!r} is not a cron expression")
        self._interval = interval
        self._cron = cron

    def wait(self, started: float, *, now: datetime | None = None) -> float:
        """Seconds from now to the next run (`started`: time.monotonic() of the last one)."""
        if self._cron:
            current = now or datetime.now(UTC)
            following: datetime = croniter(self._cron, current).get_next(datetime)
            return max(0.0, (following - current).total_seconds())
        return max(0.0, self._interval - (time.monotonic() - started))


class Scheduler:
    """Runs the models on a `Timer` from a daemon thread (`headwater serve` in embedded
    mode, where the gateway's process owns the chDB directory)."""

    def __init__(self, runner: Runner, timer: Timer) -> None:
        self._runner = runner
        self._timer = timer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="model-schedule", daemon=True)
        self.runs = 0

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self._timer.wait(started)):
            started = time.monotonic()
            try:
                report = self._runner.run()
            except ModelerError:
                logger.exception("scheduled model run failed")
            else:
                self.runs += 1
                if not report.skipped:
                    logger.info(
                        "scheduled model run %s: %d models", report.run_id, len(report.results)
                    )

    def stop(self, timeout: float = 60.0) -> None:
        """Let a run in progress finish (within `timeout`), then stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
