"""Data-quality checks: each kind with data that passes and data that fails, exact values."""

from __future__ import annotations

import statistics
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from headwater.modeler import (
    Accuracy,
    AnyCheck,
    CheckOutcome,
    Completeness,
    ConfigError,
    Consistency,
    Custom,
    Freshness,
    ModelConfig,
    SchemaDrift,
    Uniqueness,
    Volume,
    run_checks,
)
from headwater.modeler.cli import register
from headwater.modeler.synthetic import SyntheticEvent, generate

from .conftest import Warehouse, WarehouseFactory

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def event(
    name: str = "page_view",
    user: str = "u1",
    at: datetime = T0,
    properties: dict[str, Any] | None = None,
) -> SyntheticEvent:
    return SyntheticEvent(str(uuid.uuid4()), name, user, at, properties or {})


def run(wh: Warehouse, *checks: AnyCheck, now: datetime) -> dict[str, CheckOutcome]:
    outcomes = run_checks(wh.clickhouse, ModelConfig(checks=list(checks)), now=now)
    return {o.check_name: o for o in outcomes}


def verdict(outcome: CheckOutcome) -> tuple[str, Any]:
    """Status and observed value (`Any`: the tests compare some with `pytest.approx`)."""
    return outcome.status, outcome.observed


@pytest.fixture
def wh(warehouse_factory: WarehouseFactory) -> Warehouse:
    return warehouse_factory()


def table(wh: Warehouse, ddl: str, rows: str) -> None:
    """A test table `ddl` (name and columns) in `wh`'s database, filled with VALUES `rows`."""
    wh.clickhouse.command(f"CREATE TABLE {wh.db}.{ddl} ENGINE = MergeTree ORDER BY tuple()")
    name = ddl.split(" ", maxsplit=1)[0]
    wh.clickhouse.command(f"INSERT INTO {wh.db}.{name} VALUES {rows}")  # noqa: S608


# ---------------------------------------------------------------- freshness


def test_freshness_is_the_age_of_the_newest_row(wh: Warehouse) -> None:
    wh.load([event(at=T0 - timedelta(hours=5)), event(at=T0)])
    fresh = Freshness(name="fresh", table="events", max_age_seconds=7200)
    late = Freshness(name="late", table="events", max_age_seconds=7200, severity="warn")
    assert verdict(run(wh, fresh, now=T0 + timedelta(hours=1))["fresh"]) == ("pass", 3600.0)
    found = run(wh, fresh, late, now=T0 + timedelta(hours=3))
    assert verdict(found["fresh"]) == ("fail", 10800.0)
    assert verdict(found["late"]) == ("warn", 10800.0)
    assert found["fresh"].threshold == "age <= 7200 s"


def test_freshness_of_an_empty_table_fails(wh: Warehouse) -> None:
    found = run(wh, Freshness(name="fresh", table="events"), now=T0)["fresh"]
    assert (verdict(found), found.details) == (("fail", None), "events has no rows")


# ---------------------------------------------------------------- completeness


def test_completeness_counts_null_and_empty_values(wh: Warehouse) -> None:
    table(
        wh,
        "people (id UInt32, email Nullable(String), name String)",
        "(1, 'a@x', 'A'), (2, NULL, 'B'), (3, '', 'C'), (4, 'd@x', '')",
    )
    both = Completeness(name="both", table="people", columns=["email", "name"], max_null_rate=0.3)
    name = Completeness(name="name", table="people", columns=["name"], max_null_rate=0.3)
    found = run(wh, both, name, now=T0)
    assert verdict(found["both"]) == ("fail", 0.5)
    assert found["both"].details == "email: 2 of 4 null or empty, name: 1 of 4 null or empty"
    assert verdict(found["name"]) == ("pass", 0.25)


def test_default_event_columns_must_never_be_empty(wh: Warehouse) -> None:
    check = Completeness(
        name="ids", table="events", columns=["distinct_id", "event"], max_null_rate=0
    )
    wh.load([event(user="u1"), event(user="u2")])
    assert verdict(run(wh, check, now=T0)["ids"]) == ("pass", 0.0)
    wh.load([event(user="")])
    assert verdict(run(wh, check, now=T0)["ids"]) == ("fail", pytest.approx(1 / 3))


# ---------------------------------------------------------------- uniqueness


def test_uniqueness_counts_repeated_keys(wh: Warehouse) -> None:
    table(
        wh,
        "pairs (day Date, user String)",
        "('2026-11-01','a'), ('2026-11-01','b'), ('2026-11-02','a')",
    )
    check = Uniqueness(name="pairs", table="pairs", key=["day", "user"])
    assert verdict(run(wh, check, now=T0)["pairs"]) == ("pass", 0.0)
    wh.clickhouse.command(f"INSERT INTO {wh.db}.pairs VALUES ('2026-11-01','a')")  # noqa: S608
    found = run(wh, check, now=T0)["pairs"]
    assert verdict(found) == ("fail", 0.25)
    assert found.details == "1 duplicate rows of 4 by (day, user)"


