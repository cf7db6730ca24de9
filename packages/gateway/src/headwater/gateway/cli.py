"""`headwater serve` and `headwater replay-errors`, added to the `headwater` command."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from rich.markup import escape

from ._app import create_app
from ._errors import ConfigError
from ._logging import configure_logging
from ._settings import Settings


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
        if workers > 1:
            uvicorn.run(
                "headwater.gateway._app:app_from_env",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                log_config=None,
                access_log=False,
            )
            return
        uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)
