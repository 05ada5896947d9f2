"""``apix db``: schema migrations and retention."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from apix_core.cli._common import (
    ApixCommand,
    arun,
    command_group,
    console,
    escape,
    handle_errors,
    parse_duration,
)
from apix_core.config import Settings

if TYPE_CHECKING:
    from apix_core.store.database import Database

db_cli = command_group(help="Schema migrations (Alembic).")


def _db_urls() -> list[str]:
    settings = Settings.from_env()
    urls = [settings.database_url]
    if settings.queue_url != settings.database_url:
        urls.append(settings.queue_url)
    return urls


async def _each_database(
    action: Callable[[Database], Awaitable[str | None]],
    urls: list[str] | None = None,
) -> list[tuple[str, str | None]]:
    """Run ``action`` on the store and, when it is another database, the queue database."""
    from apix_core.store.database import Database

    timeout = Settings.from_env().db_timeout
    out: list[tuple[str, str | None]] = []
    for url in _db_urls() if urls is None else urls:
        db = Database(url, timeout=timeout)
        try:
            out.append((db.safe_url, await action(db)))
        finally:
            await db.dispose()
    return out


@db_cli.command("upgrade", cls=ApixCommand)
@handle_errors
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations to the store (and to the queue database when it is another one)."""

    async def upgrade(db: Database) -> str | None:
        await db.upgrade(revision)
        return await db.current_revision()

    out = console()
    for url, rev in arun(_each_database(upgrade)):
        out.print(f"[green]upgraded[/] {escape(url)} → {rev}")


@db_cli.command("current", cls=ApixCommand)
@handle_errors
def db_current() -> None:
    """Print the schema revision of the store (and of the queue database)."""
    out = console()
    # A read-only command: a SQLite file that does not exist is reported, never created.
    present: list[str] = []
    for url in _db_urls():
        missing = missing_sqlite_file(url)
        if missing is not None:
            out.print(f"no database at {escape(str(missing))} (`apix db upgrade` creates it)")
        else:
            present.append(url)
    if not present:
        return
    for url, rev in arun(_each_database(lambda db: db.current_revision(), present)):
        out.print(f"{escape(url)}: {rev or '[yellow]none (run `apix db upgrade`)[/]'}")


def missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite ``url`` when it does not exist (else None: it exists, or the
    database is in memory or not SQLite)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return None
    if path.startswith("file:"):
        return None
    return None if Path(path).exists() else Path(path)


@db_cli.command("prune", cls=ApixCommand)
@handle_errors
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
    """Delete expired idempotency records, sent outbox rows, old transitions and errors, and
    replayed dead letters.

    Each database is pruned of what it holds: the store of its metadata, a separate queue
    database (the local transport's, ``.apix/queues.db``) of its replayed dead letters only.
    Live rows are never touched: unsent outbox rows, queued messages, dead letters not yet
    replayed, and idempotency records younger than the safety floor (14 days).
    """
    from dataclasses import replace
    from datetime import timedelta

    from apix_core.store.database import Database
    from apix_core.store.retention import MIN_IDEMPOTENCY_AGE, RetentionPolicy, prune

    settings = Settings.from_env()
    age = timedelta(seconds=parse_duration(older_than))
    store_policy = RetentionPolicy(
        # A redelivery can arrive up to 14 days late (SQS retention): never prune younger claims.
        idempotency=max(age, MIN_IDEMPOTENCY_AGE),
        state_transitions=False if keep_transitions else None,
        processing_errors=False if keep_errors else None,
    )
    # The migrations create every table in either database, so "what it holds" comes from the
    # role of the database, not from its tables: the store's dead-letter table is unused when
    # the queues live elsewhere, and a queue database's store tables are always empty.
    roles: list[tuple[str, str, RetentionPolicy]] = []
    if settings.queue_url == settings.database_url:
        roles.append(("store and queue database", settings.database_url, store_policy))
    else:
        roles.append(
            ("store", settings.database_url, replace(store_policy, replayed_dead_letters=False))
        )
        queue_only = RetentionPolicy(
            idempotency=False, sent_outbox=False, state_transitions=False, processing_errors=False
        )
        roles.append(("queue database", settings.queue_url, queue_only))

    out = console()
    present = []
    for role, url, policy in roles:
        missing = missing_sqlite_file(url)
        if missing is None:
            present.append((role, url, policy))
        else:
            out.print(f"no {role} at {escape(str(missing))}: nothing to prune")

    async def go() -> list[tuple[str, str, dict[str, int] | None]]:
        done: list[tuple[str, str, dict[str, int] | None]] = []
        for role, url, policy in present:
            db = Database(url, timeout=settings.db_timeout)
            try:
                if await db.current_revision() is None:
                    done.append((role, db.safe_url, None))
                    continue
                report = await prune(db, older_than=age, batch_size=batch_size, policy=policy)
                done.append((role, db.safe_url, report.deleted))
            finally:
                await db.dispose()
        return done

    for role, url, deleted in arun(go()):
        if deleted is None:
            out.print(f"{role} {escape(url)} has no apix tables (`apix db upgrade` creates them)")
            continue
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(deleted.items())) or "nothing"
        out.print(f"[green]pruned[/] {role} {escape(url)} — {parts}")


def register(app: typer.Typer) -> None:
    """Add the ``db`` group to ``app``."""
    app.add_typer(db_cli, name="db")
