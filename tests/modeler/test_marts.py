"""Mart details beyond the reference comparison: the calendar, the activity window,
mergeable weekly uniques, a named retention start event, extra tracked traits."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from headwater.modeler import ModelConfig
from headwater.modeler._config import Calendar, Retention
from headwater.modeler.synthetic import SyntheticEvent

from .conftest import WarehouseFactory


def event(name: str, user: str, day: date, n: int, **properties: object) -> SyntheticEvent:
    at = datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC)
    return SyntheticEvent(str(uuid.UUID(int=n)), name, user, at, dict(properties))


def test_the_calendar_spans_the_data_with_holidays(warehouse_factory: WarehouseFactory) -> None:
    config = ModelConfig(calendar=Calendar(holidays=[date(2026, 12, 25)]))
    wh = warehouse_factory(config)
    wh.load([event("e", "u", date(2026, 11, 20), 1)])
    wh.runner.run()
    columns = [
        *("date_key", "full_date", "day_of_week", "day_name", "week_of_year", "month"),
        *("month_name", "quarter", "year", "is_weekend", "is_holiday"),
    ]
    rows = wh.rows(
        "dim_date", columns, where="WHERE full_date IN ('2026-12-25', '2026-12-27', '2027-01-01')"
    )
    assert rows == [
        (20261225, date(2026, 12, 25), 5, "Friday", 52, 12, "December", 4, 2026, False, True),
        (20261227, date(2026, 12, 27), 7, "Sunday", 52, 12, "December", 4, 2026, True, False),
        (20270101, date(2027, 1, 1), 5, "Friday", 53, 1, "January", 1, 2027, False, False),
    ]
    assert wh.rows("dim_date", ["min(full_date)", "max(full_date)", "count()"]) == [
        (date(2025, 1, 1), date(2027, 12, 31), 1095)
    ]


def test_daily_activity_keeps_its_trailing_window(warehouse_factory: WarehouseFactory) -> None:
    wh = warehouse_factory(ModelConfig(active_window_days=3))
    first = date(2026, 11, 1)
    wh.load([event("e", "u", first + timedelta(days=n), n) for n in range(6)])
    wh.runner.run()
    assert wh.rows("fct_daily_active_users", ["activity_date"]) == [
        (date(2026, 11, 4),),
        (date(2026, 11, 5),),
        (date(2026, 11, 6),),
    ]
    wh.load([event("e", "u", first + timedelta(days=6), 6)])
    wh.runner.run()  # the window moves: Nov 4 leaves
    assert wh.rows("fct_daily_active_users", ["activity_date"]) == [
        (date(2026, 11, 5),),
        (date(2026, 11, 6),),
        (date(2026, 11, 7),),
    ]


def test_weekly_uniques_merge_from_daily_states(warehouse_factory: WarehouseFactory) -> None:
    wh = warehouse_factory()
    monday = date(2026, 11, 16)
    wh.load([
        event("view", "a", monday, 1), event("view", "b", monday, 2),
        event("view", "a", monday + timedelta(days=1), 3),
        event("view", "c", monday + timedelta(days=2), 4),
    ])  # fmt: skip
    wh.runner.run()
    weekly = wh.clickhouse.rows(
        f"SELECT toMonday(day), sum(events), sum(users), uniqExactMerge(users_state)"  # noqa: S608
        f" FROM {wh.db}.agg_daily_events WHERE event = 'view' GROUP BY toMonday(day)"
    )
    assert weekly == [(monday, 4, 4, 3)]  # summing days says 4 users; the states say 3


def test_retention_can_start_at_a_named_event(warehouse_factory: WarehouseFactory) -> None:
    wh = warehouse_factory(
        ModelConfig(retention=Retention(day_periods=2, week_periods=1, start_event="signup"))
    )
    d0 = date(2026, 11, 10)
    wh.load([
        event("view", "a", d0, 1), event("signup", "a", d0 + timedelta(days=1), 2),
        event("view", "a", d0 + timedelta(days=2), 3),
        event("view", "b", d0 + timedelta(days=2), 4),
    ])  # fmt: skip
    wh.runner.run()
    rows = wh.rows("retention_cohorts", ["cohort_start", "period", "cohort_size", "retained"],
                   where="WHERE granularity = 'day'")  # fmt: skip
    # a's cohort is its signup day; b never signed up; the view before signup is not counted
    assert rows == [(d0 + timedelta(days=1), 0, 1, 1), (d0 + timedelta(days=1), 1, 1, 1)]


def test_extra_traits_are_tracked(warehouse_factory: WarehouseFactory) -> None:
    wh = warehouse_factory(ModelConfig(traits=["plan", "signed_up_at", "company"]))
    day = date(2026, 11, 10)
    wh.load([
        event("$identify", "a", day, 1, **{"$set": {"plan": "free", "company": "Acme"}}),
        event("$identify", "a", day + timedelta(days=1), 2, **{"$set": {"company": "Globex"}}),
    ])  # fmt: skip
    wh.runner.run()
    assert wh.rows("dim_users", ["plan", "company", "is_current"]) == [
        ("free", "Acme", False),
        ("free", "Globex", True),
    ]
