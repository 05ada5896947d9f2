"""``apix run`` and ``apix worker``: run an app on the local runner."""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Protocol, runtime_checkable

import typer

from apix_core.cli._common import (
    ApixCommand,
    AppTarget,
    LogLevel,
    TransportOpt,
    arun,
    configure_logging,
    console,
    escape,
    handle_errors,
    transport_option,
    use_transport,
)
from apix_core.cli.serve import FastRetries
from apix_core.constants import FAST_RETRIES_ENV

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from apix_core.app import App
    from apix_core.runtime import RunStats
    from apix_core.transport.base import Producer


@runtime_checkable
class DeadLetterQueues(Protocol):
    """A transport whose dead letters sit on queues of its own (SQS): which queues those are."""

    async def dead_letter_queues(self) -> set[str]: ...


def _progress_table(app: App, stats: RunStats, command: str = "run") -> Table:
    from rich.table import Table

    table = Table(title=f"apix {command}: {app.name}", title_justify="left")
    for col in ("queue", "processor"):
        table.add_column(col)
    for col in ("completed", "duplicates", "retried", "dead-lettered", "depth"):
        table.add_column(col, justify="right")
    for spec in app.specs.values():
        q = app.input_queue(spec)
        if q is None:
            continue
        s = stats.queues.get(q)
        d = stats.depths.get(q)
        dead = s.dead_lettered if s else 0
        table.add_row(
            q,
            spec.name,
            str(s.completed if s else 0),
            str(s.duplicates if s else 0),
            str(s.retried if s else 0),
            f"[yellow]{dead}[/]" if dead else "0",
            str(d.total if d else 0),
        )
    return table


@dataclass
class RunEnd:
    """How a run ended: the stats, how long it took, why it stopped, the queues that hold
    messages no processor of the app consumes, and the transport it ran on (closed)."""

    stats: RunStats
    elapsed: float
    interrupted: bool = False
    stranded: dict[str, int] = field(default_factory=dict)
    transport: Producer | None = None


def _summary(
    stats: RunStats,
    elapsed: float,
    drained: bool,
    *,
    interrupted: bool = False,
    max_seconds: float | None = None,
) -> str:
    duplicates = sum(s.duplicates for s in stats.queues.values())
    retried = sum(s.retried for s in stats.queues.values())
    left = sum(d.total for d in stats.depths.values())
    dead = stats.dead_lettered
    dead_txt = f"[yellow]{dead} dead-lettered[/]" if dead else "0 dead-lettered"
    queued = f"{left} message(s) still queued"
    if interrupted:
        state = f"interrupted ({queued})"
    elif max_seconds is not None and elapsed >= max_seconds:
        state = f"stopped after --max-seconds {max_seconds:g} ({queued})"
    elif drained:
        state = "drained"
    else:
        state = f"stopped ({queued})"
    return (
        f"[bold]{state}[/] in {elapsed:.1f}s: [green]{stats.completed} completed[/], "
        f"{duplicates} duplicates, {retried} retried, {dead_txt}, "
        f"{stats.schedule_ticks} schedule tick(s)"
    )


