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
from typing import Literal

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


Severity = Literal["warn", "error"]


class Check(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="kind"
):
    """A data-quality check on `table`; an `error` check that fails fails `headwater check`.

    Declared in the configuration as `[[checks]]` tables with a `kind`; every SQL
    identifier (table, column) is validated here, free SQL (`value`, `where`, `sql`) is
    the configuration author's, like a dbt test.
    """

    name: str
    table: str
    severity: Severity = "error"

    def __post_init__(self) -> None:
        _identifier(self.name, f"check {self.name!r}: name")
        for column in self.identifiers():
            _identifier(column, f"check {self.name!r}")

    def identifiers(self) -> list[str]:
        """The table and column names the check's SQL is built from."""
        return [self.table]


class Freshness(Check, frozen=True, tag="freshness"):
    """The newest `column` of `table` is at most `max_age_seconds` old (UTC)."""

    column: str = "timestamp"
    max_age_seconds: int = 7_200

    def identifiers(self) -> list[str]:
        return [self.table, self.column]


class Completeness(Check, frozen=True, tag="completeness"):
    """The share of NULL or empty values of each of `columns` is at most `max_null_rate`."""

    columns: list[str]
    max_null_rate: float = 0.001

    def identifiers(self) -> list[str]:
        return [self.table, *self.columns]


class Uniqueness(Check, frozen=True, tag="uniqueness"):
    """The share of rows repeating a `key` (read as stored: before merges) is at most
    `max_duplicate_rate`."""

    key: list[str]
    max_duplicate_rate: float = 0.0001

    def identifiers(self) -> list[str]:
        return [self.table, *self.key]


class Accuracy(Check, frozen=True, tag="accuracy"):
    """Every non-NULL `column` value is within [`min`, `max`] and, when `accepted` is set,
    one of `accepted` (compared as text); at most `max_offending` rows may not be."""

    column: str
    min: float | None = None
    max: float | None = None
    accepted: list[str] | None = None
    max_offending: int = 0

    def identifiers(self) -> list[str]:
        return [self.table, self.column]


class Consistency(Check, frozen=True, tag="consistency"):
    """`value` over `table` agrees with `other_value` over `other_table` within a relative
    `tolerance`, overall or per group (`group_by` / `other_group_by`, e.g. per day)."""

    other_table: str
    value: str = "count()"
    where: str = ""
    group_by: str = ""
    other_value: str = "count()"
    other_where: str = ""
    other_group_by: str = ""
    tolerance: float = 0.0

    def identifiers(self) -> list[str]:
        return [self.table, self.other_table]


class Volume(Check, frozen=True, tag="volume"):
    """The last complete day's row count (by `column`) against the `training_days` before
    it: a z-score above `max_z` alerts unless the change is under `min_change` of the mean
    (so tiny tables do not page anyone). `seasonality = "weekly"` compares a day with the
    same weekdays only."""

    column: str = "timestamp"
    training_days: int = 28
    min_training: int = 4
    max_z: float = 3.0
    min_change: float = 0.2
    seasonality: Literal["none", "weekly"] = "weekly"

    def identifiers(self) -> list[str]:
        return [self.table, self.column]


class SchemaDrift(Check, frozen=True, tag="schema_drift"):
    """New, removed or retyped columns of `table` since the last snapshot and, for a table
    with `properties` JSON, new or vanished keys per event name over `properties_days`."""

    properties: bool = False
    properties_days: int = 7


class Custom(Check, frozen=True, tag="custom"):
    """Any SQL query; every row it returns is a failure (like a dbt test). `{db}` in it
    stands for the Headwater database."""

    sql: str


