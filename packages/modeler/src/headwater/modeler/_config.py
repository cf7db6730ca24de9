"""What the models compute, declared in a TOML file the user edits (`HEADWATER_MODELS`).

```toml
lookback_days = 3            # re-model this many trailing days at every run (late events)
active_window_days = 90      # days kept in fct_daily_active_users
traits = ["email", "name", "plan", "signed_up_at"]   # dim_users tracks these ($set traits)

[measures]                   # fact_user_actions column = property name in events
duration_seconds = "duration_seconds"
items_count = "items_count"
revenue_cents = "revenue_cents"

[retention]
day_periods = 30
week_periods = 12
start_event = ""             # a user's cohort starts at their first event, or this event

[[funnels]]
name = "purchase"
steps = ["page_view", "add_to_cart", "checkout_started", "order_completed"]
window_seconds = 86400

[calendar]
holidays = ["2026-12-25"]

[schedule]
interval_seconds = 300       # or cron = "*/5 * * * *"
```
Everything is validated at start-up; a wrong value stops it with a message naming it.
"""

from __future__ import annotations

import re
import tomllib
from datetime import date
from pathlib import Path

import msgspec

from ._errors import ConfigError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class Funnel(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An ordered list of event names a user goes through within `window_seconds`."""

    name: str
    steps: list[str]
    window_seconds: int = 86_400

    def __post_init__(self) -> None:
        if len(self.steps) < 2:
            raise ConfigError(f"funnel {self.name!r} needs at least two steps")
        if self.window_seconds <= 0:
            raise ConfigError(f"funnel {self.name!r}: window_seconds must be positive")


class Retention(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    day_periods: int = 30
    week_periods: int = 12
    start_event: str = ""

    def __post_init__(self) -> None:
        if self.day_periods < 1 or self.week_periods < 1:
            raise ConfigError("retention periods must be at least 1")


class Measures(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    duration_seconds: str = "duration_seconds"
    items_count: str = "items_count"
    revenue_cents: str = "revenue_cents"


class Calendar(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    holidays: list[date] = msgspec.field(default_factory=list)


class Schedule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    interval_seconds: int = 300
    cron: str = ""

    def __post_init__(self) -> None:
        if self.interval_seconds <= 0 and not self.cron:
            raise ConfigError("schedule: set interval_seconds > 0 or a cron expression")


PURCHASE = Funnel(
    name="purchase",
    steps=["page_view", "add_to_cart", "checkout_started", "order_completed"],
    window_seconds=86_400,
)


class ModelConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The model configuration; the defaults are the ones DESIGN.md describes."""

    lookback_days: int = 3
    active_window_days: int = 90
    traits: list[str] = msgspec.field(
        default_factory=lambda: ["email", "name", "plan", "signed_up_at"]
    )
    measures: Measures = msgspec.field(default_factory=Measures)
    retention: Retention = msgspec.field(default_factory=Retention)
    funnels: list[Funnel] = msgspec.field(default_factory=lambda: [PURCHASE])
    calendar: Calendar = msgspec.field(default_factory=Calendar)
    schedule: Schedule = msgspec.field(default_factory=Schedule)
    checks: list[dict[str, object]] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("lookback_days", "active_window_days"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        for trait in self.traits:
            if not _NAME.match(trait):
                raise ConfigError(f"traits: {trait!r} is not a column name (letters, digits, _)")
        for required in ("plan", "signed_up_at"):
            if required not in self.traits:
                raise ConfigError(f"traits must include {required!r} (the marts use it)")
        names = [f.name for f in self.funnels]
        if len(set(names)) != len(names):
            raise ConfigError(f"funnels: names must be unique, got {names}")

    @classmethod
    def load(cls, path: Path | None) -> ModelConfig:
        """The configuration in `path`, or the defaults when there is none."""
        if path is None:
            return cls()
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"model configuration {path}: {exc}") from exc
        try:
            return msgspec.convert(raw, cls)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"model configuration {path}: {exc}") from exc
