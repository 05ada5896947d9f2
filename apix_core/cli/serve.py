"""``apix serve``: an app's HTTP processors on a real ASGI server (uvicorn), workers beside."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from apix_core.cli._common import (
    ApixCommand,
    AppTarget,
    LogLevel,
    configure_logging,
    console,
    escape,
    handle_errors,
)
from apix_core.constants import FAST_RETRIES_ENV
from apix_core.errors import ConfigurationError

FastRetries = Annotated[
    bool,
    typer.Option(
        "--fast-retries",
        help=f"Development: cap retry delays at 0.1 s (also {FAST_RETRIES_ENV}=true).",
    ),
]


@handle_errors
def serve(
    target: AppTarget,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[
        bool,
        typer.Option("--workers/--no-workers", help="Run the app's queue workers beside it."),
    ] = True,
    schedules: Annotated[
        bool, typer.Option("--schedules/--no-schedules", help="Fire schedules on their times.")
    ] = True,
    max_body: Annotated[
        int, typer.Option("--max-body", min=1, help="Largest request body in bytes (else 413).")
    ] = 1024 * 1024,
    fast_retries: FastRetries = False,
    log_level: LogLevel = None,
) -> None:
    """Serve an app's HTTP processors (route=...) locally, its queue workers running beside.

    Requests are routed through App.handle_http, as the cloud adapters route them. Ctrl-C or
    SIGTERM stops gracefully: in-flight requests and batches finish first.
    """
    try:
        import uvicorn
    except ModuleNotFoundError:
        raise ConfigurationError(
            "apix serve needs uvicorn: pip install 'apix-core[serve]'"
        ) from None
    from apix_core.cli.loader import load_app
    from apix_core.serve import AppServer

    if fast_retries:
        os.environ[FAST_RETRIES_ENV] = "true"
    configure_logging(log_level)
    app = load_app(target)
    routes = [f"{s.route.method} {s.route.path}" for s in app.specs.values() if s.route]
    if not routes and not workers:
        raise ConfigurationError(f"{target} has no HTTP processor (route=...) to serve")
    out = console(stderr=True)
    out.print(
        f"[bold]apix serve[/] {escape(app.name)} on http://{host}:{port} "
        f"(routes: {escape(', '.join(routes) or 'none')}; "
        f"workers: {'on' if workers else 'off'})"
    )
    server = AppServer(app, workers=workers, schedules=schedules, max_body_bytes=max_body)
    config = uvicorn.Config(
        server,
        host=host,
        port=port,
        lifespan="on",
        log_level=(log_level or "warning").lower(),
        access_log=bool(log_level and log_level.lower() in ("debug", "info")),
    )
    _GracefulServer(config).run()
    out.print(f"[bold]apix serve[/] {escape(app.name)} stopped")


def _graceful_server_class() -> type:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """Exits 0 after a graceful stop on SIGINT/SIGTERM, as ``apix run`` does (uvicorn
        re-raises the signal once shut down, which would end the process with 130/-15)."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    return GracefulServer


def _GracefulServer(config: Any) -> Any:
    return _graceful_server_class()(config)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""
    app.command(cls=ApixCommand)(serve)
