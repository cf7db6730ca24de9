"""`headwater model …`, `headwater check` and `headwater health`, added to the `headwater`
command.

A problem found before any work (a setting, a missing database, an argument) is one line
on stderr, `headwater: <what is wrong>: <what to do>`, and exit code 2, and nothing is
created on the way: chDB creates the directory it opens, so its existence is checked first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer
from clickhouse_connect.driver.exceptions import ClickHouseError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._alerts import CheckOutcome
from ._clickhouse import ClickHouse, redact
from ._config import ModelConfig
from ._errors import ModelerError
from ._health import (
    HealthRules,
    Monitor,
    Signal,
    alert_dispatcher,
    healthy,
    pipeline_health,
    signals,
)
from ._ledger import Ledger
from ._models import MODELS, Build, Span, model
from ._quality import failed
from ._runner import Runner, RunReport
from ._schedule import Scheduler, Timer
from ._settings import ModelerSettings
from .environment import embedded_directory

model_app = typer.Typer(help="Build and inspect the marts.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True, highlight=False, emoji=False)

_START = "start the gateway (headwater serve) or run headwater demo first"


def register(app: typer.Typer) -> None:
    """Add the modeler's commands to the root command line."""
    app.add_typer(model_app, name="model")
    app.command("check")(check)
    app.command("health")(health)


def _stop(problem: object, code: int = 2) -> typer.Exit:
    """Say what is wrong on one line of stderr; the exit to raise."""
    err.print(f"headwater: {escape(' '.join(str(problem).split()))}")
    return typer.Exit(code)


# -- what the commands are told ------------------------------------------------


def _day(option: str, raw: str) -> date:
    try:
        return datetime.strptime(raw, "%Y-%m-%d").date()
    except ValueError as exc:
        raise _stop(f"{option} {raw} is not a day: write it as YYYY-MM-DD") from exc


def _in_order(first: date, last: date) -> None:
    if first > last:
        raise _stop(f"--from {first} is after --to {last}")


def _days(start: str | None, end: str | None) -> tuple[date | None, date | None]:
    """The `--from` and `--to` days (either may be left out), or exit 2 saying what is wrong."""
    first = None if start is None else _day("--from", start)
    last = None if end is None else _day("--to", end)
    if first is not None and last is not None:
        _in_order(first, last)
    return first, last


def _settings() -> tuple[ModelerSettings, ModelConfig]:
    """The settings and the model configuration, or exit 2 naming what is wrong."""
    try:
        settings = ModelerSettings.from_env()
        return settings, settings.model_config()
    except ModelerError as exc:
        raise _stop(exc) from exc


def _open(settings: ModelerSettings) -> ClickHouse:
    """The Headwater database the settings name, or exit 2 saying where it is missing."""
    directory = embedded_directory(settings.clickhouse_url)
    if directory is not None and not directory.is_dir():
        raise _stop(f"no Headwater database at {directory} (HEADWATER_CLICKHOUSE_URL): {_START}")
    with _driver_hushed():
        try:
            clickhouse = ClickHouse.connect(
                settings.clickhouse_url, database=settings.clickhouse_database
            )
        except ModelerError as exc:
            raise _stop(exc) from exc
        try:
            holders = _databases_with_events(clickhouse)
        except ClickHouseError as exc:
            clickhouse.close()
            raise _stop(exc) from exc
    if settings.clickhouse_database not in holders:
        clickhouse.close()
        raise _stop(_missing(settings, directory, holders))
    return clickhouse


@contextmanager
def _driver_hushed() -> Iterator[None]:
    """The ClickHouse driver's warnings off: it logs one ("Unexpected Http Driver
    Exception") for a server it cannot reach, which we report on our one line."""
    driver = logging.getLogger("clickhouse_connect")
    level = driver.level
    driver.setLevel(logging.ERROR)
    try:
        yield
    finally:
        driver.setLevel(level)


def _databases_with_events(clickhouse: ClickHouse) -> list[str]:
    return [
        name
        for (name,) in clickhouse.rows(
            "SELECT database FROM system.tables WHERE name = 'events'"
            " AND database NOT IN ('system', 'information_schema', 'INFORMATION_SCHEMA')"
            " ORDER BY database"
        )
    ]


def _missing(settings: ModelerSettings, directory: Path | None, holders: list[str]) -> str:
    where = directory if directory is not None else redact(settings.clickhouse_url)
    problem = (
        f"no Headwater database {settings.clickhouse_database} at {where}"
        " (HEADWATER_CLICKHOUSE_DATABASE)"
    )
    if not holders:
        return f"{problem}: {_START}"
    return f"{problem}: set it to one that has events there: {', '.join(holders[:10])}"


