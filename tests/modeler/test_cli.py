"""`headwater model run | status | sql | schedule` against the session's chDB directory."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from headwater.modeler import MODELS as ALL_MODELS
from headwater.modeler.cli import model_app
from headwater.modeler.synthetic import generate

from .conftest import Warehouse, WarehouseFactory

MODELS = tuple(m.name for m in ALL_MODELS)
root = typer.Typer()
root.add_typer(model_app, name="model")


@pytest.fixture
def loaded(
    warehouse_factory: WarehouseFactory, chdb_url: str, monkeypatch: pytest.MonkeyPatch
) -> Warehouse:
    """A database with a small stream, which the commands' environment points at."""
    wh = warehouse_factory()
    wh.load(generate(users=40, days=10, seed=5, end=date(2026, 11, 20)))
    monkeypatch.setenv("HEADWATER_CLICKHOUSE_URL", chdb_url)
    monkeypatch.setenv("HEADWATER_CLICKHOUSE_DATABASE", wh.db)
    return wh


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(root, ["model", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_run_builds_every_model_then_finds_nothing_to_do(loaded: Warehouse) -> None:
    code, output = invoke("run")
    assert code == 0, output
    for name in MODELS:
        assert name in output
    assert loaded.rows("metrics_active_users", ["count()"]) == [(10,)]
    code, output = invoke("run")
    assert (code, output.splitlines()[-1]) == (
        0,
        "nothing to do: no event arrived since the last run",
    )


def test_backfill_rebuilds_the_days_asked_for(loaded: Warehouse) -> None:
    assert invoke("run")[0] == 0
    code, output = invoke("run", "--from", "2026-11-18", "--to", "2026-11-19")
    assert code == 0, output
    labels = loaded.clickhouse.rows(
        f"SELECT partition FROM {loaded.db}.model_runs"  # noqa: S608
        " WHERE model = 'agg_daily_events' ORDER BY started_at"
    )
    assert labels == [("2026-11-11..2026-11-20",), ("2026-11-18..2026-11-19",)]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["--from", "2026-12-01", "--to", "2026-12-07"],
            "no event between 2026-12-01 and 2026-12-07",
        ),
        (["--from", "2026-11-21"], "no event on or after 2026-11-21"),
        (["--to", "2026-11-10"], "no event on or before 2026-11-10"),
    ],
)
def test_a_range_without_events_says_so(loaded: Warehouse, args: list[str], said: str) -> None:
    code, output = invoke("run", *args)
    assert (code, output.splitlines()[-1]) == (0, f"nothing to do: {said}")
    assert loaded.clickhouse.rows(
        f"SELECT count() FROM {loaded.db}.model_runs"  # noqa: S608
    ) == [(0,)]


def test_one_end_of_a_range_is_enough(loaded: Warehouse) -> None:
    assert invoke("run")[0] == 0
    assert invoke("run", "--from", "2026-11-19")[0] == 0
    assert invoke("run", "--to", "2026-11-12")[0] == 0
    labels = loaded.clickhouse.rows(
        f"SELECT partition FROM {loaded.db}.model_runs"  # noqa: S608
        " WHERE model = 'agg_daily_events' ORDER BY started_at"
    )
    assert labels == [
        ("2026-11-11..2026-11-20",),
        ("2026-11-19..2026-11-20",),
        ("2026-11-11..2026-11-12",),
    ]


def _marts_built(loaded: Warehouse) -> int:
    return int(
        loaded.clickhouse.value(
            "SELECT count() FROM system.tables WHERE database = %(db)s"
            " AND name = 'metrics_active_users'",
            {"db": loaded.db},
        )
    )


def test_the_config_file_names_the_database_and_the_environment_wins(
    loaded: Warehouse, chdb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEADWATER_CLICKHOUSE_URL")
    monkeypatch.delenv("HEADWATER_CLICKHOUSE_DATABASE")
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "headwater.toml"
    config.write_text(f'clickhouse_url = "{chdb_url}"\nclickhouse_database = "hw_elsewhere"\n')
    monkeypatch.setenv("HEADWATER_CONFIG", str(config))
    code, output = invoke("run")
    assert code == 2
    assert output.startswith(
        f"headwater: no Headwater database hw_elsewhere at {chdb_url.removeprefix('chdb://')}"
        " (HEADWATER_CLICKHOUSE_DATABASE): set it to one that has events there: "
    )
    assert _marts_built(loaded) == 0
    monkeypatch.setenv("HEADWATER_CLICKHOUSE_DATABASE", loaded.db)  # the environment wins
    code, output = invoke("run")
    assert code == 0, output
    assert loaded.rows("metrics_active_users", ["count()"]) == [(10,)]
    config.write_text(f'clickhouse_url = "{chdb_url}"\nclickhouse_database = "{loaded.db}"\n')
    monkeypatch.delenv("HEADWATER_CLICKHOUSE_DATABASE")
    code, output = invoke("run")
    assert (code, output.splitlines()[-1]) == (
        0,
        "nothing to do: no event arrived since the last run",
    )
    assert list(tmp_path.iterdir()) == [config]  # the default directory was not used


def test_status_lists_the_runs(loaded: Warehouse) -> None:
    assert invoke("run")[0] == 0
    code, output = invoke("status")
    assert code == 0
    assert output.count(" ok ") == 8
    assert "events modeled up to inserted_at 20" in output


def test_sql_is_a_dry_run(loaded: Warehouse) -> None:
    code, output = invoke("sql", "funnel_conversions", "--from", "2026-11-01", "--to", "2026-11-02")
    assert code == 0
    assert "-- grain: one row per project, funnel, entry day and step" in output
    assert "['page_view', 'add_to_cart', 'checkout_started', 'order_completed'] AS steps" in output
    assert loaded.clickhouse.rows(
        "SELECT count() FROM system.tables WHERE database = %(db)s AND name = 'funnel_conversions'",
        {"db": loaded.db},
    ) == [(0,)]
    assert invoke("sql", "nope") == (
        2,
        f"headwater: no model named 'nope'; models: {', '.join(MODELS)}\n",
    )


def test_a_bad_configuration_stops_with_its_name(
    loaded: Warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "models.toml"
    config.write_text('[[funnels]]\nname = "signup"\nsteps = ["visit"]\n')
    monkeypatch.setenv("HEADWATER_MODELS", str(config))
    code, output = invoke("run")
    assert code == 2
    problem = "funnel 'signup' needs at least two steps - at `$.funnels[0]`"
    assert output == f"headwater: model configuration {config}: {problem}\n"


def test_schedule_runs_on_its_interval(loaded: Warehouse) -> None:
    code, output = invoke("schedule", "--interval", "1", "--runs", "2")
    assert code == 0, output
    assert output.count("model run ") == 1  # the second run had nothing to do
    assert "nothing to do" in output
    assert "2 runs" in output
