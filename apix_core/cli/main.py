"""``apix``: run apps locally, send messages, inspect entities, dead letters and errors.

Every command works against the configured store and local transport (``APIX_DATABASE_URL``,
``APIX_QUEUE_URL``; by default SQLite files under ``./.apix/``). apix errors print a red message
and exit with code 2, without a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from apix_core.config import Settings
from apix_core.constants import TENANT_ATTRIBUTE, TENANT_ID_ENV
from apix_core.exceptions import ApixError, ConfigurationError, MalformedMessageError
from apix_core.store.repositories import ErrorSummary, Store

if TYPE_CHECKING:
    from apix_core.app import App
    from apix_core.runtime import RunStats
    from apix_core.store.database import Database
    from apix_core.transport.base import DeadLetterRecord

T = TypeVar("T")

cli = typer.Typer(
    name="apix",
    help="apix-core: run pipelines locally and inspect their store, queues and dead letters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
entities_cli = typer.Typer(
    help="Entity metadata (versions and state transitions).", no_args_is_help=True
)
dlq_cli = typer.Typer(help="Dead letters: list, show, replay.", no_args_is_help=True)
db_cli = typer.Typer(help="Schema migrations (Alembic).", no_args_is_help=True)
cli.add_typer(entities_cli, name="entities")
cli.add_typer(dlq_cli, name="dlq")
cli.add_typer(db_cli, name="db")

#: Exit code of every apix error (and of usage errors, as click does).
EXIT_ERROR = 2


# -- plumbing ---------------------------------------------------------------------------------
def _console(stderr: bool = False) -> Console:
    # Resolved per call so the console writes to the current stdout (CliRunner swaps it); wide
    # when not a terminal so ids and error codes are never wrapped in logs and pipes.
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=max(console.width, 160))
    return console


def _fail(message: str) -> typer.Exit:
    _console(stderr=True).print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(EXIT_ERROR)


def _handle_errors(func: Callable[..., T]) -> Callable[..., T]:
    """apix errors become a red one-line message and exit code 2, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return func(*args, **kwargs)
        except ApixError as exc:
            raise _fail(str(exc)) from None

    return wrapper


def _arun(coro: Coroutine[Any, Any, T]) -> T:
    from apix_core.runtime.loop import run

    return run(coro)


class _StderrProxy:
    """Log to whatever ``sys.stderr`` is now, so rich's Live can redirect log lines above it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _configure_logging(level: str | None) -> None:
    import os

    from apix_core.constants import LOG_FORMAT_ENV, LOG_LEVEL_ENV
    from apix_core.observability import configure_logging

    # A human runs the CLI: text logs and WARNING unless the environment says otherwise.
    configure_logging(
        level=(level or os.environ.get(LOG_LEVEL_ENV) or "WARNING").upper(),
        fmt=os.environ.get(LOG_FORMAT_ENV) or "text",
        stream=_StderrProxy(),
    )


def _tenant(tenant: str | None) -> str:
    if tenant:
        return tenant
    found = Settings.from_env().tenant_id
    if not found:
        raise ConfigurationError(f"no tenant: pass --tenant or set {TENANT_ID_ENV}")
    return found


async def _open_database(url: str, settings: Settings) -> Database:
    """A database with the schema in place (migrated when auto-migrate is on, else checked)."""
    from apix_core.store.database import Database

    db = Database(url, timeout=settings.db_timeout)
    try:
        if settings.auto_migrate:
            await db.upgrade()
        elif await db.current_revision() is None:
            raise ConfigurationError(
                f"the database {db.safe_url} has no apix schema: run `apix db upgrade`"
            )
    except BaseException:
        await db.dispose()
        raise
    return db


@asynccontextmanager
async def _transport(app_path: str | None) -> AsyncIterator[Any]:
    """The app's transport (``--app``), else a local transport on ``APIX_QUEUE_URL``."""
    if app_path:
        from apix_core.cli.loader import load_app

        app = load_app(app_path)
        await app.start()
        try:
            assert app.transport is not None
            yield app.transport
        finally:
            await app.close()
        return
    from apix_core.transport.local import LocalTransport

    settings = Settings.from_env()
    db = await _open_database(settings.queue_url, settings)
    transport = LocalTransport(
        db,
        visibility_timeout=settings.visibility_timeout,
        max_message_bytes=settings.local_max_message_bytes,
        owns_database=True,
    )
    try:
        yield transport
    finally:
        await transport.close()