async def _run_app(
    app: App,
    *,
    forever: bool,
    max_seconds: float | None,
    schedules: bool,
    console: Console,
    command: str = "run",
) -> RunEnd:
    import asyncio

    from rich.live import Live

    from apix_core.runtime import LocalRunner

    live: Live | None = None
    if console.is_terminal:
        live = Live(console=console, refresh_per_second=8, redirect_stderr=True, transient=False)

    def progress(stats: RunStats) -> None:
        if live is not None:
            live.update(_progress_table(app, stats, command))

    runner = LocalRunner(
        app,
        forever=forever,
        fire_schedules=schedules,
        on_progress=progress,
        max_seconds=max_seconds,
    )
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        runner.stop()

    # Ctrl-C / SIGTERM stop the runner gracefully: in-flight batches settle before exit.
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, interrupt)
            installed.append(sig)
    if forever:
        # A line in the logs of a container (or a test) that the workers are up and that a
        # signal now stops them gracefully.
        print(f"apix: {app.name} running; Ctrl-C or SIGTERM stops it", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        if live is not None:
            with live:
                stats = await runner.run()
        else:
            stats = await runner.run()
        elapsed = time.monotonic() - started
        stranded = await stranded_queues(app)
    finally:
        used = app.transport  # App.close forgets it; the hints ask what it can do
        for sig in installed:
            loop.remove_signal_handler(sig)
        await app.close()
    return RunEnd(stats, elapsed, interrupted, stranded, used)


async def stranded_queues(app: App) -> dict[str, int]:
    """Queues of the app's transport that hold messages no processor of ``app`` consumes
    (name → messages), when the transport can list its queues (:class:`QueueAdmin`).
    Dead-letter queues are no such queues: their messages are read with ``apix dlq``."""
    from apix_core.transport.base import QueueAdmin

    transport = app.transport
    if not isinstance(transport, QueueAdmin):
        return {}
    found: dict[str, int] = {}
    for queue in await transport.queues():
        if app.consumer_of(queue) is None:
            total = (await transport.depth(queue)).total
            if total:
                found[queue] = total
    if found and isinstance(transport, DeadLetterQueues):
        dead = await transport.dead_letter_queues()
        found = {q: n for q, n in found.items() if q not in dead}
    return found


def _dead_letter_hint(transport: Producer | None, again: str) -> str:
    """What to do about dead letters, with commands ``transport`` supports."""
    from apix_core.transport.base import DeadLetterAdmin

    if isinstance(transport, DeadLetterAdmin):
        return f"inspect with `apix dlq list{again}`, replay with `apix dlq replay ID{again}`"
    return f"{_the(transport)} keeps them: read them with the queue service's own tools"


def _the(transport: Producer | None) -> str:
    return f"the {transport.name} transport" if transport is not None else "this transport"


def _stranded_hint(transport: Producer | None, queue: str, again: str) -> str:
    """What to do about messages on ``queue``, with commands ``transport`` supports."""
    from apix_core.cli.queues import QueueInspector

    if isinstance(transport, QueueInspector):
        return (
            f"inspect with `apix queues peek {queue}{again}`, "
            f"drop with `apix queues purge {queue}{again}`"
        )
    return f"{_the(transport)} cannot peek at or purge a queue: use the queue service's own tools"


def _run_command(
    target: str,
    *,
    forever: bool,
    max_seconds: float | None,
    schedules: bool,
    strict: bool,
    log_level: str | None,
    fast_retries: bool = False,
    transport: str | None = None,
    command: str = "run",
) -> None:
    from apix_core.cli.loader import load_app

    use_transport(transport)

    if fast_retries:
        # Read by Settings when the app starts (an App built with its own settings too).
        os.environ[FAST_RETRIES_ENV] = "true"
    configure_logging(log_level)
    app = load_app(target)
    out = console()
    end = arun(
        _run_app(
            app,
            forever=forever,
            max_seconds=max_seconds,
            schedules=schedules,
            console=out,
            command=command,
        )
    )
    stats = end.stats
    drained = all(d.total == 0 for d in stats.depths.values())
    if not out.is_terminal:
        out.print(_progress_table(app, stats, command))
    out.print(
        _summary(stats, end.elapsed, drained, interrupted=end.interrupted, max_seconds=max_seconds)
    )
    # The commands suggested name the transport this run used, as --transport gave it.
    again = transport_option(transport)
    if stats.dead_lettered:
        hint = _dead_letter_hint(end.transport, again)
        out.print(
            f"[yellow]{stats.dead_lettered} message(s) dead-lettered: {escape(hint)}[/]",
            soft_wrap=True,
        )
    for queue, count in sorted(end.stranded.items()):
        hint = _stranded_hint(end.transport, queue, again)
        out.print(
            f"[yellow]{count} message(s) on queue {escape(queue)}, which no processor of "
            f"{escape(app.name)} consumes: {escape(hint)}[/]",
            soft_wrap=True,
        )
    if strict and (stats.dead_lettered or not drained or end.stranded):
        raise typer.Exit(1)


MaxSeconds = Annotated[
    float | None, typer.Option("--max-seconds", min=0.0, help="Stop after this many seconds.")
]


@handle_errors
def run(
    target: AppTarget,
    forever: Annotated[
        bool, typer.Option("--forever", help="Keep running; schedules fire on their cron times.")
    ] = False,
    max_seconds: MaxSeconds = None,
    schedules: Annotated[
        bool, typer.Option("--schedules/--no-schedules", help="Fire schedule processors.")
    ] = True,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit 1 if anything was dead-lettered or left queued (unconsumed queues too).",
        ),
    ] = False,
    fast_retries: FastRetries = False,
    transport: TransportOpt = None,
    log_level: LogLevel = None,
) -> None:
    """Run an app until its queues drain (each schedule fires once at start)."""
    _run_command(
        target,
        forever=forever,
        max_seconds=max_seconds,
        schedules=schedules,
        strict=strict,
        log_level=log_level,
        fast_retries=fast_retries,
        transport=transport,
    )


@handle_errors
def worker(
    target: AppTarget,
    max_seconds: MaxSeconds = None,
    schedules: Annotated[
        bool, typer.Option("--schedules/--no-schedules", help="Fire schedules on their cron times.")
    ] = True,
    fast_retries: FastRetries = False,
    transport: TransportOpt = None,
    log_level: LogLevel = None,
) -> None:
    """Run an app forever (several workers may share PostgreSQL queues)."""
    _run_command(
        target,
        forever=True,
        max_seconds=max_seconds,
        schedules=schedules,
        strict=False,
        log_level=log_level,
        fast_retries=fast_retries,
        transport=transport,
        command="worker",
    )


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``worker`` to ``app``."""
    app.command(cls=ApixCommand)(run)
    app.command(cls=ApixCommand)(worker)
