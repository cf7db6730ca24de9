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

EPOCH = "1970-01-01 00:00:00.000"
FOREVER = "2299-12-31 00:00:00.000"

Partitioning = Literal["day", "whole"]
Sources = Mapping[str, str]  # model → the table to read it from (its staging table mid-run)


@cache
def sql_file(name: str) -> str:
    """The SQL text of `sql/<name>.sql`."""
    return files("headwater.modeler").joinpath("sql", f"{name}.sql").read_text()


def events_between(db: str, config: ModelConfig, start: str, end: str, *, only: str = "") -> str:
    """`stg_events` for events with `start <= timestamp < end` (and `only`), as a subquery."""
    m = config.measures
    body = sql_file("stg_events").format(
        db=db,
        start=start,
        end=end,
        only=f"AND {only}" if only else "",
        duration_seconds=m.duration_seconds,
        items_count=m.items_count,
        revenue_cents=m.revenue_cents,
    )
    return f"(\n{body}\n)"


def activity_between(db: str, start: str, end: str) -> str:
    """Who did what on which day, for `start <= timestamp < end`, as a subquery.

    Models that only ask whether a user did something on a day (active users, retention,
    funnels) read this instead of `stg_events`: a repeated event changes no answer of
    theirs, so they skip the dedupe by event id, which is the costly part of a scan.
    """
    return (
        "(SELECT DISTINCT project, distinct_id AS user_id, toDate(timestamp) AS day, event"
        f" FROM {db}.events WHERE timestamp >= toDateTime64('{start}', 3, 'UTC')"
        f" AND timestamp < toDateTime64('{end}', 3, 'UTC'))"
    )


def quote(text: str) -> str:
    """`text` as a ClickHouse string literal (event and funnel names come from users)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _day(d: date) -> str:
    return d.isoformat()


def _ts(d: date) -> str:
    return f"{d.isoformat()} 00:00:00.000"


@dataclass(frozen=True)
class Span:
    """What a run knows about the data: its first and last day, and the days that changed."""

    first_day: date
    last_day: date
    changed: frozenset[date]
    identified_from: date | None  # the earliest day with a changed $identify


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
    """A mart: its name, partitioning, key, and how to select its rows."""

    name: str
    partitioning: Partitioning
    partition_column: str  # the Date column partitions are made of ('' for whole tables)
    order_by: str
    engine: str = "MergeTree"

    def select(self, build: Build, start: date, end: date) -> str:
        """The rows of partitions `start..end` (for whole tables: the whole table)."""
        raise NotImplementedError

    def affected(self, config: ModelConfig, span: Span) -> list[date]:
        """The day partitions to rebuild (ignored for whole tables)."""
        return sorted(span.changed)

    def ddl_options(self) -> str:
        partition = (
            f"PARTITION BY toYYYYMMDD({self.partition_column})" if self.partition_column else ""
        )
        return f"ENGINE = {self.engine} {partition} ORDER BY ({self.order_by})"


class DimDate(Model):
    def select(self, build: Build, start: date, end: date) -> str:
        holidays = ", ".join(f"toDate('{d}')" for d in build.config.calendar.holidays)
        return sql_file("dim_date").format(
            holidays=holidays,
            first_day=_day(date(build.span.first_day.year - 1, 1, 1)),
            last_day=_day(date(build.span.last_day.year + 1, 12, 31)),
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
            events=events_between(
                build.db, build.config, EPOCH, FOREVER, only="event = '$identify'"
            ),
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
        events = events_between(build.db, build.config, _ts(start), _ts(end + timedelta(days=1)))
        return sql_file(self.name).format(
            db=build.db, events=events, dim_users=build.table("dim_users")
        )


class FactUserActions(DayModel):
    def affected(self, config: ModelConfig, span: Span) -> list[date]:
        days = set(span.changed)
        if span.identified_from is not None:  # a new user version re-keys later events
            days |= set(_days(span.identified_from, span.last_day))
        return sorted(days)


class DailyActivity(DayModel):
    """Who was active on which day, and how much (every day: active users and retention
    read it; the view fct_daily_active_users shows the trailing window with each plan)."""


class ActiveUsers(Model):
    def select(self, build: Build, start: date, end: date) -> str:
        first, activity = start - timedelta(days=29), build.table("fct_daily_activity")
        events = (
            f"(SELECT project, user_id, activity_date AS day FROM {activity}"
            f" WHERE activity_date BETWEEN toDate('{first}') AND toDate('{end}'))"
        )
        return sql_file("metrics_active_users").format(
            db=build.db, events=events, start_day=_day(start), end_day=_day(end)
        )

    def affected(self, config: ModelConfig, span: Span) -> list[date]:
        days: set[date] = set()
        for day in span.changed:
            days |= set(_days(day, min(day + timedelta(days=29), span.last_day)))
        return sorted(days)


class RetentionCohorts(Model):
    def select(self, build: Build, start: date, end: date) -> str:
        r = build.config.retention
        if r.start_event:  # the cohort starts at the first start event; users without one are out
            first_day = f"minIf(day, event = {quote(r.start_event)})"
            having = f"HAVING countIf(event = {quote(r.start_event)}) > 0"
        else:
            first_day, having = "min(day)", ""
        activity = build.table("fct_daily_activity")
        events = (
            activity_between(build.db, EPOCH, FOREVER)
            if r.start_event  # the start event is not in the daily activity
            else f"(SELECT project, user_id, activity_date AS day FROM {activity})"
        )
        parts = []
        for granularity, unit, step, periods in (
            ("day", "toDate", 1, r.day_periods),
            ("week", "toMonday", 7, r.week_periods),
        ):
            parts.append(
                sql_file("retention_cohorts").format(
                    events=events,
                    start_what=f"{r.start_event!r} event" if r.start_event else "event",
                    first_day=first_day,
                    having=having,
                    granularity=granularity,
                    unit=unit,
                    days_per_period=step,
                    periods=periods,
                    last_day=_day(build.span.last_day),
                    start_day=_day(start),
                    end_day=_day(end),
                )
            )
        return "\nUNION ALL\n".join(f"SELECT * FROM (\n{p}\n)" for p in parts)

    def affected(self, config: ModelConfig, span: Span) -> list[date]:
        r = config.retention
        reach = max(r.day_periods, r.week_periods * 7 + 6)
        first = max(span.first_day, min(span.changed) - timedelta(days=reach))
        return _days(first, span.last_day)


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
                f" WHERE timestamp >= toDateTime64('{_ts(start)}', 3, 'UTC')"
                f" AND timestamp < toDateTime64('{_ts(end + reach)}', 3, 'UTC'))"
            ),
            steps=steps,
            window_ms=funnel.window_seconds * 1000,
            funnel=quote(funnel.name),
            start_day=_day(start),
            end_day=_day(end),
        )

    def affected(self, config: ModelConfig, span: Span) -> list[date]:
        longest = max(f.window_seconds for f in config.funnels)
        back = timedelta(days=longest // 86_400 + 1)
        days: set[date] = set()
        for day in span.changed:
            days |= set(_days(max(span.first_day, day - back), day))
        return sorted(days)


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


MODELS: tuple[Model, ...] = (
    DimDate("dim_date", "whole", "", "full_date"),
    DimUsers("dim_users", "whole", "", "project, user_id, valid_from"),
    FactUserActions("fact_user_actions", "day", "day", "project, day, user_id, event_id"),
    DailyActivity("fct_daily_activity", "day", "activity_date", "project, activity_date, user_id"),
    DayModel("agg_daily_events", "day", "day", "project, day, event"),
    ActiveUsers("metrics_active_users", "day", "day", "project, day"),
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