def _fmt_time(value: datetime | None) -> str:
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``24h``, ``7d``, ``2w`` → seconds."""
    match = _DURATION.match(text.lower())
    if not match:
        raise ConfigurationError(f"{text!r} is not a duration (examples: 30s, 15m, 24h, 7d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ConfigurationError(f"duration {text!r} must be positive")
    return seconds


def _json_object(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise MalformedMessageError(f"payload is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedMessageError(
            f"payload must be a JSON object ({{...}}), not {type(obj).__name__}"
        )
    return obj


# -- version ----------------------------------------------------------------------------------
def _version(value: bool) -> None:
    if value:
        from apix_core import __version__

        typer.echo(f"apix-core {__version__}")
        raise typer.Exit()


@cli.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """apix-core command line."""


# -- run / worker -----------------------------------------------------------------------------
def _progress_table(app: App, stats: RunStats) -> Table:
    table = Table(title=f"apix run: {app.name}", title_justify="left")
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


def _summary(stats: RunStats, elapsed: float, drained: bool) -> str:
    duplicates = sum(s.duplicates for s in stats.queues.values())
    retried = sum(s.retried for s in stats.queues.values())
    left = sum(d.total for d in stats.depths.values())
    dead = stats.dead_lettered
    dead_txt = f"[yellow]{dead} dead-lettered[/]" if dead else "0 dead-lettered"
    state = "drained" if drained else f"stopped with {left} message(s) still queued"
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
) -> tuple[RunStats, float]:
    from rich.live import Live

    from apix_core.runtime import LocalRunner

    live: Live | None = None
    if console.is_terminal:
        live = Live(console=console, refresh_per_second=8, redirect_stderr=True, transient=False)

    def progress(stats: RunStats) -> None:
        if live is not None:
            live.update(_progress_table(app, stats))

    runner = LocalRunner(
        app,
        forever=forever,
        fire_schedules=schedules,
        on_progress=progress,
        max_seconds=max_seconds,
    )
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    # Ctrl-C / SIGTERM stop the runner gracefully: in-flight batches settle before exit.
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, runner.stop)
            installed.append(sig)
    started = time.monotonic()
    try:
        if live is not None:
            with live:
                stats = await runner.run()
        else:
            stats = await runner.run()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await app.close()
    return stats, time.monotonic() - started


def _run_command(
    target: str,
    *,
    forever: bool,
    max_seconds: float | None,
    schedules: bool,
    strict: bool,
    log_level: str | None,
) -> None:
    from apix_core.cli.loader import load_app

    _configure_logging(log_level)
    app = load_app(target)
    console = _console()
    stats, elapsed = _arun(
        _run_app(
            app, forever=forever, max_seconds=max_seconds, schedules=schedules, console=console
        )
    )
    drained = all(d.total == 0 for d in stats.depths.values())
    if not console.is_terminal:
        console.print(_progress_table(app, stats))
    console.print(_summary(stats, elapsed, drained))
    if stats.dead_lettered:
        console.print(
            f"[yellow]{stats.dead_lettered} message(s) dead-lettered: "
            "inspect with `apix dlq list`, replay with `apix dlq replay`[/]"
        )
    if strict and (stats.dead_lettered or not drained):
        raise typer.Exit(1)


AppTarget = Annotated[
    str, typer.Argument(help="Python file defining the App: path/to/app.py[:attr]")
]
LogLevel = Annotated[
    str | None,
    typer.Option("--log-level", help="apix log level (default: APIX_LOG_LEVEL or WARNING)."),
]


@cli.command()
@_handle_errors
def run(
    target: AppTarget,
    forever: Annotated[
        bool, typer.Option("--forever", help="Keep running; schedules fire on their cron times.")
    ] = False,
    max_seconds: Annotated[
        float | None, typer.Option("--max-seconds", min=0.0, help="Stop after this many seconds.")
    ] = None,
    schedules: Annotated[
        bool, typer.Option("--schedules/--no-schedules", help="Fire schedule processors.")
    ] = True,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Exit 1 if anything was dead-lettered or left queued."),
    ] = False,
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
    )


@cli.command()
@_handle_errors
def worker(
    target: AppTarget,
    max_seconds: Annotated[
        float | None, typer.Option("--max-seconds", min=0.0, help="Stop after this many seconds.")
    ] = None,
    schedules: Annotated[
        bool, typer.Option("--schedules/--no-schedules", help="Fire schedules on their cron times.")
    ] = True,
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
    )


# -- send -------------------------------------------------------------------------------------
async def _send_bare(
    queue: str, payload: dict[str, Any], tenant: str, message_id: str | None
) -> str:
    from apix_core.message import Message
    from apix_core.transport.base import OutgoingMessage

    msg = Message(message_id=message_id or str(uuid.uuid4()), tenant_id=tenant, payload=payload)
    async with _transport(None) as transport:
        body = msg.to_json()
        transport.check_size(queue, body)
        await transport.send(
            queue, OutgoingMessage(msg.message_id, body, 0.0, {TENANT_ATTRIBUTE: tenant})
        )
    return msg.message_id


async def _send_app(
    app_path: str, queue: str, payload: dict[str, Any], tenant: str | None, message_id: str | None
) -> str:
    from apix_core.cli.loader import load_app

    app = load_app(app_path)
    try:
        return await app.send(queue, payload, tenant_id=tenant, message_id=message_id)
    finally:
        await app.close()


@cli.command()
@_handle_errors
def send(
    queue: Annotated[str, typer.Argument(help="Queue name.")],
    payload: Annotated[str, typer.Argument(help="JSON object, or - to read it from stdin.")],
    tenant: Annotated[
        str | None, typer.Option("--tenant", "-t", help=f"Tenant (default: {TENANT_ID_ENV}).")
    ] = None,
    app_path: Annotated[
        str | None,
        typer.Option("--app", help="Send through this app (its transport and settings)."),
    ] = None,
    message_id: Annotated[
        str | None, typer.Option("--message-id", help="Message id (the idempotency key).")
    ] = None,
) -> None:
    """Put a message (an apix envelope) on a queue."""
    data = _json_object(sys.stdin.read() if payload == "-" else payload)
    if app_path:
        sent = _arun(_send_app(app_path, queue, data, tenant, message_id))
    else:
        sent = _arun(_send_bare(queue, data, _tenant(tenant), message_id))
    _console().print(f"sent [bold]{sent}[/] to {escape(queue)}")


# -- entities ---------------------------------------------------------------------------------
TenantOpt = Annotated[
    str | None, typer.Option("--tenant", "-t", help=f"Tenant (default: {TENANT_ID_ENV}).")
]


@asynccontextmanager
async def _store() -> AsyncIterator[Store]:

    settings = Settings.from_env()
    db = await _open_database(settings.database_url, settings)
    try:
        yield Store(db)
    finally:
        await db.dispose()


@entities_cli.command("list")
@_handle_errors
def entities_list(
    tenant: TenantOpt = None,
    canonical_type: Annotated[
        str | None, typer.Option("--type", help="Only this canonical type.")
    ] = None,
    state: Annotated[
        str | None, typer.Option("--state", help="Only entities in this state.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 50,
) -> None:
    """List entities, most recently updated first."""
    from apix_core.tenancy import tenant_context

    tenant_id = _tenant(tenant)

    async def go() -> tuple[list[Any], int]:
        async with _store() as store:
            with tenant_context(tenant_id):
                rows = await store.entities.list(
                    canonical_type=canonical_type, state=state, limit=limit
                )
                return rows, await store.entities.count()

    rows, total = _arun(go())
    table = Table(title=f"entities of {tenant_id} ({len(rows)} of {total})", title_justify="left")
    for col in ("id", "type", "source", "external id", "version", "state", "updated"):
        table.add_column(col, no_wrap=col in ("id", "updated"))
    for e in rows:
        table.add_row(
            e.id,
            e.canonical_type,
            e.source,
            escape(e.external_id),
            str(e.version),
            e.state,
            _fmt_time(e.updated_at),
        )
    _console().print(table)


@entities_cli.command("show")
@_handle_errors
def entities_show(
    entity_id: Annotated[str, typer.Argument(help="Entity id (from `apix entities list`).")],
    tenant: TenantOpt = None,
) -> None:
    """Show an entity's metadata, versions and state transitions."""
    from apix_core.tenancy import tenant_context

    tenant_id = _tenant(tenant)

    async def go() -> tuple[Any, list[Any], list[Any]]:
        async with _store() as store:
            with tenant_context(tenant_id):
                entity = await store.entities.get(entity_id)
                versions = await store.entities.versions(entity_id)
                transitions = await store.states.transitions(entity_id)
                return entity, versions, transitions

    entity, versions, transitions = _arun(go())
    console = _console()
    console.print(f"[bold]entity[/] {entity.id}")
    for label, value in (
        ("tenant", entity.tenant_id),
        ("type", entity.canonical_type),
        ("source", entity.source),
        ("external id", entity.external_id),
        ("version", entity.version),
        ("state", entity.state),
        ("content hash", entity.content_hash),
        ("attributes", json.dumps(entity.attributes, sort_keys=True, default=str)),
        ("created", _fmt_time(entity.created_at)),
        ("updated", _fmt_time(entity.updated_at)),
    ):
        console.print(f"  {label:<13} {escape(str(value))}")
    vt = Table(title="versions", title_justify="left")
    for col in ("version", "content hash", "processor", "message id", "created"):
        vt.add_column(col, no_wrap=True)
    for v in versions:
        vt.add_row(
            str(v.version),
            v.content_hash[:16],
            v.processor or "-",
            v.message_id or "-",
            _fmt_time(v.created_at),
        )
    console.print(vt)
    tt = Table(title="state transitions", title_justify="left")
    for col in ("from", "to", "reason", "processor", "message id", "at"):
        tt.add_column(col, no_wrap=col in ("message id", "at"))
    for t in transitions:
        tt.add_row(
            t.from_state or "-",
            t.to_state,
            escape(t.reason or "-"),
            t.processor or "-",
            t.message_id or "-",
            _fmt_time(t.created_at),
        )
    console.print(tt)


