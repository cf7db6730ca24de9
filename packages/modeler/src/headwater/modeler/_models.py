"""The models: their SQL (one file each under `sql/`), their tables, and which day
partitions a run must rebuild when events of some days changed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from importlib.resources import files
from typing import Literal

from ._config import Funnel, ModelConfig

FIRST_DAY = date(1900, 1, 1)  # Date32's range, which holds every day DateTime64(3) can
LAST_DAY = date(2299, 12, 31)

Partitioning = Literal["day", "whole"]
PartitionUnit = Literal["month", "year"]
Sources = Mapping[str, str]  # model → the table to read it from (its staging table mid-run)
Days = tuple[date, date]  # an inclusive range of days


@cache
def sql_file(name: str) -> str:
    """The SQL text of `sql/<name>.sql`."""
    return files("headwater.modeler").joinpath("sql", f"{name}.sql").read_text()


# The days `toDate` holds. `events` is sorted by `toDate(timestamp)` (DESIGN.md), which
# wraps outside them: ClickHouse's primary-key analysis then skips granules that hold the
# rows of other days, so a time filter reaching past these days must not be one it reads.
INDEXED_DAYS = (date(1970, 1, 1), date(2149, 6, 5))


def _between(column: str, start: date | None, end: date | None) -> str:
    """`start <= column < end` on a DateTime64 column (None: unbounded), as AND terms.

    Within `INDEXED_DAYS` the terms compare the column itself, which the primary key
    prunes by; otherwise they compare its Date32 day, which the key cannot misread (the
    monthly partitions still prune)."""
    if start is None and end is None:
        return ""
    low, high = INDEXED_DAYS
    if start is not None and end is not None and low <= start and end <= high:
        return (
            f"AND {column} >= toDateTime64('{_ts(start)}', 3, 'UTC')"
            f" AND {column} < toDateTime64('{_ts(end)}', 3, 'UTC')"
        )
    terms = []
    if start is not None:
        terms.append(f"AND toDate32({column}) >= toDate32('{start}')")
    if end is not None:
        terms.append(f"AND toDate32({column}) < toDate32('{end}')")
    return " ".join(terms)


def events_between(
    db: str, config: ModelConfig, start: date | None, end: date | None, *, only: str = ""
) -> str:
    """`stg_events` for events with `start <= timestamp < end` (None: no bound) and `only`,
    as a subquery."""
    m = config.measures
    body = sql_file("stg_events").format(
        db=db,
        between=_between("timestamp", start, end),
        only=f"AND {only}" if only else "",
        duration_seconds=m.duration_seconds,
        items_count=m.items_count,
        revenue_cents=m.revenue_cents,
    )
    return f"(\n{body}\n)"


def activity_between(db: str, start: date | None, end: date | None) -> str:
    """Who did what on which day, for `start <= timestamp < end`, as a subquery.

    Models that only ask whether a user did something on a day (active users, retention,
    funnels) read this instead of `stg_events`: a repeated event changes no answer of
    theirs, so they skip the dedupe by event id, which is the costly part of a scan.
    """
    return (
        "(SELECT DISTINCT project, distinct_id AS user_id, toDate32(timestamp) AS day, event"
        f" FROM {db}.events WHERE 1 {_between('timestamp', start, end)})"
    )


def quote(text: str) -> str:
    """`text` as a ClickHouse string literal (event and funnel names come from users)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _day(d: date) -> str:
    return d.isoformat()


def _ts(d: date) -> str:
    return f"{d.isoformat()} 00:00:00.000"


def monday(d: date) -> date:
    """The Monday that starts `d`'s week."""
    return d - timedelta(days=d.weekday())


@dataclass(frozen=True)
class Span:
    """What a run knows about the data: its first and last day, the days that changed (as
    sorted, disjoint ranges), and where the projects that gained events had ended before."""

    first_day: date
    last_day: date
    changed: tuple[Days, ...] = ()
    identified_from: date | None = None  # the earliest day with a changed $identify
    # days a project that gained events newly spans (from its first to its last event day):
    # they may have had no row yet in a model with a row every day
    extended: tuple[Days, ...] = ()
    # the earliest last day, before this run's events, of a project that gained events: its
    # retention periods up to it may have become complete
    reopened_from: date | None = None

    @property
    def earliest_change(self) -> date:
        """The first changed day (the last day when nothing changed)."""
        return self.changed[0][0] if self.changed else self.last_day


@dataclass(frozen=True)
class Build:
    """What a model's SQL is rendered for: the database, the configuration, the run's span,
    and the tables to read other models from (their staged state, mid-run)."""

    db: str
    config: ModelConfig
    span: Span
    sources: Sources = field(default_factory=dict)

    def table(self, model: str) -> str:
        """Where to read `model`: as this run will leave it, or as it is."""
        return self.sources.get(model, f"{self.db}.{model}")


