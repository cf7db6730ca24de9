"""The `headwater` command line; the gateway and modeler add their commands to it.

A package contributes commands through the `headwater.cli` entry-point group: each
entry point is a function that receives the root `typer.Typer` and registers on it.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

try:
    import typer
    from rich.console import Console
    from rich.markup import escape
except ImportError:  # pragma: no cover - the cli extra is not installed

    def main() -> None:
        """Tell how to get the command line."""
        sys.exit("the headwater command needs its extra: pip install 'headwater-sdk[cli]'")

else:
    from ._schema import PlanError, export_plan

    app = typer.Typer(
        name="headwater",
        help="Headwater: typed product events, from the SDK to the marts.",
        no_args_is_help=True,
        add_completion=False,
    )
    schema_app = typer.Typer(help="Tracking plans from typed events.", no_args_is_help=True)
    app.add_typer(schema_app, name="schema")

    @schema_app.command("export")
    def schema_export(
        targets: Annotated[
            list[str], typer.Argument(help="module:EventClass, or a module for all its events")
        ],
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="write here instead of stdout")
        ] = None,
    ) -> None:
        """Write the JSON Schema tracking plan of typed events."""
        console = Console(stderr=True, soft_wrap=True)
        try:
            document = export_plan(targets)
        except PlanError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from exc
        if output is None:
            sys.stdout.buffer.write(document)
            return
        try:
            output.write_bytes(document)
        except OSError as exc:
            console.print(f"[red]error:[/red] cannot write {escape(str(output))}: {exc.strerror}")
            raise typer.Exit(2) from exc
        console.print(f"tracking plan written to {escape(str(output))}")

    def main() -> None:
        """Run the command line with every installed package's commands."""
        for entry in entry_points(group="headwater.cli"):
            entry.load()(app)
        app()