def _connect() -> tuple[ClickHouse, ModelConfig, ModelerSettings]:
    """The settings, the model configuration and the database, or exit 2 saying what is wrong."""
    settings, config = _settings()
    return _open(settings), config, settings


@contextmanager
def _closing(clickhouse: ClickHouse, *, code: int) -> Iterator[None]:
    """Close ClickHouse when done; a failure is one line on stderr and exit `code` (a
    ClickHouse error too: not every one is translated on its way here)."""
    try:
        yield
    except (ModelerError, ClickHouseError) as exc:
        raise _stop(exc, code) from exc
    finally:
        clickhouse.close()


# -- the commands --------------------------------------------------------------


def print_report(
    report: RunReport, console: Console, *, idle: str = "no event arrived since the last run"
) -> None:
    """The models a run built, as a table (or, when it built none, `idle`: why not)."""
    if report.skipped:
        console.print(f"nothing to do: {idle}")
        return
    table = Table(title=f"model run {report.run_id}")
    for column in ("model", "partitions", "rows", "seconds"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for result in report.results:
        table.add_row(
            result.model, str(result.partitions), f"{result.rows:,}", f"{result.seconds:.2f}"
        )
    console.print(table)


def _idle(since: date | None, until: date | None, *, full: bool) -> str:
    """Why a run with these options found nothing to do."""
    if since is not None and until is not None:
        return f"no event between {since} and {until}"
    if since is not None:
        return f"no event on or after {since}"
    if until is not None:
        return f"no event on or before {until}"
    return "no event in the events table" if full else "no event arrived since the last run"


@model_app.command("run")
def run(
    start: Annotated[
        str | None, typer.Option("--from", metavar="YYYY-MM-DD", help="backfill from this day")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", metavar="YYYY-MM-DD", help="backfill to this day")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="rebuild every partition")] = False,
) -> None:
    """Bring the stale models up to date, in dependency order (or backfill --from/--to)."""
    since, until = _days(start, end)
    clickhouse, config, settings = _connect()
    with _closing(clickhouse, code=1):
        runner = Runner(clickhouse, config, lock=settings.run_lock())
        report = _run_with_progress(runner, full=full, since=since, until=until)
    print_report(report, Console(), idle=_idle(since, until, full=full))


def _run_with_progress(
    runner: Runner, *, full: bool, since: date | None, until: date | None
) -> RunReport:
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err
    ) as bar:
        task = bar.add_task("models", total=len(MODELS))

        def progress(name: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=f"model {name}")

        return runner.run(full=full, since=since, until=until, progress=progress)


@model_app.command("status")
def status(limit: Annotated[int, typer.Option(help="latest ledger rows")] = 20) -> None:
    """The latest runs from the ledger, and the modeled position in events."""
    clickhouse, _, settings = _connect()
    db = settings.clickhouse_database
    with _closing(clickhouse, code=1):
        ledger = Ledger(clickhouse)
        ledger.create()
        rows = clickhouse.rows(
            f"SELECT started_at, run_id, model, partition, status, rows, duration_ms, error"  # noqa: S608
            f" FROM {db}.model_runs ORDER BY started_at DESC LIMIT %(n)s",
            {"n": limit},
        )
        watermark = ledger.watermark()
    table = Table(title=f"model runs in {db}")
    for column in ("started", "run", "model", "partitions", "status", "rows", "ms", "error"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(escape(str(v)) for v in row))
    Console().print(table)
    Console().print(f"events modeled up to inserted_at {watermark or 'never'}")


@model_app.command("sql")
def sql(
    name: Annotated[str, typer.Argument(help="the model, e.g. metrics_active_users")],
    start: Annotated[str, typer.Option("--from", metavar="YYYY-MM-DD")] = "2026-01-01",
    end: Annotated[str, typer.Option("--to", metavar="YYYY-MM-DD")] = "2026-01-31",
) -> None:
    """Print the SQL a model runs for a day range (a dry run: nothing is executed)."""
    first, last = _day("--from", start), _day("--to", end)
    _in_order(first, last)
    try:
        chosen = model(name)
    except KeyError as exc:
        raise _stop(exc.args[0]) from exc
    settings, config = _settings()
    span = Span(first, last)
    typer.echo(chosen.select(Build(settings.clickhouse_database, config, span), first, last))


@model_app.command("schedule")
def schedule(
    interval: Annotated[
        int | None, typer.Option(help="seconds between runs (default: config)")
    ] = None,
    cron: Annotated[str | None, typer.Option(help="a cron expression, e.g. '*/5 * * * *'")] = None,
    runs: Annotated[int, typer.Option(help="stop after this many runs (0: never)")] = 0,
) -> None:
    """Run the models on an interval or a cron expression, in the foreground."""
    settings, config = _settings()
    try:
        timer = Timer(
            interval=interval or config.schedule.interval_seconds,
            cron=cron or config.schedule.cron,
        )
    except ModelerError as exc:
        raise _stop(exc) from exc
    clickhouse = _open(settings)
    with _closing(clickhouse, code=2):
        monitor = Monitor(clickhouse, config, dispatcher=alert_dispatcher(settings, clickhouse))
        runner = Runner(clickhouse, config, lock=settings.run_lock())
        done = _repeat(Scheduler(runner, timer, monitor=monitor), timer, runs)
    err.print(f"{done} runs, last at {datetime.now():%H:%M:%S}")


def _repeat(scheduler: Scheduler, timer: Timer, runs: int) -> int:
    """Tick until `runs` are done (forever for 0); how many were."""
    done = 0
    while runs == 0 or done < runs:
        started = time.monotonic()
        _tick(scheduler)
        done += 1
        if not runs or done < runs:
            time.sleep(timer.wait(started))
    return done


def _tick(scheduler: Scheduler) -> None:
    """One scheduled run, printed; a failed run is reported and the schedule goes on."""
    try:
        report = scheduler.tick()
    except (ModelerError, ClickHouseError) as exc:
        err.print(f"run failed: {escape(' '.join(str(exc).split()))}")
        return
    print_report(report, Console())
    if not report.skipped and scheduler.outcomes:
        failing = [o.check_name for o in scheduler.outcomes if o.status != "pass"]
        err.print(f"checks: {len(scheduler.outcomes)} run, failing: {', '.join(failing) or 'none'}")


_STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "red"}


