"""Distribution and PostgreSQL-consistency checks: data that passes, data that fails."""

from __future__ import annotations

import json
import socket
import statistics
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from headwater.modeler import AnyCheck, CheckOutcome, ConfigError, ModelConfig, run_checks
from headwater.modeler._config import Distribution, PostgresConsistency, Severity

from .conftest import Warehouse, WarehouseFactory
from .test_checks import event, verdict

MONDAY = date(2026, 11, 16)
NOW = datetime(2026, 11, 17, 1, tzinfo=UTC)  # the last complete day is MONDAY
POSTGRES = "host=127.0.0.1 port=5432 user=postgres dbname=test"


@pytest.fixture
def wh(warehouse_factory: WarehouseFactory) -> Warehouse:
    return warehouse_factory()


def run(
    wh: Warehouse, *checks: AnyCheck, environ: dict[str, str] | None = None
) -> dict[str, CheckOutcome]:
    config = ModelConfig(checks=list(checks))
    outcomes = run_checks(wh.clickhouse, config, now=NOW, environ=environ or {})
    return {o.check_name: o for o in outcomes}


def noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


# ---------------------------------------------------------------- numeric distribution


def orders(wh: Warehouse, day: date, revenues: list[int]) -> None:
    """`order_completed` events with these revenues, and a page view the filter leaves out."""
    wh.load(
        [event("order_completed", at=noon(day), properties={"revenue_cents": r}) for r in revenues]
        + [event("page_view", at=noon(day), properties={"revenue_cents": 10**6})]
    )


def revenue(name: str, *, min_change: float = 0.1) -> Distribution:
    return Distribution(
        name=name, table="events", expression="JSONExtractInt(properties, 'revenue_cents')",
        where="event = 'order_completed'", training_days=7, min_training=4, min_change=min_change,
    )  # fmt: skip


def z(observed: float, training: list[float]) -> float:
    return (observed - statistics.fmean(training)) / statistics.stdev(training)


def test_a_numeric_distribution_is_its_mean_and_quantiles_against_training(
    warehouse_factory: WarehouseFactory,
) -> None:
    usual, spiked = warehouse_factory(), warehouse_factory()
    means: list[float] = []
    for n in range(7, 0, -1):  # each training day: a - 100, a, a + 100
        a = 1000 + 20 * (n % 3)
        means.append(a)
        for wh in (usual, spiked):
            orders(wh, MONDAY - timedelta(days=n), [a - 100, a, a + 100])
    orders(usual, MONDAY, [910, 1010, 1110])
    orders(spiked, MONDAY, [1900, 2000, 2100])

    assert verdict(run(usual, revenue("revenue"))["revenue"]) == (
        "pass", pytest.approx(z(1010, means))
    )  # fmt: skip
    found = run(spiked, revenue("revenue"), revenue("floored", min_change=1.0))
    assert verdict(found["revenue"]) == ("fail", pytest.approx(z(2000, means)))
    assert verdict(found["floored"]) == ("pass", pytest.approx(z(2000, means)))  # +96 % < 100 %
    assert found["revenue"].threshold == "|z| <= 3.0 or change <= 10%"
    assert found["revenue"].details == (
        "2026-11-16, 7 training days: mean 2000 (training 1020 ± 16.3299, z 60.01, change 96%);"
        " p50 2000 (training 1020 ± 16.3299, z 60.01, change 96%);"
        " p90 2080 (training 1100 ± 16.3299, z 60.01, change 89%)"
    )


def test_a_distribution_without_rows_or_history_is_not_judged(wh: Warehouse) -> None:
    for n in (2, 1, 0):
        orders(wh, MONDAY - timedelta(days=n), [100, 200])
    short = revenue("short")
    refunds = Distribution(
        name="refunds", table="events", expression="toFloat64OrZero(distinct_id)",
        where="event = 'refund'", categorical=True,
    )  # fmt: skip
    found = run(wh, short, refunds)
    assert (verdict(found["short"]), found["short"].details) == (
        ("pass", None), "2026-11-16: 2 training days, too few"
    )  # fmt: skip
    assert (verdict(found["refunds"]), found["refunds"].details) == (
        ("pass", None), "2026-11-16: no rows to compare"
    )  # fmt: skip


# ---------------------------------------------------------------- categorical distribution


