"""``apix dlq``: dead letters (list, show, replay)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from apix_core.cli._common import (
    ApixCommand,
    AppOpt,
    arun,
    command_group,
    console,
    dead_letter_admin,
    escape,
    fmt_time,
    handle_errors,
    transport,
)
from apix_core.errors import ConfigurationError

if TYPE_CHECKING:
    from apix_core.transport.base import DeadLetterRecord

dlq_cli = command_group(help="Dead letters: list, show, replay.")


@dlq_cli.command("list", cls=ApixCommand)
@handle_errors
def dlq_list(
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only this queue.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 50,
    app_path: AppOpt = None,
) -> None:
    """List dead letters, newest first."""
    from rich.table import Table

    async def go() -> list[DeadLetterRecord]:
        async with transport(app_path) as raw:
            opened = dead_letter_admin(raw)
            return await opened.list_dead_letters(queue, limit=limit)

    records = arun(go())
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
            fmt_time(r.created_at),
            fmt_time(r.replayed_at),
            escape(r.error_message.splitlines()[0] if r.error_message else ""),
        )
    console().print(table)


@dlq_cli.command("show", cls=ApixCommand)
@handle_errors
def dlq_show(
    dead_letter_id: Annotated[str, typer.Argument(help="Dead-letter id (from `apix dlq list`).")],
    app_path: AppOpt = None,
) -> None:
    """Show one dead letter: its error, attempts and the original message."""

    async def go() -> DeadLetterRecord:
        async with transport(app_path) as raw:
            opened = dead_letter_admin(raw)
            return await opened.get_dead_letter(dead_letter_id)

    r = arun(go())
    out = console()
    out.print(f"[bold]dead letter[/] {escape(r.id)}")
    for label, value in (
        ("queue", r.queue),
        ("message id", r.message_id),
        ("processor", r.processor or "-"),
        ("tenant", r.tenant_id or "-"),
        ("error code", r.error_code),
        ("category", r.error_category),
        ("attempts", r.attempts),
        ("created", fmt_time(r.created_at)),
        ("replayed", fmt_time(r.replayed_at)),
    ):
        out.print(f"  {label:<11} {escape(str(value))}")
    out.print("[bold]error[/]")
    out.print(escape(r.error_message), soft_wrap=True)
    out.print("[bold]message[/]")
    try:
        body = json.dumps(json.loads(r.body), indent=2, sort_keys=True)
    except ValueError:
        body = r.body
    out.print(escape(body), soft_wrap=True)


@dlq_cli.command("replay", cls=ApixCommand)
@handle_errors
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
        async with transport(app_path) as raw:
            opened = dead_letter_admin(raw)
            if dead_letter_id is not None:
                record = await opened.get_dead_letter(dead_letter_id)
                await opened.replay_dead_letter(dead_letter_id)
                return [(record.id, record.queue, record.message_id)]
            done: list[tuple[str, str, str]] = []
            # Page until no unreplayed record is left; replayed ones are skipped, not re-sent.
            limit = 1000
            records = await opened.list_dead_letters(queue, limit=limit)
            while True:
                pending = [r for r in records if r.replayed_at is None]
                for r in pending:
                    await opened.replay_dead_letter(r.id)
                    done.append((r.id, r.queue, r.message_id))
                if len(records) < limit or not pending:
                    return done
                records = await opened.list_dead_letters(queue, limit=limit)

    replayed = arun(go())
    out = console()
    for dl_id, q, mid in replayed:
        out.print(f"replayed dead letter {escape(dl_id)}: message {escape(mid)} → {escape(q)}")
    out.print(f"[bold]{len(replayed)}[/] dead letter(s) replayed")


def register(app: typer.Typer) -> None:
    """Add the ``dlq`` group to ``app``."""
    app.add_typer(dlq_cli, name="dlq")