# -- dead letters -----------------------------------------------------------------------------
AppOpt = Annotated[
    str | None,
    typer.Option(
        "--app", help="Use this app's transport (default: local queues on APIX_QUEUE_URL)."
    ),
]


@dlq_cli.command("list")
@_handle_errors
def dlq_list(
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only this queue.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 50,
    app_path: AppOpt = None,
) -> None:
    """List dead letters, newest first."""

    async def go() -> list[DeadLetterRecord]:
        async with _transport(app_path) as transport:
            records: list[DeadLetterRecord] = await transport.list_dead_letters(queue, limit=limit)
            return records

    records = _arun(go())
    table = Table(title=f"dead letters ({len(records)})", title_justify="left")
    for col in ("id", "queue", "processor", "tenant", "error", "attempts", "at", "replayed"):
        table.add_column(col, no_wrap=col in ("id", "error", "at"))
    table.add_column("message", overflow="ellipsis", max_width=60)
    for r in records:
        table.add_row(
            r.id,
            escape(r.queue),
            r.processor or "-",
            r.tenant_id or "-",
            r.error_code,
            str(r.attempts),
            _fmt_time(r.created_at),
            _fmt_time(r.replayed_at),
            escape(r.error_message.splitlines()[0] if r.error_message else ""),
        )
    _console().print(table)


