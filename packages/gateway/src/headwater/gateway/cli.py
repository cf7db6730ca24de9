"""`headwater serve`, `demo`, `forward` and `replay-errors`, added to the `headwater`
command."""

from __future__ import annotations

import asyncio
import signal
import threading
from datetime import datetime
from pathlib import Path
from typing import Annotated

import prometheus_client
import typer
import uvicorn
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from headwater.modeler import ClickHouse, WarehouseUnavailable

from ._app import create_app
from ._clickhouse import migrate
from ._demo import run_demo
from ._errors import ConfigError, SinkUnavailable
from ._forwarder import Forwarder, forwarder_for
from ._gateway import Gateway
from ._http_server import BoundedHttpTools
from ._logging import configure_logging
from ._metrics import ForwardMetrics
from ._replay import ReplayReport, replay_errors
from ._settings import PostHogRoutes, Settings


def _settings(console: Console) -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc


def register(app: typer.Typer) -> None:
    """Add the gateway's commands to the root command line."""

    @app.command("serve")
    def serve(
        host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port")] = 8000,
        workers: Annotated[int, typer.Option(help="worker processes (ClickHouse server only)")] = 1,
        log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING …")] = "INFO",
    ) -> None:
        """Start the ingestion gateway."""
        console = Console(stderr=True, soft_wrap=True)
        settings = _settings(console)
        if workers > 1 and settings.embedded:
            console.print(
                "embedded ClickHouse (chDB) belongs to one process: serving with 1 worker"
            )
            workers = 1
        if workers > 1 and settings.demo_write_key:
            console.print("[red]error:[/red] set HEADWATER_WRITE_KEYS to run several workers")
            raise typer.Exit(2)
        if settings.demo_write_key:
            console.print(f"demo write key (project 'demo'): {settings.demo_write_key}")
        configure_logging(log_level.upper())
        _run_server(settings, host=host, port=port, workers=workers)

    @app.command("demo")
    def demo(
        users: Annotated[int, typer.Option(help="synthetic users")] = 2000,
        days: Annotated[int, typer.Option(help="days of history")] = 60,
        seed: Annotated[int, typer.Option(help="random seed")] = 7,
        directory: Annotated[Path, typer.Option(help="where the data goes")] = Path(".headwater"),
    ) -> None:
        """The whole pipeline on the embedded default: SDK → gateway → ClickHouse → marts."""
        run_demo(
            directory=directory.resolve(), users=users, days=days, seed=seed, console=Console()
        )

    app.command("forward")(forward)

    @app.command("replay-errors")
    def replay(
        project: Annotated[str | None, typer.Option(help="only this project")] = None,
        since: Annotated[
            datetime | None, typer.Option(help="only errors received since (UTC)")
        ] = None,
        limit: Annotated[int, typer.Option(help="at most this many rows")] = 10_000,
    ) -> None:
        """Send the events kept in ingest_errors through ingestion again."""
        console = Console(stderr=True, soft_wrap=True)
        settings = _settings(console)
        try:
            report = asyncio.run(_replay(settings, project=project, since=since, limit=limit))
        except SinkUnavailable as exc:
            hint = " (is `headwater serve` running on this directory? stop it first)"
            console.print(
                f"[red]error:[/red] {escape(str(exc))}{hint if settings.embedded else ''}"
            )
            raise typer.Exit(1) from exc
        Console().print(_report_table(report))


def forward(
    once: Annotated[
        bool, typer.Option("--once", help="forward what is stored now, then exit")
    ] = False,
    metrics_port: Annotated[
        int, typer.Option(help="serve Prometheus /metrics on this port (0: none)")
    ] = 0,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING …")] = "INFO",
) -> None:
    """Forward stored events to PostHog: a server deployment's forwarder (set
    HEADWATER_FORWARD_IN_PROCESS=false on its gateways), or a catch-up with --once."""
    console = Console(stderr=True, soft_wrap=True)
    settings = _settings(console)
    if not PostHogRoutes(settings).enabled:
        console.print("[red]error:[/red] nothing to forward: HEADWATER_POSTHOG_HOST is unset")
        raise typer.Exit(2)
    configure_logging(log_level.upper())
    try:
        clickhouse = ClickHouse.connect(
            settings.clickhouse_url,
            database=settings.clickhouse_database,
            cluster=settings.clickhouse_cluster,
        )
    except WarehouseUnavailable as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    migrate(clickhouse)
    metrics = ForwardMetrics()
    if metrics_port:
        prometheus_client.start_http_server(metrics_port, registry=metrics.registry)
    forwarder = forwarder_for(settings, clickhouse, metrics)
    try:
        if once:
            forwarder.drain()
        else:
            _forward_until_stopped(forwarder)
    finally:
        forwarder.stop(timeout=10)
        clickhouse.close()
    Console().print(_forward_table(metrics))


def _run_server(settings: Settings, *, host: str, port: int, workers: int) -> None:
    """uvicorn with the bounded HTTP protocol: the app in this process, or `workers`
    processes that each build it from the environment."""
    if workers > 1:
        uvicorn.run(
            "headwater.gateway._app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            access_log=False,
            http=BoundedHttpTools,
        )
        return
    app = create_app(settings, freeze_heap=True)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, http=BoundedHttpTools)


def _forward_until_stopped(forwarder: Forwarder) -> None:
    """Forward from a thread until SIGINT or SIGTERM."""
    stopped = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stopped.set())
    forwarder.start()
    stopped.wait()


def _forward_table(metrics: ForwardMetrics) -> Table:
    table = Table(title="forwarded to PostHog")
    table.add_column("project")
    table.add_column("sent", justify="right")
    table.add_column("dead letters", justify="right")
    table.add_column("still behind", justify="right")
    found = metrics.registry.get_sample_value
    table.add_row(
        "(all)",
        f"{found('headwater_forward_sent_total') or 0:,.0f}",
        f"{found('headwater_forward_dead_letters_total') or 0:,.0f}",
        "",
    )
    for family in metrics.lag_events.collect():
        for sample in family.samples:
            table.add_row(escape(sample.labels["project"]), "", "", f"{sample.value:,.0f}")
    return table


async def _replay(
    settings: Settings, *, project: str | None, since: datetime | None, limit: int
) -> ReplayReport:
    gateway = Gateway(settings)
    await gateway.start()
    try:
        return await replay_errors(gateway, project=project, since=since, limit=limit)
    finally:
        await gateway.stop()


def _report_table(report: ReplayReport) -> Table:
    table = Table(title="replay of ingest_errors")
    table.add_column("outcome")
    table.add_column("rows", justify="right")
    for label, value in (
        ("read", report.read),
        ("stored", report.stored),
        ("duplicates", report.duplicates),
        ("still invalid", report.still_invalid),
    ):
        table.add_row(label, str(value))
    for reason, count in report.reasons.items():
        table.add_row(f"  {escape(reason)}", str(count))
    return table