def test_raw_events_are_checked_before_the_merge(wh: Warehouse) -> None:
    wh.clickhouse.command(f"SYSTEM STOP MERGES {wh.db}.events")
    events = [event(user=f"u{n}") for n in range(4)]
    wh.load(events)
    wh.load(events[:1])  # a retried insert the dedupe store missed
    check = Uniqueness(name="events", table="events", key=["project", "event_id"])
    assert verdict(run(wh, check, now=T0)["events"]) == ("fail", 0.2)


# ---------------------------------------------------------------- accuracy


def test_accuracy_counts_offending_rows_and_samples_them(wh: Warehouse) -> None:
    table(
        wh,
        "orders (id UInt32, revenue_cents Nullable(Int64), plan String)",
        "(1, 100, 'free'), (2, -5, 'pro'), (3, NULL, 'gold'), (4, 0, 'team')",
    )
    revenue = Accuracy(name="revenue", table="orders", column="revenue_cents", min=0)
    plans = Accuracy(name="plans", table="orders", column="plan", accepted=["free", "pro", "team"])
    found = run(wh, revenue, plans, now=T0)
    assert verdict(found["revenue"]) == ("fail", 1.0)
    assert found["revenue"].threshold == "revenue_cents >= 0 (at most 0 offending rows)"
    assert verdict(found["plans"]) == ("fail", 1.0)
    samples = wh.rows("dq_results", ["check_name", "sample"])
    assert samples == [
        ("plans", '[{"id":3,"revenue_cents":null,"plan":"gold"}]'),
        ("revenue", '[{"id":2,"revenue_cents":-5,"plan":"pro"}]'),
    ]
    wh.clickhouse.command(f"ALTER TABLE {wh.db}.orders DELETE WHERE id IN (2, 3)")
    found = run(wh, revenue, plans, now=T0)
    assert (verdict(found["revenue"]), verdict(found["plans"])) == (("pass", 0.0), ("pass", 0.0))


# ---------------------------------------------------------------- consistency


def test_consistency_compares_groups_across_tables(wh: Warehouse) -> None:
    day1, day2 = T0, T0 + timedelta(days=1)
    wh.load([event(at=day1), event(at=day1), event(at=day1), event(at=day2), event(at=day2)])
    table(wh, "daily (day Date, events UInt64)", "('2026-11-20', 3), ('2026-11-21', 1)")
    check = Consistency(
        name="daily", table="daily", value="sum(events)", group_by="day",
        other_table="events", other_group_by="toDate32(timestamp)", tolerance=0.1,
    )  # fmt: skip
    found = run(wh, check, now=T0)["daily"]
    assert verdict(found) == ("fail", 0.5)
    assert found.details == "1 of 2 groups differ: daily sum(events) vs events count()"
    wh.clickhouse.command(f"INSERT INTO {wh.db}.daily VALUES ('2026-11-21', 1)")  # noqa: S608
    assert verdict(run(wh, check, now=T0)["daily"]) == ("pass", 0.0)


def test_consistency_of_totals_within_a_tolerance(wh: Warehouse) -> None:
    wh.load([event(user=f"u{n % 4}") for n in range(8)])
    table(wh, "users (user_id String)", "('u0'), ('u1'), ('u2'), ('u3'), ('u4')")
    check = Consistency(
        name="users", table="users", other_table="events",
        other_value="uniqExact(distinct_id)", tolerance=0.3,
    )  # fmt: skip
    assert verdict(run(wh, check, now=T0)["users"]) == ("pass", 0.25)


# ---------------------------------------------------------------- volume


def daily_rows(wh: Warehouse, counts: dict[date, int]) -> None:
    wh.clickhouse.command(
        f"CREATE TABLE {wh.db}.hits (ts DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY ts"
    )
    for day, n in counts.items():
        wh.clickhouse.command(
            f"INSERT INTO {wh.db}.hits SELECT toDateTime64('{day} 12:00:00', 3, 'UTC')"  # noqa: S608
            f" FROM numbers({n})"
        )


MONDAY = date(2026, 11, 16)


def weekly(day: date) -> int:
    """About 100 rows on weekdays and 40 at weekends, with a little noise."""
    noise = (day.toordinal() * 7) % 5 - 2
    return (40 if day.weekday() >= 5 else 100) + noise


def series(last: date, days: int = 28) -> dict[date, int]:
    return {last - timedelta(days=n): weekly(last - timedelta(days=n)) for n in range(1, days + 1)}


def z(observed: int, training: list[int]) -> float:
    return (observed - statistics.fmean(training)) / max(statistics.stdev(training), 1.0)