@dlq_cli.command("show")
@_handle_errors
def dlq_show(
    dead_letter_id: Annotated[str, typer.Argument(help="Dead-letter id (from `apix dlq list`).")],
    app_path: AppOpt = None,
) -> None:
    """Show one dead letter: its error, attempts and the original message."""

    async def go() -> DeadLetterRecord:
        async with _transport(app_path) as transport:
            record: DeadLetterRecord = await transport.get_dead_letter(dead_letter_id)
            return record

    r = _arun(go())
    console = _console()
    console.print(f"[bold]dead letter[/] {escape(r.id)}")
    for label, value in (
        ("queue", r.queue),
        ("message id", r.message_id),
        ("processor", r.processor or "-"),
        ("tenant", r.tenant_id or "-"),
        ("error code", r.error_code),
        ("category", r.error_category),
        ("attempts", r.attempts),
        ("created", _fmt_time(r.created_at)),
        ("replayed", _fmt_time(r.replayed_at)),
    ):
        console.print(f"  {label:<11} {escape(str(value))}")
    console.print("[bold]error[/]")
    console.print(escape(r.error_message), soft_wrap=True)
    console.print("[bold]message[/]")
    try:
        body = json.dumps(json.loads(r.body), indent=2, sort_keys=True)
    except ValueError:
        body = r.body
    console.print(escape(body), soft_wrap=True)


