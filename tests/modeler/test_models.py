"""The SQL models against the independent Python computation, on the same events."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import pytest

from headwater.modeler import (
    MODELS,
    ConfigError,
    FileLock,
    ModelConfig,
    ModelFailed,
    Runner,
    run_checks,
)
from headwater.modeler._models import Build, DayModel, events_between
from headwater.modeler.synthetic import SyntheticEvent, generate

from . import reference as ref
from .conftest import PROJECT, Warehouse, WarehouseFactory

END = date(2026, 11, 20)


def stream() -> list[SyntheticEvent]:
    return generate(
        users=250,
        days=40,
        seed=11,
        end=END,
        duplicates=0.02,
        late=0.03,
        midnight_pairs=6,
        tied_events=6,
        empty_days=(END - timedelta(days=12),),
    )


def assert_marts_equal_reference(wh: Warehouse, events: list[SyntheticEvent]) -> None:
    def check(
        table: str, expected: Sequence[tuple[object, ...]], fields: tuple[str, ...], where: str = ""
    ) -> None:
        got = wh.rows(table, fields, where=where)
        assert len(got) == len(expected), table
        assert got == sorted(expected), table

    check(
        "metrics_active_users",
        ref.active_users(events, project=PROJECT),
        ref.MetricsActiveUsersRow._fields,
    )
    granularities: tuple[tuple[Literal["day", "week"], int], ...] = (("day", 30), ("week", 12))
    for granularity, periods in granularities:
        expected = ref.retention(
            events, project=PROJECT, granularity=granularity, max_period=periods
        )
        check(
            "retention_cohorts",
            expected,
            ref.RetentionRow._fields,
            f"WHERE granularity = '{granularity}'",
        )
    funnel = ref.funnel(
        events,
        project=PROJECT,
        name="purchase",
        steps=("page_view", "add_to_cart", "checkout_started", "order_completed"),
        window=timedelta(days=1),
    )
    check("funnel_conversions", funnel, ref.FunnelRow._fields)
    check("agg_daily_events", ref.daily_events(events, project=PROJECT), ref.DailyEventsRow._fields)
    check("dim_users", ref.dim_users_scd2(events, project=PROJECT), ref.UserVersionRow._fields)
    check(
        "fct_daily_active_users",
        ref.fct_daily_active_users(events, project=PROJECT),
        ref.DailyActiveUserRow._fields,
    )
    check(
        "fact_user_actions",
        ref.fact_user_actions(events, project=PROJECT),
        ref.UserActionRow._fields,
    )


def test_a_full_build_equals_the_reference(warehouse: Warehouse) -> None:
    events = stream()
    warehouse.load(events)
    report = warehouse.runner.run()
    assert [r.model for r in report.results][:2] == ["dim_date", "dim_users"]
    assert_marts_equal_reference(warehouse, events)


def test_late_events_are_folded_in_by_an_incremental_run(warehouse: Warehouse) -> None:
    events = stream()
    on_time = [e for e in events if not e.late_by]
    late = [e for e in events if e.late_by]
    assert len(late) > 20
    warehouse.load(on_time)
    warehouse.runner.run()
    warehouse.load(late)
    second = warehouse.runner.run()
    assert not second.skipped
    assert_marts_equal_reference(warehouse, events)


def make(event: str, user: str, at: datetime, n: int, **properties: object) -> SyntheticEvent:
    return SyntheticEvent(str(uuid.UUID(int=n)), event, user, at, dict(properties))


def test_edge_cases_equal_the_reference(warehouse: Warehouse) -> None:
    t0 = datetime(2026, 11, 2, 23, 0, tzinfo=UTC)
    steps = ["page_view", "add_to_cart", "checkout_started", "order_completed"]
    events = [
        # window edge: the last step exactly one day after step 1 still counts
        *(
            make(name, "edge", t0 + timedelta(hours=h), n)
            for n, (name, h) in enumerate(zip(steps, (0, 1, 2, 24), strict=True), 1)
        ),
        # windowFunnel's pitfall: a newer page_view at the same instant as add_to_cart
        make("page_view", "tie", t0, 10),
        make("page_view", "tie", t0 + timedelta(minutes=5), 11),
        make("add_to_cart", "tie", t0 + timedelta(minutes=5), 12),
        make("checkout_started", "tie", t0 + timedelta(minutes=6), 13),
        # equal timestamps never advance: checkout at the same ms as add_to_cart
        make("page_view", "same", t0, 20),
        make("add_to_cart", "same", t0 + timedelta(seconds=1), 21),
        make("checkout_started", "same", t0 + timedelta(seconds=1), 22),
        # one millisecond past the window: not reached
        make("page_view", "late", t0, 30),
        make("add_to_cart", "late", t0 + timedelta(days=1, milliseconds=1), 31),
        # day boundary: 23:59:59.999 and 00:00:00.000 are two days
        make("page_view", "midnight", datetime(2026, 11, 3, 23, 59, 59, 999000, tzinfo=UTC), 40),
        make("page_view", "midnight", datetime(2026, 11, 4, 0, 0, tzinfo=UTC), 41),
        # a plan change mid-period, then an identify that changes nothing
        make(
            "$identify",
            "edge",
            t0,
            50,
            **{"$set": {"plan": "free", "signed_up_at": "2026-11-02T23:00:00Z"}},
        ),
        make("$identify", "edge", t0 + timedelta(hours=3), 51, **{"$set": {"plan": "pro"}}),
        make("$identify", "edge", t0 + timedelta(hours=4), 52, **{"$set": {"plan": "pro", "x": 1}}),
        # an empty day (Nov 5) between activity, then activity again
        make(
            "page_view", "edge", datetime(2026, 11, 6, 12, 0, tzinfo=UTC), 60, duration_seconds=30
        ),
    ]
    warehouse.load(events)
    warehouse.load(events[:3])  # a retried insert that slipped past the dedupe store
    warehouse.runner.run()
    assert_marts_equal_reference(warehouse, events)
    funnel = warehouse.rows(
        "funnel_conversions", ["step", "users"], where="WHERE cohort_day = '2026-11-02'"
    )
    assert funnel == [(1, 4), (2, 3), (3, 2), (4, 1)]


TABLES = (
    *("dim_date", "dim_users", "fact_user_actions", "fct_daily_active_users", "agg_daily_events"),
    *("metrics_active_users", "retention_cohorts", "funnel_conversions"),
)


STATEFUL = ("agg_daily_events", "funnel_conversions")  # their uniqExact states are bytes


def snapshot(wh: Warehouse) -> dict[str, list[tuple[object, ...]]]:
    return {t: wh.rows(t, ["* EXCEPT users_state" if t in STATEFUL else "*"]) for t in TABLES}


def test_running_twice_changes_nothing(warehouse: Warehouse) -> None:
    events = stream()
    warehouse.load(events)
    warehouse.runner.run()
    before = snapshot(warehouse)
    assert warehouse.runner.run().skipped
    warehouse.runner.run(full=True)
    assert snapshot(warehouse) == before


def test_incremental_runs_equal_a_full_rebuild(warehouse_factory: WarehouseFactory) -> None:
    events = sorted(stream(), key=lambda e: e.arrives_at)
    incremental, full = warehouse_factory(), warehouse_factory()
    for chunk in (events[:1500], events[1500:3500], events[3500:]):
        incremental.load(chunk)
        incremental.runner.run()
    full.load(events)
    full.runner.run()
    got, want = snapshot(incremental), snapshot(full)
    for table in TABLES:
        assert got[table] == want[table], table


class Exploding(DayModel):
    """A model whose SQL fails inside ClickHouse (throwIf) once it reads any event."""

    def select(self, build: Build, start: date, end: date) -> str:
        events = events_between(build.db, build.config, None, None)
        return (
            f"SELECT day, throwIf(count() > 0, 'boom') AS failed"  # noqa: S608
            f" FROM {events} GROUP BY day"
        )


def test_a_failure_mid_run_leaves_every_table_as_it_was(
    warehouse_factory: WarehouseFactory, tmp_path: Path
) -> None:
    exploding = Exploding("exploding", "day", "day", "day")
    healthy = warehouse_factory()
    events = stream()
    healthy.load(events[:3000])
    healthy.runner.run()
    before = snapshot(healthy)
    watermark = healthy.runner.ledger.watermark()
    models = (*MODELS[:4], exploding, *MODELS[4:])
    lock = FileLock(tmp_path / "failing.lock")  # the runner's own lock is held by nobody now
    failing = Runner(healthy.clickhouse, ModelConfig(), lock=lock, models=models)
    healthy.load(events[3000:])
    with pytest.raises(
        ModelFailed, match=r"model exploding failed \(its tables are unchanged\): .*boom"
    ):
        failing.run()
    assert snapshot(healthy) == before  # even the models staged before the failing one
    leftovers = healthy.clickhouse.rows(
        "SELECT name FROM system.tables WHERE database = %(db)s AND name LIKE '%%staging%%'",
        {"db": healthy.db},
    )
    assert leftovers == []
    assert healthy.runner.ledger.watermark() == watermark
    healthy.runner.run()
    assert_marts_equal_reference(healthy, events)


ODD_TIMES = (
    datetime(1900, 1, 1, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    datetime(2150, 1, 1, tzinfo=UTC),
)


def test_times_from_1900_to_2150_run_twice_and_equal_the_reference(warehouse: Warehouse) -> None:
    events = stream()
    on_time = [e for e in events if not e.late_by]
    late = [e for e in events if e.late_by]
    odd = [make("x", "u0001", at, 900 + n) for n, at in enumerate(ODD_TIMES)]
    warehouse.load([*on_time, *odd])
    warehouse.runner.run()
    warehouse.load(late)
    assert not warehouse.runner.run().skipped
    assert_marts_equal_reference(warehouse, [*events, *odd])
    # the normal days' numbers are those of the normal events alone
    first, last = min(e.timestamp for e in events).date(), END
    normal = [
        row
        for row in ref.active_users(events, project=PROJECT)
        if first + timedelta(days=30) <= row.day <= last
    ]
    got = warehouse.rows(
        "metrics_active_users",
        ref.MetricsActiveUsersRow._fields,
        where=f"WHERE day BETWEEN '{first + timedelta(days=30)}' AND '{last}'",
    )
    assert got == normal
    assert warehouse.rows("metrics_active_users", ["min(day)", "max(day)"]) == [
        (date(1900, 1, 1), date(2150, 1, 1))
    ]
    # the default checks read the same days: the daily aggregates match the raw events
    now = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
    outcomes = {o.check_name: o for o in run_checks(warehouse.clickhouse, ModelConfig(), now=now)}
    match = outcomes["agg_daily_events_match_events"]
    assert (match.status, match.observed) == ("pass", 0.0)


def test_a_week_cohort_keyed_before_the_first_day_is_built_and_kept(warehouse: Warehouse) -> None:
    wednesday = datetime(2026, 10, 14, 9, 0, tzinfo=UTC)
    events = [
        make("page_view", "a", wednesday, 1),
        make("page_view", "b", wednesday + timedelta(days=4), 2),  # Sunday: the same cohort
        make("page_view", "a", wednesday + timedelta(days=6), 3),  # Tuesday: week 1
    ]
    warehouse.load(events[:2])
    warehouse.runner.run()
    warehouse.load(events[2:])
    warehouse.runner.run()
    week = "WHERE granularity = 'week'"
    assert warehouse.rows("retention_cohorts", ref.RetentionRow._fields, where=week) == [
        ("p", "week", date(2026, 10, 12), 0, 2, 2, 1.0, 1),
        ("p", "week", date(2026, 10, 12), 1, 2, 1, 0.5, 0),
    ]
    assert_marts_equal_reference(warehouse, events)


def test_days_after_a_silent_spell_get_their_rows_in_the_next_run(warehouse: Warehouse) -> None:
    # Nothing happens for three weeks after the first run: the next run's events are all on
    # one day, yet every day between gets its active users, and the cohorts their periods.
    start = datetime(2026, 9, 2, 10, 0, tzinfo=UTC)
    first = [make("page_view", f"u{n % 3}", start + timedelta(days=n), n) for n in range(5)]
    later = [make("page_view", "u0", start + timedelta(days=26), 100)]
    warehouse.load(first)
    warehouse.runner.run()
    warehouse.load(later)
    warehouse.runner.run()
    assert warehouse.rows("metrics_active_users", ["count()"]) == [(27,)]
    assert_marts_equal_reference(warehouse, [*first, *later])


def test_a_reversed_range_is_refused_before_anything_runs(warehouse: Warehouse) -> None:
    with pytest.raises(ConfigError, match=r"^the range 2026-11-07\.\.2026-11-01 is reversed"):
        warehouse.runner.run(since=date(2026, 11, 7), until=date(2026, 11, 1))
    ledger = warehouse.clickhouse.rows(
        "SELECT count() FROM system.tables WHERE database = %(db)s AND name = 'model_runs'",
        {"db": warehouse.db},
    )
    assert ledger == [(0,)]  # not even the ledger was created


def test_on_odd_times_a_backfill_and_a_full_rebuild_change_nothing(warehouse: Warehouse) -> None:
    events = stream()
    odd = [make("x", "u0001", at, 900 + n) for n, at in enumerate(ODD_TIMES)]
    warehouse.load([*events, *odd])
    warehouse.runner.run()
    before = snapshot(warehouse)
    warehouse.runner.run(since=date(1899, 12, 1), until=date(1970, 1, 31))
    warehouse.runner.run(since=date(2149, 12, 1))
    warehouse.runner.run(full=True)
    assert snapshot(warehouse) == before