@dataclass(frozen=True)
class Model:
    """A mart: its name, partitioning, key, and how to select its rows.

    A partitioned model's rows are keyed by a day (`partition_column`, Date32) and stored in
    monthly partitions, or yearly ones for a model with a row on every day (ClickHouse
    advises against more than a few thousand partitions: a day each would be 365 a year,
    and one INSERT writes at most 100 by default). A run recomputes the key days that
    changed (`affected`) and swaps their whole partitions in.
    """

    name: str
    partitioning: Partitioning
    partition_column: str  # the Date32 key partitions are made of ('' for whole tables)
    order_by: str
    engine: str = "MergeTree"
    unit: PartitionUnit = "month"

    def select(self, build: Build, start: date, end: date) -> str:
        """The rows keyed `start..end` (for whole tables: the whole table)."""
        raise NotImplementedError

    def affected(self, config: ModelConfig, span: Span) -> list[Days]:
        """The key days whose rows may differ once the span's changes are in."""
        return list(span.changed)

    def first_key(self, span: Span) -> date:
        """The earliest key the data can give a row (the last is the span's last day)."""
        return span.first_day

    def partition_key(self) -> str:
        """The PARTITION BY expression, as `system.tables` shows it ('' for whole tables)."""
        if not self.partition_column:
            return ""
        unit = "toYYYYMM" if self.unit == "month" else "toYear"
        return f"{unit}({self.partition_column})"

    def partition_id(self, day: date) -> int:
        """The partition `day`'s rows are in (its id, as a number)."""
        return day.year * 100 + day.month if self.unit == "month" else day.year

    def period(self, day: date) -> Days:
        """The first and last day of the partition `day` is in."""
        if self.unit == "year":
            return date(day.year, 1, 1), date(day.year, 12, 31)
        following = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
        return day.replace(day=1), following - timedelta(days=1)

    def ddl_options(self) -> str:
        partition = f"PARTITION BY {self.partition_key()}" if self.partition_column else ""
        return f"ENGINE = {self.engine} {partition} ORDER BY ({self.order_by})"


class DimDate(Model):
    def select(self, build: Build, start: date, end: date) -> str:
        holidays = ", ".join(f"toDate32('{d}')" for d in build.config.calendar.holidays)
        first = max(FIRST_DAY, date(build.span.first_day.year - 1, 1, 1))
        last = min(LAST_DAY, date(build.span.last_day.year + 1, 12, 31))
        return sql_file("dim_date").format(
            holidays=holidays, first_day=_day(first), last_day=_day(last)
        )


class DimUsers(Model):
    def select(self, build: Build, start: date, end: date) -> str:
        traits = build.config.traits
        values = ",\n            ".join(_trait_value(t) for t in traits)
        carry = ",\n            ".join(
            f"anyLast({t}) OVER (PARTITION BY project, user_id"
            f" ORDER BY timestamp, toString(event_id)"
            f" ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS {t}"
            for t in traits
        )
        columns = ",\n    ".join(
            "parseDateTime64BestEffortOrNull(signed_up_at, 3, 'UTC') AS signed_up_at"
            if t == "signed_up_at"
            else t
            for t in traits
        )
        return sql_file("dim_users").format(
            events=events_between(build.db, build.config, None, None, only="event = '$identify'"),
            trait_values=values,
            trait_carry=carry,
            trait_hash=", ".join(f"ifNull({t}, ''), isNull({t})" for t in traits),
            no_traits_hash=", ".join("'', 1" for _ in traits),
            trait_columns=columns,
        )


def _trait_value(trait: str) -> str:
    """A trait of an $identify's `$set` when it is a string (signed_up_at: a parseable one)."""
    text = f"JSONExtractString(properties, '$set', '{trait}')"
    usable = f"JSONType(properties, '$set', '{trait}') = 'String'"
    if trait == "signed_up_at":
        usable += f" AND isNotNull(parseDateTime64BestEffortOrNull({text}, 3, 'UTC'))"
    return f"if({usable}, {text}, NULL) AS {trait}"


class DayModel(Model):
    """A model whose rows for day D come from the events of day D."""

    def select(self, build: Build, start: date, end: date) -> str:
        events = events_between(build.db, build.config, start, end + timedelta(days=1))
        return sql_file(self.name).format(
            db=build.db, events=events, dim_users=build.table("dim_users")
        )


class FactUserActions(DayModel):
    def affected(self, config: ModelConfig, span: Span) -> list[Days]:
        if span.identified_from is None:
            return list(span.changed)
        # a new user version re-keys every later event
        return [*span.changed, (span.identified_from, span.last_day)]


class DailyActivity(DayModel):
    """Who was active on which day, and how much (every day: active users and retention
    read it; the view fct_daily_active_users shows the trailing window with each plan)."""