class Distribution(Check, frozen=True, tag="distribution"):
    """The last complete day's distribution of `expression` against the `training_days`
    before it, over the rows of `table` matching `where`, by day of `time_column` (UTC).

    `expression` is ClickHouse SQL over one row: a column (`revenue_cents`) or an
    expression (`JSONExtractInt(properties, 'revenue_cents')`); like `where`, it is the
    configuration author's SQL. Numeric (the default): the day's mean and each of
    `quantiles` against its daily values in training, alerting when a z-score is above
    `max_z` and the change is over `min_change` of the training mean (as Volume does).
    `categorical = true`: the day's share of each of its `top` values against the average
    daily share in training, alerting when a share moved by more than `max_share_change`
    (absolute) or a value entered the top that was not in the training's top. Days
    without matching rows are not training days; a day without rows is Volume's concern.
    """

    expression: str
    where: str = ""
    time_column: str = "timestamp"
    training_days: int = 28
    min_training: int = 4
    max_z: float = 3.0
    min_change: float = 0.1
    quantiles: list[float] = msgspec.field(default_factory=lambda: [0.5, 0.9])
    categorical: bool = False
    top: int = 5
    max_share_change: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.expression.strip():
            raise ConfigError(f"check {self.name!r}: expression must not be empty")
        if self.training_days < 2 or self.top < 1:
            raise ConfigError(f"check {self.name!r}: training_days >= 2 and top >= 1")
        if not all(0 < q < 1 for q in self.quantiles):
            raise ConfigError(f"check {self.name!r}: quantiles must be between 0 and 1")

    def identifiers(self) -> list[str]:
        return [self.table, self.time_column]


class PostgresConsistency(Check, frozen=True, tag="postgres_consistency"):
    """`value` over `table` (rows matching `where`) agrees within a relative `tolerance`
    with the one number `postgres_sql` returns from a PostgreSQL application database.

    The database is `dsn` or, so that no secret sits in the file, the DSN in the
    environment variable `dsn_env` (read when the check runs); set exactly one. The query
    runs in a read-only transaction; `timeout_seconds` bounds the connection (libpq's
    minimum is 2 s) and the statement. An unreachable database breaks the check (a
    failure, or a warning by severity) with the reason in its details.
    """

    postgres_sql: str
    dsn: str = ""
    dsn_env: str = ""
    value: str = "count()"
    where: str = ""
    tolerance: float = 0.0
    timeout_seconds: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.dsn) == bool(self.dsn_env):
            raise ConfigError(f"check {self.name!r}: set one of dsn and dsn_env")
        if self.dsn_env:
            _identifier(self.dsn_env, f"check {self.name!r}: dsn_env")
        if self.timeout_seconds <= 0:
            raise ConfigError(f"check {self.name!r}: timeout_seconds must be positive")


AnyCheck = (
    Freshness | Completeness | Uniqueness | Accuracy | Consistency | Volume | SchemaDrift
    | Custom | Distribution | PostgresConsistency
)  # fmt: skip


def default_checks() -> list[AnyCheck]:
    """The checks run when the configuration declares none."""
    return [
        Freshness(name="events_freshness", table="events"),
        Completeness(
            name="events_ids_not_empty", table="events", columns=["distinct_id", "event"],
            max_null_rate=0.0,
        ),
        Uniqueness(name="events_unique", table="events", key=["project", "event_id"]),
        Uniqueness(name="dim_users_key_unique", table="dim_users", key=["user_key"],
                   max_duplicate_rate=0.0),
        Uniqueness(name="dim_date_key_unique", table="dim_date", key=["date_key"],
                   max_duplicate_rate=0.0),
        Uniqueness(name="fct_daily_active_users_unique", table="fct_daily_active_users",
                   key=["project", "activity_date", "user_id"], max_duplicate_rate=0.0),
        Accuracy(name="revenue_not_negative", table="fact_user_actions", column="revenue_cents",
                 min=0),
        Consistency(
            name="agg_daily_events_match_events", table="agg_daily_events", value="sum(events)",
            group_by="day", other_table="events", other_value="uniqExact(project, event_id)",
            other_group_by="toDate32(timestamp)",
        ),
        Volume(name="events_volume", table="events", severity="warn"),
        SchemaDrift(name="events_schema", table="events", properties=True, severity="warn"),
    ]  # fmt: skip


def _identifier(text: str, where: str) -> None:
    if not _NAME.match(text):
        raise ConfigError(f"{where}: {text!r} is not a name (letters, digits, _)")


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
    checks: list[AnyCheck] = msgspec.field(default_factory=default_checks)

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
        checks = [c.name for c in self.checks]
        if len(set(checks)) != len(checks):
            raise ConfigError(f"checks: names must be unique, got {checks}")

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
