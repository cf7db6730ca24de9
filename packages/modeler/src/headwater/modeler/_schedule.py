"""When the next scheduled run is due (every N seconds, or at a cron expression's times),
and what a scheduled run does: the models, then the checks and their alerts."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from croniter import croniter

from ._alerts import CheckOutcome
from ._errors import ConfigError, ModelerError
from ._health import Monitor
from ._runner import Runner, RunReport

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
    mode, where the gateway's process owns the chDB directory), or one `tick()` at a time
    (`headwater model schedule`).

    With a `monitor`, the checks run after every model run that built something, and
    alert through the monitor's one dispatcher (so its rate limit spans runs). A check
    that fails, or an alert not delivered, never stops the schedule.
    """

    def __init__(self, runner: Runner, timer: Timer, *, monitor: Monitor | None = None) -> None:
        self._runner = runner
        self._timer = timer
        self._monitor = monitor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="model-schedule", daemon=True)
        self.runs = 0
        self.outcomes: list[CheckOutcome] = []  # of the latest checks

    def start(self) -> None:
        self._thread.start()

    def tick(self) -> RunReport:
        """One model run, then the checks when it built something (raises `ModelerError`
        when the model run fails; the checks' own troubles are logged)."""
        report = self._runner.run()
        self.runs += 1
        if not report.skipped and self._monitor is not None:
            self._check()
        return report

    def _check(self) -> None:
        assert self._monitor is not None
        try:
            self.outcomes = self._monitor.check()
        except Exception:  # a check run must not end the schedule (logged with its traceback)
            logger.exception("scheduled checks failed")
            return
        failing = [o.check_name for o in self.outcomes if o.status != "pass"]
        logger.info("scheduled checks: %d run, failing: %s", len(self.outcomes), failing or "none")

    def _loop(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self._timer.wait(started)):
            started = time.monotonic()
            try:
                report = self.tick()
            except ModelerError:
                logger.exception("scheduled model run failed")
            else:
                if not report.skipped:
                    logger.info(
                        "scheduled model run %s: %d models", report.run_id, len(report.results)
                    )

    def stop(self, timeout: float = 60.0) -> None:
        """Let a run in progress finish (within `timeout`), then stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