def test_volume_flags_a_spike(wh: Warehouse) -> None:
    counts = series(MONDAY) | {MONDAY: 300}
    daily_rows(wh, counts)
    check = Volume(name="hits", table="hits", column="ts", seasonality="weekly")
    found = run(wh, check, now=datetime(2026, 11, 17, 1, tzinfo=UTC))["hits"]
    mondays = [counts[MONDAY - timedelta(weeks=n)] for n in range(4, 0, -1)]
    assert verdict(found) == ("fail", pytest.approx(z(300, mondays)))
    assert found.details.startswith("2026-11-16: 300 rows; 4 training days")


def test_volume_weekly_seasonality_keeps_a_quiet_sunday_quiet(wh: Warehouse) -> None:
    sunday = MONDAY - timedelta(days=1)
    counts = series(sunday) | {sunday: weekly(sunday)}
    daily_rows(wh, counts)
    now = datetime(2026, 11, 16, 6, tzinfo=UTC)
    weekly_check = Volume(name="weekly", table="hits", column="ts", seasonality="weekly")
    flat = Volume(name="flat", table="hits", column="ts", seasonality="none", max_z=1.0)
    found = run(wh, weekly_check, flat, now=now)
    sundays = [counts[sunday - timedelta(weeks=n)] for n in range(4, 0, -1)]
    assert verdict(found["weekly"]) == ("pass", pytest.approx(z(counts[sunday], sundays)))
    training = [counts[sunday - timedelta(days=n)] for n in range(28, 0, -1)]
    assert verdict(found["flat"]) == ("fail", pytest.approx(z(counts[sunday], training)))


def test_volume_floor_and_training_size(wh: Warehouse) -> None:
    counts = {MONDAY - timedelta(days=n): 2 + n % 2 for n in range(1, 29)} | {MONDAY: 6}
    daily_rows(wh, counts)
    now = datetime(2026, 11, 17, tzinfo=UTC)
    tiny = Volume(name="tiny", table="hits", column="ts", seasonality="none", min_change=2.0)
    alert = Volume(name="alert", table="hits", column="ts", seasonality="none")
    short = Volume(name="short", table="hits", column="ts", training_days=7, min_training=4)
    found = run(wh, tiny, alert, short, now=now)
    assert verdict(found["alert"]) == ("fail", 3.5)  # mean 2.5, spread floored at one row
    assert verdict(found["tiny"]) == ("pass", 3.5)  # +140 %, under the 200 % floor
    assert verdict(found["short"]) == ("pass", None)  # one Monday in a week of history


# ---------------------------------------------------------------- schema drift


def test_schema_drift_reports_a_new_property_key_and_column(wh: Warehouse) -> None:
    check = SchemaDrift(name="drift", table="events", properties=True, severity="warn")
    wh.load([event(properties={"path": "/"}), event("signup", properties={"plan": "free"})])
    first = run(wh, check, now=T0 + timedelta(hours=1))["drift"]
    assert (verdict(first), first.details) == (("pass", 0.0), "first snapshot taken")
    again = run(wh, check, now=T0 + timedelta(hours=2))["drift"]
    assert (verdict(again), again.details) == (("pass", 0.0), "no change since the last snapshot")

    wh.load([event(at=T0 + timedelta(hours=2), properties={"path": "/", "referrer": "ad"})])
    wh.clickhouse.command(f"ALTER TABLE {wh.db}.events ADD COLUMN country String DEFAULT ''")
    drift = run(wh, check, now=T0 + timedelta(hours=3))["drift"]
    assert verdict(drift) == ("warn", 2.0)
    assert drift.details == "new column country String; new property page_view.referrer String"
    after = run(wh, check, now=T0 + timedelta(hours=4))["drift"]
    assert verdict(after) == ("pass", 0.0)


def test_schema_drift_reports_a_property_whose_json_type_changed(wh: Warehouse) -> None:
    check = SchemaDrift(name="drift", table="events", properties=True, properties_days=1)
    wh.load([event(properties={"plan": "free"})])
    run(wh, check, now=T0 + timedelta(hours=1))
    wh.load([event(at=T0 + timedelta(days=2), properties={"plan": 3})])
    found = run(wh, check, now=T0 + timedelta(days=2, hours=1))["drift"]
    assert (verdict(found), found.details) == (
        ("fail", 1.0),
        "retyped property page_view.plan: String -> Int64",
    )


def test_schema_drift_reports_vanished_keys_and_retyped_columns(wh: Warehouse) -> None:
    table(wh, "items (id UInt32, price Int32)", "(1, 2)")
    check = SchemaDrift(name="items", table="items")
    run(wh, check, now=T0)
    wh.clickhouse.command(f"ALTER TABLE {wh.db}.items MODIFY COLUMN price Int64")
    wh.clickhouse.command(f"ALTER TABLE {wh.db}.items DROP COLUMN id")
    found = run(wh, check, now=T0 + timedelta(hours=1))["items"]
    assert verdict(found) == ("fail", 2.0)
    assert found.details == "removed column id; retyped column price: Int32 -> Int64"