@dlq_cli.command("replay")
@_handle_errors
def dlq_replay(
    dead_letter_id: Annotated[
        str | None, typer.Argument(help="Dead-letter id; omit with --all.")
    ] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Replay every dead letter not replayed yet.")
    ] = False,
    queue: Annotated[
        str | None, typer.Option("--queue", "-q", help="With --all: only this queue.")
    ] = None,
    app_path: AppOpt = None,
) -> None:
    """Send dead letters back to their queue (run the app again to process them)."""
    if replay_all == (dead_letter_id is not None):
        raise ConfigurationError("give a dead-letter id, or --all (not both)")
    if queue and not replay_all:
        raise ConfigurationError("--queue only goes with --all")

    async def go() -> list[tuple[str, str, str]]:
        async with _transport(app_path) as transport:
            if dead_letter_id is not None:
                record = await transport.get_dead_letter(dead_letter_id)
                await transport.replay_dead_letter(dead_letter_id)
                return [(record.id, record.queue, record.message_id)]
            done: list[tuple[str, str, str]] = []
            # Page until no unreplayed record is left; replayed ones are skipped, not re-sent.
            limit = 1000
            records = await transport.list_dead_letters(queue, limit=limit)
            while True:
                pending = [r for r in records if r.replayed_at is None]
                for r in pending:
                    await transport.replay_dead_letter(r.id)
                    done.append((r.id, r.queue, r.message_id))
                if len(records) < limit or not pending:
                    return done
                records = await transport.list_dead_letters(queue, limit=limit)

    replayed = _arun(go())
    console = _console()
    for dl_id, q, mid in replayed:
        console.print(f"replayed dead letter {escape(dl_id)}: message {escape(mid)} → {escape(q)}")
    console.print(f"[bold]{len(replayed)}[/] dead letter(s) replayed")


# -- graph ------------------------------------------------------------------------------------
@cli.command()
@_handle_errors
def graph(target: AppTarget) -> None:
    """Print the app's topology as a Mermaid flowchart."""
    from apix_core.cli.loader import load_app

    # Plain echo: Mermaid's [brackets] would be taken for rich markup.
    typer.echo(load_app(target).mermaid())


# -- db ---------------------------------------------------------------------------------------
def _db_urls() -> list[str]:
    settings = Settings.from_env()
    urls = [settings.database_url]
    if settings.queue_url != settings.database_url:
        urls.append(settings.queue_url)
    return urls


async def _each_database(
    action: Callable[[Database], Awaitable[str | None]],
) -> list[tuple[str, str | None]]:
    """Run ``action`` on the store and, when it is another database, the queue database."""
    from apix_core.store.database import Database

    timeout = Settings.from_env().db_timeout
    out: list[tuple[str, str | None]] = []
    for url in _db_urls():
        db = Database(url, timeout=timeout)
        try:
            out.append((db.safe_url, await action(db)))
        finally:
            await db.dispose()
    return out