class ActiveUsers(Model):
    """DAU, WAU and MAU: a day's row reads the 30 days that end on it."""

    def select(self, build: Build, start: date, end: date) -> str:
        first, activity = start - timedelta(days=29), build.table("fct_daily_activity")
        events = (
            f"(SELECT project, user_id, activity_date AS day FROM {activity}"
            f" WHERE activity_date BETWEEN toDate32('{first}') AND toDate32('{end}'))"
        )
        return sql_file("metrics_active_users").format(
            db=build.db, events=events, start_day=_day(start), end_day=_day(end)
        )

    def affected(self, config: ModelConfig, span: Span) -> list[Days]:
        return [
            *((first, last + timedelta(days=29)) for first, last in span.changed),
            *span.extended,
        ]


class RetentionCohorts(Model):
    """Day and week cohorts: a week cohort is keyed by its Monday, which may come before
    the first day of data."""

    def select(self, build: Build, start: date, end: date) -> str:
        r = build.config.retention
        if r.start_event:  # the cohort starts at the first start event; users without one are out
            first_day = f"minIf(toInt32(day), event = {quote(r.start_event)})"
            starts = f"countIf(event = {quote(r.start_event)}) > 0"
        else:
            first_day, starts = "min(toInt32(day))", "1"
        activity = build.table("fct_daily_activity")
        events = (
            activity_between(build.db, None, None)
            if r.start_event  # the start event is not in the daily activity
            else f"(SELECT project, user_id, activity_date AS day FROM {activity})"
        )
        parts = []
        for granularity, unit, step, periods in (
            ("day", "{}", 1, r.day_periods),
            (
                "week",
                "({0} - positiveModulo({0} + 3, 7))",
                7,
                r.week_periods,
            ),  # 1970-01-01: a Thursday
        ):
            parts.append(
                sql_file("retention_cohorts").format(
                    db=build.db,
                    events=events,
                    start_what=f"{r.start_event!r} event" if r.start_event else "event",
                    first_day=first_day,
                    starts=starts,
                    granularity=granularity,
                    cohort_of_first_day=unit.format("first_day"),
                    cohort_of_d=unit.format("d"),
                    days_per_period=step,
                    periods=periods,
                    start_day=_day(start),
                    end_day=_day(end),
                )
            )
        return "\nUNION ALL\n".join(f"SELECT * FROM (\n{p}\n)" for p in parts)

    def affected(self, config: ModelConfig, span: Span) -> list[Days]:
        # A change on day d alters the cohorts whose periods reach d, and moves a user whose
        # first day it becomes out of a later cohort: every cohort from d - reach on. A
        # project's newer last day completes (and opens) periods that end after its last.
        r = config.retention
        reach = timedelta(days=max(r.day_periods, r.week_periods * 7 + 6))
        low = span.earliest_change
        if span.reopened_from is not None:
            low = min(low, span.reopened_from)
        return [(low - reach, span.last_day)]

    def first_key(self, span: Span) -> date:
        return monday(span.first_day)


class FunnelConversions(Model):
    def select(self, build: Build, start: date, end: date) -> str:
        return "\nUNION ALL\n".join(
            f"SELECT * FROM (\n{self._one(build.db, funnel, start, end)}\n)"
            for funnel in build.config.funnels
        )

    def _one(self, db: str, funnel: Funnel, start: date, end: date) -> str:
        reach = timedelta(days=funnel.window_seconds // 86_400 + 2)
        steps = "[" + ", ".join(quote(step) for step in funnel.steps) + "]"
        return sql_file("funnel_conversions").format(
            events=(
                f"(SELECT project, distinct_id AS user_id, timestamp, event FROM {db}.events"
                f" WHERE 1 {_between('timestamp', start, end + reach)})"
            ),
            steps=steps,
            window_ms=funnel.window_seconds * 1000,
            funnel=quote(funnel.name),
            start_day=_day(start),
            end_day=_day(end),
        )

    def affected(self, config: ModelConfig, span: Span) -> list[Days]:
        longest = max(f.window_seconds for f in config.funnels)
        back = timedelta(days=longest // 86_400 + 1)
        return [(first - back, last) for first, last in span.changed]


MODELS: tuple[Model, ...] = (
    DimDate("dim_date", "whole", "", "full_date"),
    DimUsers("dim_users", "whole", "", "project, user_id, valid_from"),
    FactUserActions("fact_user_actions", "day", "day", "project, day, user_id, event_id"),
    DailyActivity("fct_daily_activity", "day", "activity_date", "project, activity_date, user_id"),
    DayModel("agg_daily_events", "day", "day", "project, day, event"),
    ActiveUsers("metrics_active_users", "day", "day", "project, day", unit="year"),
    RetentionCohorts(
        "retention_cohorts", "day", "cohort_start", "project, granularity, cohort_start, period"
    ),
    FunnelConversions(
        "funnel_conversions", "day", "cohort_day", "project, funnel, cohort_day, step"
    ),
)
"""Every model, in dependency order."""


def model(name: str) -> Model:
    """The model called `name`."""
    for candidate in MODELS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no model named {name!r}; models: {', '.join(m.name for m in MODELS)}")