def visits(wh: Warehouse, name: str, latest: dict[str, int]) -> Distribution:
    """A table of 7 training days (chrome 60 %, firefox 30 %, safari 10 %) and MONDAY."""
    wh.clickhouse.command(
        f"CREATE TABLE {wh.db}.{name} (at DateTime64(3, 'UTC'), browser String)"
        " ENGINE = MergeTree ORDER BY at"
    )
    training = {"chrome": 6, "firefox": 3, "safari": 1}
    days = [(MONDAY - timedelta(days=n), training) for n in range(1, 8)] + [(MONDAY, latest)]
    for day, counts in days:
        for browser, count in counts.items():
            wh.clickhouse.command(
                f"INSERT INTO {wh.db}.{name} SELECT toDateTime64('{day} 12:00:00', 3, 'UTC'),"  # noqa: S608
                f" '{browser}' FROM numbers({count})"
            )
    return Distribution(
        name=name, table=name, expression="browser", time_column="at", categorical=True, top=2,
        training_days=7,
    )  # fmt: skip


def test_a_categorical_distribution_is_the_share_of_its_top_values(wh: Warehouse) -> None:
    steady = visits(wh, "steady", {"chrome": 5, "firefox": 4, "safari": 1})
    shifted = visits(wh, "shifted", {"chrome": 2, "firefox": 3, "safari": 5})
    newcomer = visits(wh, "newcomer", {"chrome": 12, "firefox": 3, "safari": 5})
    found = run(wh, steady, shifted, newcomer)

    assert verdict(found["steady"]) == ("pass", pytest.approx(0.1))
    assert found["steady"].details == "2026-11-16, 7 training days: largest change 10.0%"
    assert found["steady"].threshold == "share change <= 0.2 and no new value in the top 2"
    assert verdict(found["shifted"]) == ("fail", pytest.approx(0.4))
    assert found["shifted"].details == (
        "2026-11-16, 7 training days: new in the top 2: safari;"
        " chrome 20.0% (training 60.0%); safari 50.0% (training 10.0%)"
    )
    assert verdict(found["newcomer"]) == ("fail", pytest.approx(0.15))
    assert found["newcomer"].details == "2026-11-16, 7 training days: new in the top 2: safari"
    samples = dict(wh.rows("dq_results", ["check_name", "sample"]))
    assert json.loads(samples["shifted"]) == [
        {"value": "chrome", "share": 0.2, "training_share": 0.6},
        {"value": "safari", "share": 0.5, "training_share": 0.1},
    ]


# ---------------------------------------------------------------- postgres consistency


@pytest.fixture
def app_users() -> Iterator[str]:
    """A uniquely named `app_users` table in PostgreSQL's `test` database, dropped after."""
    name = f"app_users_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5) as connection:
        connection.execute(
            sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, user_id text NOT NULL)").format(
                sql.Identifier(name)
            )
        )
        try:
            yield name
        finally:
            connection.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))


def add_app_users(table: str, *users: str) -> None:
    with psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5) as connection:
        for user in users:
            connection.execute(
                sql.SQL("INSERT INTO {} (user_id) VALUES (%s)").format(sql.Identifier(table)),
                (user,),
            )


def identified(wh: Warehouse, *users: str) -> None:
    """$identify events for `users` (u1 twice: two dim_users versions), modeled."""
    at = datetime(2026, 11, 20, 10, tzinfo=UTC)
    wh.load(
        [event("$identify", user=u, at=at, properties={"$set": {"plan": "free"}}) for u in users]
        + [event("$identify", user="u1", at=at + timedelta(hours=1),
                 properties={"$set": {"plan": "pro"}})]
    )  # fmt: skip
    wh.runner.run()


def users_match(
    table: str,
    name: str = "users",
    *,
    dsn: str = "",
    dsn_env: str = "",
    tolerance: float = 0.0,
    severity: Severity = "error",
) -> PostgresConsistency:
    return PostgresConsistency(
        name=name, table="dim_users", value="uniqExact(user_id)", where="is_current",
        postgres_sql=f"SELECT count(*) FROM {table}",  # noqa: S608
        dsn=dsn, dsn_env=dsn_env, tolerance=tolerance, severity=severity,
    )  # fmt: skip