@db_cli.command("upgrade")
@_handle_errors
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations to the store (and to the queue database when it is another one)."""

    async def upgrade(db: Database) -> str | None:
        await db.upgrade(revision)
        return await db.current_revision()

    console = _console()
    for url, rev in _arun(_each_database(upgrade)):
        console.print(f"[green]upgraded[/] {escape(url)} → {rev}")


@db_cli.command("current")
@_handle_errors
def db_current() -> None:
    """Print the schema revision of the store (and of the queue database)."""
    console = _console()
    for url, rev in _arun(_each_database(lambda db: db.current_revision())):
        console.print(f"{escape(url)}: {rev or '[yellow]none (run `apix db upgrade`)[/]'}")


@db_cli.command("prune")
@_handle_errors
def db_prune(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age of metadata to delete (30d, 12w).")
    ] = "30d",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per transaction.")] = 1000,
    keep_transitions: Annotated[
        bool, typer.Option("--keep-transitions", help="Keep every state transition.")
    ] = False,
    keep_errors: Annotated[
        bool, typer.Option("--keep-errors", help="Keep every processing error.")
    ] = False,
) -> None:
    """Delete expired idempotency records, sent outbox rows, old transitions and errors.

    Live rows are never touched: unsent outbox rows, dead letters not yet replayed, and
    idempotency records younger than the safety floor (14 days).
    """
    from datetime import timedelta

    from apix_core.store.database import Database
    from apix_core.store.retention import MIN_IDEMPOTENCY_AGE, RetentionPolicy, prune

    settings = Settings.from_env()
    age = timedelta(seconds=parse_duration(older_than))
    policy = RetentionPolicy(
        # A redelivery can arrive up to 14 days late (SQS retention): never prune younger claims.
        idempotency=max(age, MIN_IDEMPOTENCY_AGE),
        state_transitions=False if keep_transitions else None,
        processing_errors=False if keep_errors else None,
    )

    async def go() -> list[tuple[str, dict[str, int]]]:
        out: list[tuple[str, dict[str, int]]] = []
        for url in _db_urls():
            db = Database(url, timeout=settings.db_timeout)
            try:
                report = await prune(db, older_than=age, batch_size=batch_size, policy=policy)
                out.append((db.safe_url, report.deleted))
            finally:
                await db.dispose()
        return out

    console = _console()
    for url, deleted in _arun(go()):
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(deleted.items())) or "nothing"
        console.print(f"[green]pruned[/] {escape(url)} — {parts}")


# -- errors -----------------------------------------------------------------------------------
@cli.command()
@_handle_errors
def errors(
    tenant: TenantOpt = None,
    since: Annotated[str, typer.Option("--since", help="How far back (30m, 24h, 7d).")] = "24h",
    window: Annotated[
        str, typer.Option("--window", help="Aggregation window (5m, 1h, 1d).")
    ] = "1h",
) -> None:
    """Processing errors aggregated by time window, processor and error code."""
    from apix_core.tenancy import tenant_context

    tenant_id = _tenant(tenant)
    since_dt = datetime.now(UTC) - timedelta(seconds=parse_duration(since))
    window_s = max(1, int(parse_duration(window)))

    async def go() -> list[ErrorSummary]:
        async with _store() as store:
            with tenant_context(tenant_id):
                return await store.errors.summarize(since=since_dt, window_seconds=window_s)

    rows = _arun(go())
    table = Table(
        title=f"processing errors of {tenant_id} since {_fmt_time(since_dt)} (window {window})",
        title_justify="left",
    )
    for col in ("window start", "processor", "error", "category"):
        table.add_column(col, no_wrap=True)
    table.add_column("count", justify="right")
    table.add_column("dead-lettered", justify="right")
    table.add_column("last message", overflow="ellipsis", max_width=70)
    for r in rows:
        table.add_row(
            _fmt_time(r.window_start),
            r.processor,
            r.error_code,
            r.category,
            str(r.count),
            f"[yellow]{r.final}[/]" if r.final else "0",
            escape(r.last_message.splitlines()[0] if r.last_message else ""),
        )
    console = _console()
    console.print(table)
    total = sum(r.count for r in rows)
    console.print(f"{total} error(s) in {len(rows)} group(s)")


def main() -> None:
    """Console-script entry point (``apix``)."""
    cli()


if __name__ == "__main__":
    main()
