"""When the next scheduled run is due: every N seconds, or at a cron expression's times."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from croniter import croniter

from ._errors import ConfigError


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
