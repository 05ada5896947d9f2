"""``apix dlq``: dead letters (list, show, replay, delete, purge)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from apix_core.cli._common import (
    ApixCommand,
    AppOpt,
    JsonOpt,
    TransportOpt,
    arun,
    body_json,
    command_group,
    console,
    dead_letter_admin,
    escape,
    fmt_time,
    handle_errors,
    parse_duration,
    print_json,
    transport,
    use_transport,
)
from apix_core.errors import ConfigurationError, UnsupportedOperationError

if TYPE_CHECKING:
    from apix_core.transport.base import DeadLetterAdmin, DeadLetterRecord

dlq_cli = command_group(help="Dead letters: list, show, replay, delete, purge.")

QueueFilter = Annotated[str | None, typer.Option("--queue", "-q", help="Only this queue.")]
ProcessorFilter = Annotated[str | None, typer.Option("--processor", help="Only this processor.")]
TenantFilter = Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant.")]
CodeFilter = Annotated[
    str | None, typer.Option("--code", help="Only this error code (e.g. VALIDATION_ERROR).")
]
SinceFilter = Annotated[
    str | None,
    typer.Option("--since", help="Only newer ones: a duration (1h, 7d) or an ISO 8601 time."),
]


@dataclass(frozen=True)
class Filters:
    """The dead-letter filters of ``list`` and ``purge``."""

    queue: str | None = None
    processor: str | None = None
    tenant_id: str | None = None
    error_code: str | None = None
    since: datetime | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in vars(self).values())

    def kwargs(self) -> dict[str, Any]:
        return {
            "processor": self.processor,
            "tenant_id": self.tenant_id,
            "error_code": self.error_code,
            "since": self.since,
        }

    def document(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "processor": self.processor,
            "tenant": self.tenant_id,
            "code": self.error_code,
            "since": self.since.isoformat() if self.since else None,
        }


def parse_since(text: str | None) -> datetime | None:
    """``--since``: a duration back from now (``1h``, ``7d``) or an ISO 8601 time (UTC when it
    has no offset)."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        try:
            return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
        except ConfigurationError:
            raise ConfigurationError(
                f"--since {text!r} is neither a duration (1h, 7d) nor an ISO 8601 time "
                "(2024-05-01T12:00:00Z)"
            ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _filters(
    queue: str | None,
    processor: str | None,
    tenant: str | None,
    code: str | None,
    since: str | None,
) -> Filters:
    return Filters(queue, processor, tenant, code, parse_since(since))


def _filtering(admin: DeadLetterAdmin, filters: Filters) -> Any:
    """``admin`` when it can filter and count (the local transport), else a clear error when
    filters beyond ``--queue`` were asked for."""
    if hasattr(admin, "count_dead_letters"):
        return admin
    extra = {k: v for k, v in filters.kwargs().items() if v is not None}
    if extra:
        names = ", ".join(f"--{k.replace('_id', '').replace('error_', '')}" for k in extra)
        raise UnsupportedOperationError(f"this transport's dead letters cannot filter by {names}")
    return None


def _record_doc(r: DeadLetterRecord, full: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": r.id,
        "queue": r.queue,
        "message_id": r.message_id,
        "processor": r.processor,
        "tenant_id": r.tenant_id,
        "error_code": r.error_code,
        "error_category": r.error_category,
        "error_message": r.error_message,
        "attempts": r.attempts,
        "created_at": r.created_at,
        "replayed_at": r.replayed_at,
    }
    if full:
        doc["attributes"] = dict(r.attributes)
        doc["body"] = body_json(r.body)
    return doc


@dlq_cli.command("list", cls=ApixCommand)
@handle_errors
def dlq_list(
    queue: QueueFilter = None,
    processor: ProcessorFilter = None,
    tenant: TenantFilter = None,
    code: CodeFilter = None,
    since: SinceFilter = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 50,
    show_all: Annotated[bool, typer.Option("--all", help="Every match (no --limit).")] = False,
    app_path: AppOpt = None,
    transport_url: TransportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List dead letters, newest first ("50 of N" when more match)."""
    use_transport(transport_url)
    filters = _filters(queue, processor, tenant, code, since)
    wanted = None if show_all else limit

    async def go() -> tuple[list[DeadLetterRecord], int | None]:
        async with transport(app_path) as raw:
            admin = dead_letter_admin(raw)
            rich = _filtering(admin, filters)
            if rich is None:
                found = await admin.list_dead_letters(filters.queue, limit=wanted or 1_000_000)
                return found, None
            found = await rich.list_dead_letters(filters.queue, limit=wanted, **filters.kwargs())
            total = await rich.count_dead_letters(filters.queue, **filters.kwargs())
            return found, total

    records, total = arun(go())
    if as_json:
        print_json(
            {
                "total": total,
                "shown": len(records),
                "filters": filters.document(),
                "dead_letters": [_record_doc(r) for r in records],
            }
        )
        return
    from rich.table import Table

    counted = f"{len(records)} of {total}" if total is not None else str(len(records))
    table = Table(title=f"dead letters ({counted})", title_justify="left")
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
    out = console()
    out.print(table)
    if total is not None and total > len(records):
        out.print(
            f"showing {len(records)} of {total}: --limit N or --all for more, "
            "--queue/--processor/--tenant/--code/--since to narrow"
        )


@dlq_cli.command("show", cls=ApixCommand)
@handle_errors
def dlq_show(
    dead_letter_id: Annotated[str, typer.Argument(help="Dead-letter id (from `apix dlq list`).")],
    app_path: AppOpt = None,
    transport_url: TransportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one dead letter: its error, attempts and the original message."""
    use_transport(transport_url)

    async def go() -> DeadLetterRecord:
        async with transport(app_path) as raw:
            opened = dead_letter_admin(raw)
            return await opened.get_dead_letter(dead_letter_id)

    r = arun(go())
    if as_json:
        print_json(_record_doc(r, full=True))
        return
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
    queue: QueueFilter = None,
    processor: ProcessorFilter = None,
    tenant: TenantFilter = None,
    code: CodeFilter = None,
    since: SinceFilter = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replay a dead letter that was replayed already.")
    ] = False,
    app_path: AppOpt = None,
    transport_url: TransportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send dead letters back to their queue (run the app again to process them).

    With ``--all``, the filters of ``list`` and ``purge`` (``--queue``, ``--processor``,
    ``--tenant``, ``--code``, ``--since``) narrow what is replayed."""
    use_transport(transport_url)
    if replay_all == (dead_letter_id is not None):
        raise ConfigurationError("give a dead-letter id, or --all (not both)")
    filters = _filters(queue, processor, tenant, code, since)
    if filters.given and not replay_all:
        given = [f"--{k}" for k, v in filters.document().items() if v is not None]
        raise ConfigurationError(
            f"{', '.join(given)} only go(es) with --all: a dead-letter id names one already"
        )

    async def go() -> list[tuple[str, str, str]]:
        async with transport(app_path) as raw:
            opened = dead_letter_admin(raw)
            if dead_letter_id is not None:
                record = await opened.get_dead_letter(dead_letter_id)
                if record.replayed_at is not None and not force:
                    raise ConfigurationError(
                        f"dead letter {record.id} was replayed already, at "
                        f"{fmt_time(record.replayed_at)} UTC: pass --force to replay it again"
                    )
                await opened.replay_dead_letter(dead_letter_id)
                return [(record.id, record.queue, record.message_id)]
            done: list[tuple[str, str, str]] = []
            limit = 1000
            rich = _filtering(opened, filters)
            if rich is not None:
                # Replayed records stay listed, so paging by offset reaches the older ones.
                offset = 0
                while True:
                    records = await rich.list_dead_letters(
                        filters.queue, limit=limit, offset=offset, **filters.kwargs()
                    )
                    for r in records:
                        if r.replayed_at is None:
                            await rich.replay_dead_letter(r.id)
                            done.append((r.id, r.queue, r.message_id))
                    if len(records) < limit:
                        return done
                    offset += limit
            # Page until no unreplayed record is left; replayed ones are skipped, not re-sent.
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
    if as_json:
        print_json({"replayed": [{"id": i, "queue": q, "message_id": m} for i, q, m in replayed]})
        return
    out = console()
    for dl_id, q, mid in replayed:
        out.print(f"replayed dead letter {escape(dl_id)}: message {escape(mid)} → {escape(q)}")
    out.print(f"[bold]{len(replayed)}[/] dead letter(s) replayed")


def _deleter(admin: DeadLetterAdmin, what: str) -> Any:
    if not hasattr(admin, "delete_dead_letter"):
        raise UnsupportedOperationError(f"this transport cannot {what} dead letters")
    return admin


@dlq_cli.command("delete", cls=ApixCommand)
@handle_errors
def dlq_delete(
    dead_letter_id: Annotated[str, typer.Argument(help="Dead-letter id (from `apix dlq list`).")],
    app_path: AppOpt = None,
    transport_url: TransportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete one dead letter (its message is gone for good)."""
    use_transport(transport_url)

    async def go() -> None:
        async with transport(app_path) as raw:
            await _deleter(dead_letter_admin(raw), "delete").delete_dead_letter(dead_letter_id)

    arun(go())
    if as_json:
        print_json({"deleted": [dead_letter_id]})
        return
    console().print(f"deleted dead letter {escape(dead_letter_id)}")


@dlq_cli.command("purge", cls=ApixCommand)
@handle_errors
def dlq_purge(
    queue: QueueFilter = None,
    processor: ProcessorFilter = None,
    tenant: TenantFilter = None,
    code: CodeFilter = None,
    since: SinceFilter = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    app_path: AppOpt = None,
    transport_url: TransportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete every dead letter matching the filters (all of them without filters)."""
    use_transport(transport_url)
    filters = _filters(queue, processor, tenant, code, since)

    async def count() -> int:
        async with transport(app_path) as raw:
            admin = _deleter(dead_letter_admin(raw), "purge")
            return int(await admin.count_dead_letters(filters.queue, **filters.kwargs()))

    async def purge() -> int:
        async with transport(app_path) as raw:
            admin = _deleter(dead_letter_admin(raw), "purge")
            return int(await admin.purge_dead_letters(filters.queue, **filters.kwargs()))

    if not yes:
        matching = arun(count())
        scope = "matching the filters" if filters.given else "(every dead letter)"
        typer.confirm(
            f"Delete {matching} dead letter(s) {scope}? This cannot be undone", abort=True
        )
    purged = arun(purge())
    if as_json:
        print_json({"purged": purged, "filters": filters.document()})
        return
    console().print(f"purged [bold]{purged}[/] dead letter(s)")


def register(app: typer.Typer) -> None:
    """Add the ``dlq`` group to ``app``."""
    app.add_typer(dlq_cli, name="dlq")
