"""`headwater model …`, added to the `headwater` command."""

from __future__ import annotations

import time
from datetime import date, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._alerts import CheckOutcome
from ._clickhouse import ClickHouse
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
from ._models import MODELS, Build, Span, model
from ._quality import failed
from ._runner import Runner, RunReport
from ._schedule import Scheduler, Timer
from ._settings import ModelerSettings

model_app = typer.Typer(help="Build and inspect the marts.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the modeler's commands to the root command line."""
    app.add_typer(model_app, name="model")
    app.command("check")(check)
    app.command("health")(health)


def _stop(exc: ModelerError, code: int) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(str(exc))}")
    return typer.Exit(code)


def _connect() -> tuple[ClickHouse, ModelConfig, ModelerSettings]:
    """The settings, the model configuration and ClickHouse, or exit 2 saying what is wrong."""
    try:
        settings = ModelerSettings.from_env()
        config = settings.model_config()
        clickhouse = ClickHouse.connect(
            settings.clickhouse_url, database=settings.clickhouse_database
        )
    except ModelerError as exc:
        raise _stop(exc, 2) from exc
    return clickhouse, config, settings


def _runner() -> tuple[Runner, ClickHouse, ModelerSettings]:
    clickhouse, config, settings = _connect()
    return Runner(clickhouse, config, lock=settings.run_lock()), clickhouse, settings


def _monitor(clickhouse: ClickHouse, config: ModelConfig, settings: ModelerSettings) -> Monitor:
    try:
        return Monitor(clickhouse, config, dispatcher=alert_dispatcher(settings, clickhouse))
    except ModelerError as exc:
        clickhouse.close()
        raise _stop(exc, 2) from exc


def print_report(report: RunReport, console: Console) -> None:
    """The models a run built, as a table."""
    if report.skipped:
        console.print("nothing to do: no event arrived since the last run")
        return
    table = Table(title=f"model run {report.run_id}")
    for column in ("model", "partitions", "rows", "seconds"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for result in report.results:
        table.add_row(
            result.model, str(result.partitions), f"{result.rows:,}", f"{result.seconds:.2f}"
        )
    console.print(table)


@model_app.command("run")
def run(
    start: Annotated[
        date | None, typer.Option("--from", formats=["%Y-%m-%d"], help="backfill from this day")
    ] = None,
    end: Annotated[
        date | None, typer.Option("--to", formats=["%Y-%m-%d"], help="backfill to this day")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="rebuild every partition")] = False,
) -> None:
    """Bring the stale models up to date, in dependency order (or backfill --from/--to)."""
    runner, clickhouse, _ = _runner()
    console = Console()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err
    ) as bar:
        task = bar.add_task("models", total=len(MODELS))

        def progress(name: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=f"model {name}")

        try:
            report = runner.run(full=full, since=start, until=end, progress=progress)
        except ModelerError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(1) from exc
        finally:
            clickhouse.close()
    print_report(report, console)


@model_app.command("status")
def status(limit: Annotated[int, typer.Option(help="latest ledger rows")] = 20) -> None:
    """The latest runs from the ledger, and the modeled position in events."""
    runner, clickhouse, settings = _runner()
    db = settings.clickhouse_database
    runner.ledger.create()
    table = Table(title=f"model runs in {db}")
    for column in ("started", "run", "model", "partitions", "status", "rows", "ms", "error"):
        table.add_column(column)
    rows = clickhouse.rows(
        f"SELECT started_at, run_id, model, partition, status, rows, duration_ms, error"  # noqa: S608
        f" FROM {db}.model_runs ORDER BY started_at DESC LIMIT %(n)s",
        {"n": limit},
    )
    for row in rows:
        table.add_row(*(escape(str(v)) for v in row))
    Console().print(table)
    Console().print(f"events modeled up to inserted_at {runner.ledger.watermark() or 'never'}")
    clickhouse.close()


@model_app.command("sql")
def sql(
    name: Annotated[str, typer.Argument(help="the model, e.g. metrics_active_users")],
    start: Annotated[date, typer.Option("--from", formats=["%Y-%m-%d"])] = date(2026, 1, 1),
    end: Annotated[date, typer.Option("--to", formats=["%Y-%m-%d"])] = date(2026, 1, 31),
) -> None:
    """Print the SQL a model runs for a day range (a dry run: nothing is executed)."""
    try:
        chosen = model(name)
        settings = ModelerSettings.from_env()
        config = settings.model_config()
    except (KeyError, ModelerError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc.args[0]))}")
        raise typer.Exit(2) from exc
    span = Span(start, end, frozenset(), None)
    typer.echo(chosen.select(Build(settings.clickhouse_database, config, span), start, end))


@model_app.command("schedule")
def schedule(
    interval: Annotated[
        int | None, typer.Option(help="seconds between runs (default: config)")
    ] = None,
    cron: Annotated[str | None, typer.Option(help="a cron expression, e.g. '*/5 * * * *'")] = None,
    runs: Annotated[int, typer.Option(help="stop after this many runs (0: never)")] = 0,
) -> None:
    """Run the models on an interval or a cron expression, in the foreground."""
    runner, clickhouse, settings = _runner()
    configured = settings.model_config().schedule
    try:
        timer = Timer(
            interval=interval or configured.interval_seconds, cron=cron or configured.cron
        )
    except ModelerError as exc:
        clickhouse.close()
        raise _stop(exc, 2) from exc
    scheduler = Scheduler(
        runner, timer, monitor=_monitor(clickhouse, settings.model_config(), settings)
    )
    done = 0
    try:
        while runs == 0 or done < runs:
            started = time.monotonic()
            _tick(scheduler)
            done += 1
            if not runs or done < runs:
                time.sleep(timer.wait(started))
    finally:
        clickhouse.close()
    err.print(f"{done} runs, last at {datetime.now():%H:%M:%S}")


def _tick(scheduler: Scheduler) -> None:
    """One scheduled run, printed; a failed run is reported and the schedule goes on."""
    try:
        report = scheduler.tick()
    except ModelerError as exc:
        err.print(f"[red]run failed:[/red] {escape(str(exc))}")
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
    monitor = _monitor(clickhouse, config, settings)
    try:
        outcomes = monitor.check(only=only or ())
    except ModelerError as exc:
        raise _stop(exc, 2) from exc
    finally:
        clickhouse.close()
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
    try:
        found = signals(
            pipeline_health(
                clickhouse, config, rules=rules, metrics_url=settings.gateway_metrics_url
            )
        )
    except ModelerError as exc:
        raise _stop(exc, 2) from exc
    finally:
        clickhouse.close()
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