def test_postgres_consistency_compares_an_application_table(
    warehouse_factory: WarehouseFactory, app_users: str
) -> None:
    wh = warehouse_factory()
    identified(wh, "u1", "u2", "u3", "u4")
    assert wh.rows("dim_users", ["count()"], where="WHERE is_current") == [(4,)]
    add_app_users(app_users, "u1", "u2", "u3", "u4", "u5")
    check = users_match(app_users, dsn_env="HEADWATER_APP_DSN", tolerance=0.1)
    environ = {"HEADWATER_APP_DSN": POSTGRES}
    found = run(wh, check, environ=environ)["users"]
    assert verdict(found) == ("fail", 0.2)
    assert found.details == "dim_users uniqExact(user_id) = 4 vs PostgreSQL 5"
    assert found.threshold == "relative difference <= 0.1"
    assert wh.rows("dq_results", ["sample"]) == [('[{"clickhouse": 4.0, "postgres": 5.0}]',)]

    wh.load([event("$identify", user="u5", properties={"$set": {"plan": "free"}})])
    wh.runner.run()
    assert verdict(run(wh, check, environ=environ)["users"]) == ("pass", 0.0)
    inline = users_match(app_users, name="inline", dsn=POSTGRES, tolerance=0.1)
    assert verdict(run(wh, inline)["inline"]) == ("pass", 0.0)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_postgres_fails_the_check_not_the_run(wh: Warehouse) -> None:
    wh.load([event()])
    port = unused_port()
    dsn = f"host=127.0.0.1 port={port} user=postgres password=secret dbname=test"
    down = users_match("app_users", dsn=dsn, severity="warn")
    unset = users_match("app_users", name="unset", dsn_env="HEADWATER_NO_SUCH_DSN")
    wrong = PostgresConsistency(
        name="wrong", table="events", dsn=POSTGRES, postgres_sql="SELECT 'many', 'columns'"
    )
    outcomes = run(wh, down, unset, wrong)
    assert verdict(outcomes["users"]) == ("warn", None)
    assert outcomes["users"].details == (  # the DSN's password never shows
        f"PostgreSQL 127.0.0.1:{port}/test did not answer: connection failed:"
        f' connection to server at "127.0.0.1", port {port} failed: Connection refused'
    )
    assert (verdict(outcomes["unset"]), outcomes["unset"].details) == (
        ("fail", None), "no PostgreSQL DSN: HEADWATER_NO_SUCH_DSN is not set"
    )  # fmt: skip
    assert (verdict(outcomes["wrong"]), outcomes["wrong"].details) == (
        ("fail", None),
        "PostgreSQL 127.0.0.1:5432/test did not answer:"
        " the query must return one number, it returned [('many', 'columns')]",
    )


# ---------------------------------------------------------------- declarations


def test_the_new_checks_are_declared_in_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[[checks]]\nkind = "distribution"\nname = "revenue"\ntable = "events"\n'
        "expression = \"JSONExtractInt(properties, 'revenue_cents')\"\n"
        "where = \"event = 'order_completed'\"\nquantiles = [0.5, 0.99]\n"
        '[[checks]]\nkind = "postgres_consistency"\nname = "users"\ntable = "dim_users"\n'
        'dsn_env = "HEADWATER_APP_DSN"\npostgres_sql = "SELECT count(*) FROM app_users"\n'
        'value = "uniqExact(user_id)"\nwhere = "is_current"\ntolerance = 0.01\n'
    )
    assert ModelConfig.load(path).checks == [
        Distribution(name="revenue", table="events",
                     expression="JSONExtractInt(properties, 'revenue_cents')",
                     where="event = 'order_completed'", quantiles=[0.5, 0.99]),
        PostgresConsistency(name="users", table="dim_users", dsn_env="HEADWATER_APP_DSN",
                            postgres_sql="SELECT count(*) FROM app_users",
                            value="uniqExact(user_id)", where="is_current", tolerance=0.01),
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="set one of dsn and dsn_env"):
        PostgresConsistency(name="p", table="t", postgres_sql="SELECT 1")
    with pytest.raises(ConfigError, match="set one of dsn and dsn_env"):
        PostgresConsistency(name="p", table="t", postgres_sql="SELECT 1", dsn="x", dsn_env="X")
    with pytest.raises(ConfigError, match="dsn_env: 'APP-DSN' is not a name"):
        PostgresConsistency(name="p", table="t", postgres_sql="SELECT 1", dsn_env="APP-DSN")
    with pytest.raises(ConfigError, match="'ts; DROP' is not a name"):
        Distribution(name="d", table="t", expression="x", time_column="ts; DROP")
    with pytest.raises(ConfigError, match="quantiles must be between 0 and 1"):
        Distribution(name="d", table="t", expression="x", quantiles=[50])