def check(
    only: Annotated[
        list[str] | None, typer.Option("--only", help="run only this check (repeatable)")
    ] = None,
) -> None:
    """Run the data-quality checks; exit 1 when an error-severity check fails.

    Every result is recorded in dq_results and printed as a table; the check run is a
    `checks` row of the ledger, and alerts go to the configured channels (once per
    failing state).
    """
    clickhouse, config, settings = _connect()
    with _closing(clickhouse, code=2):
        monitor = Monitor(clickhouse, config, dispatcher=alert_dispatcher(settings, clickhouse))
        outcomes = monitor.check(only=only or ())
    print_outcomes(outcomes, Console())
    if failed(outcomes):
        raise typer.Exit(1)


def print_outcomes(outcomes: list[CheckOutcome], console: Console) -> None:
    """The checks' results, as a table."""
    table = Table(title=f"data-quality checks ({len(outcomes)})")
    for column in ("check", "table", "severity", "status", "observed", "threshold", "details"):
        table.add_column(column, justify="right" if column == "observed" else "left")
    for o in outcomes:
        observed = "" if o.observed is None else f"{o.observed:g}"
        status = f"[{_STATUS_STYLE[o.status]}]{o.status}[/]"
        table.add_row(
            escape(o.check_name), escape(o.table_name), o.severity, status, observed,
            escape(o.threshold), escape(o.details),
        )  # fmt: skip
    console.print(table)


_VERDICT_STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


def health(
    *,
    days: Annotated[int, typer.Option(help="the window of runs and schema changes")] = 7,
    runs: Annotated[int, typer.Option(help="at most this many latest runs")] = 50,
    min_success_rate: Annotated[float, typer.Option(help="of the model runs")] = 0.9,
    freshness_sla: Annotated[
        int, typer.Option(help="seconds since the newest event, at most")
    ] = 3600,
    max_drop: Annotated[float, typer.Option(help="events per day may fall by this share")] = 0.5,
    max_rejected: Annotated[
        float, typer.Option(help="share of events the gateway may reject")
    ] = 0.05,
) -> None:
    """Pipeline health from the ledger, events, dq_results and the gateway's /metrics
    (HEADWATER_GATEWAY_METRICS_URL); exit 1 when a signal fails."""
    clickhouse, config, settings = _connect()
    rules = HealthRules(
        days=days,
        runs=runs,
        min_success_rate=min_success_rate,
        freshness_sla_seconds=freshness_sla,
        max_drop=max_drop,
        max_rejected_rate=max_rejected,
    )
    with _closing(clickhouse, code=2):
        found = signals(
            pipeline_health(
                clickhouse, config, rules=rules, metrics_url=settings.gateway_metrics_url
            )
        )
    print_signals(found, Console(), title=f"pipeline health of {settings.clickhouse_database}")
    if not healthy(found):
        raise typer.Exit(1)


def print_signals(found: list[Signal], console: Console, *, title: str) -> None:
    """The health signals, as a table."""
    table = Table(title=title)
    for column in ("signal", "value", "verdict", "rule"):
        table.add_column(column)
    for s in found:
        verdict = f"[{_VERDICT_STYLE[s.verdict]}]{s.verdict}[/]"
        table.add_row(escape(s.name), escape(s.value), verdict, escape(s.rule))
    console.print(table)
