"""``apix graph``: an app's topology as a Mermaid flowchart."""

from __future__ import annotations

import typer

from apix_core.cli._common import ApixCommand, AppTarget, handle_errors


@handle_errors
def graph(target: AppTarget) -> None:
    """Print the app's topology as a Mermaid flowchart."""
    from apix_core.cli.loader import load_app

    # Plain echo: Mermaid's [brackets] would be taken for rich markup.
    typer.echo(load_app(target).mermaid())


def register(app: typer.Typer) -> None:
    """Add ``graph`` to ``app``."""
    app.command(cls=ApixCommand)(graph)