# ---------------------------------------------------------------- custom, runs, config


def test_custom_sql_returning_rows_fails(wh: Warehouse) -> None:
    wh.load([event(user="u1"), event("order_completed", user="u2")])
    orders = Custom(
        name="orders", table="events",
        sql="SELECT distinct_id FROM {db}.events WHERE event = 'order_completed'",
    )  # fmt: skip
    nothing = Custom(name="nothing", table="events", sql="SELECT 1 WHERE 0")
    found = run(wh, orders, nothing, now=T0)
    assert verdict(found["orders"]) == ("fail", 1.0)
    assert verdict(found["nothing"]) == ("pass", 0.0)


def test_every_outcome_is_a_dq_results_row(wh: Warehouse) -> None:
    wh.load([event()])
    checks = (
        Freshness(name="fresh", table="events"),
        Freshness(name="missing", table="no_such_table", severity="warn"),
    )
    outcomes = run_checks(wh.clickhouse, ModelConfig(checks=list(checks)), now=T0)
    assert [(o.check_name, o.status) for o in outcomes] == [("fresh", "pass"), ("missing", "warn")]
    assert outcomes[1].details.startswith("check could not run:")
    assert outcomes[0].reproduce == "headwater check --only fresh"
    rows = wh.rows(
        "dq_results",
        ["run_id", "checked_at", "check_name", "table_name", "severity", "status", "observed",
         "threshold", "sample"],
    )  # fmt: skip
    run_id = outcomes[0].run_id
    assert rows == [
        (run_id, T0, "fresh", "events", "error", "pass", 0.0, "age <= 7200 s", "[]"),
        (run_id, T0, "missing", "no_such_table", "warn", "warn", None, "the check runs", "[]"),
    ]


def test_the_default_checks_pass_on_a_modeled_stream(wh: Warehouse) -> None:
    events = generate(users=30, days=10, seed=3, end=date(2026, 11, 20))
    wh.load(events)
    wh.runner.run()
    newest = max(e.timestamp for e in events)
    outcomes = run_checks(wh.clickhouse, ModelConfig(), now=newest + timedelta(hours=1))
    assert {o.check_name: o.status for o in outcomes} == dict.fromkeys(
        [c.name for c in ModelConfig().checks], "pass"
    )
    assert wh.rows("dq_results", ["count()"]) == [(10,)]


def test_checks_are_declared_in_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[[checks]]\nkind = "accuracy"\nname = "revenue"\ntable = "fact_user_actions"\n'
        'column = "revenue_cents"\nmin = 0\nseverity = "warn"\n'
    )
    assert ModelConfig.load(path).checks == [
        Accuracy(name="revenue", table="fact_user_actions", column="revenue_cents", min=0,
                 severity="warn")
    ]  # fmt: skip
    path.write_text('[[checks]]\nkind = "freshness"\nname = "f"\ntable = "events; DROP"\n')
    with pytest.raises(ConfigError, match="'events; DROP' is not a name"):
        ModelConfig.load(path)
    path.write_text('[[checks]]\nkind = "vibes"\nname = "f"\ntable = "events"\n')
    with pytest.raises(ConfigError, match="Invalid value 'vibes'"):
        ModelConfig.load(path)
    with pytest.raises(ConfigError, match="names must be unique"):
        ModelConfig(checks=[Freshness(name="f", table="a"), Freshness(name="f", table="b")])


# ---------------------------------------------------------------- headwater check


def test_check_command_exits_one_on_an_error_check(
    warehouse_factory: WarehouseFactory,
    chdb_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wh = warehouse_factory()
    wh.load([event(at=datetime.now(UTC) - timedelta(days=1))])
    config = tmp_path / "models.toml"
    config.write_text(
        '[[checks]]\nkind = "freshness"\nname = "fresh"\ntable = "events"\n'
        '[[checks]]\nkind = "completeness"\nname = "ids"\ntable = "events"\n'
        'columns = ["distinct_id"]\n'
    )
    monkeypatch.setenv("HEADWATER_CLICKHOUSE_URL", chdb_url)
    monkeypatch.setenv("HEADWATER_CLICKHOUSE_DATABASE", wh.db)
    monkeypatch.setenv("HEADWATER_MODELS", str(config))
    root = typer.Typer()
    register(root)
    result = CliRunner().invoke(root, ["check"], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "fresh" in result.output
    assert "fail" in result.output
    result = CliRunner().invoke(root, ["check", "--only", "ids"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "fresh" not in result.output
