"""``apix queues``: queue depths, a look at the oldest messages, purge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Protocol, runtime_checkable

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
    escape,
    fmt_time,
    handle_errors,
    iso_time,
    print_json,
    queue_admin,
    transport,
    use_transport,
)
from apix_core.constants import TENANT_ATTRIBUTE
from apix_core.errors import UnsupportedOperationError

if TYPE_CHECKING:
    from apix_core.app import App
    from apix_core.transport.base import Producer
    from apix_core.transport.local import QueuedMessage

queues_cli = command_group(help="Queues: depth per queue, peek at messages, purge.")


@runtime_checkable
class QueueInspector(Protocol):
    """What ``peek`` and ``purge`` need beyond :class:`QueueAdmin` (the local transport)."""

    async def peek(self, queue: str, limit: int = 10) -> list[QueuedMessage]: ...

    async def purge(self, queue: str) -> int: ...


def _inspector(transport: Producer) -> QueueInspector:
    if not isinstance(transport, QueueInspector):
        raise UnsupportedOperationError(
            f"the {transport.name!r} transport cannot peek at or purge its queues "
            "(use the queue service's own console)"
        )
    return transport


@asynccontextmanager
async def _opened(app_path: str | None) -> AsyncIterator[tuple[Producer, App | None]]:
    """The transport, and the app when ``--app`` names one (to tell who consumes a queue)."""
    if app_path:
        from apix_core.cli.loader import load_app

        app = load_app(app_path)
        await app.start()
        try:
            assert app.transport is not None
            yield app.transport, app
        finally:
            await app.close()
        return
    async with transport(None) as opened:
        yield opened, None


@queues_cli.command("list", cls=ApixCommand)
@handle_errors
def queues_list(
    app_path: AppOpt = None, transport_url: TransportOpt = None, as_json: JsonOpt = False
) -> None:
    """Depth of every queue holding messages (with --app: of the app's queues too)."""
    use_transport(transport_url)

    async def go() -> tuple[list[dict[str, Any]], str | None]:
        async with _opened(app_path) as (raw, app):
            admin = queue_admin(raw)
            names = set(await admin.queues())
            if app is not None:
                names.update(app.queues())
            rows: list[dict[str, Any]] = []
            for name in sorted(names):
                depth = await admin.depth(name)
                spec = app.consumer_of(name) if app is not None else None
                rows.append(
                    {
                        "queue": name,
                        "visible": depth.visible,
                        "in_flight": depth.in_flight,
                        "delayed": depth.delayed,
                        "total": depth.total,
                        "consumer": spec.name if spec is not None else None,
                    }
                )
            return rows, app.name if app is not None else None

    rows, app_name = arun(go())
    if as_json:
        print_json({"app": app_name, "queues": rows})
        return
    from rich.table import Table

    table = Table(title=f"queues ({len(rows)})", title_justify="left")
    table.add_column("queue")
    for col in ("visible", "in flight", "delayed", "total"):
        table.add_column(col, justify="right")
    if app_name is not None:
        table.add_column(f"consumer in {app_name}")
    for r in rows:
        cells = [
            escape(r["queue"]),
            str(r["visible"]),
            str(r["in_flight"]),
            str(r["delayed"]),
            str(r["total"]),
        ]
        if app_name is not None:
            cells.append(r["consumer"] or ("[yellow]none[/]" if r["total"] else "-"))
        table.add_row(*cells)
    console().print(table)


def _message_doc(m: QueuedMessage) -> dict[str, Any]:
    return {
        "message_id": m.message_id,
        "state": m.state,
        "receive_count": m.receive_count,
        "enqueued_at": iso_time(m.enqueued_at),
        "visible_at": iso_time(m.visible_at),
        "attributes": m.attributes,
        "body": body_json(m.body),
    }


@queues_cli.command("peek", cls=ApixCommand)
@handle_errors
def queues_peek(
    queue: Annotated[str, typer.Argument(help="Queue name.")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 10,
    app_path: AppOpt = None,
    transport_url: TransportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the oldest messages of a queue without consuming them."""
    use_transport(transport_url)

    async def go() -> tuple[list[QueuedMessage], int]:
        async with _opened(app_path) as (raw, _):
            found = await _inspector(raw).peek(queue, limit)
            total = (await queue_admin(raw).depth(queue)).total
            return found, total

    messages, total = arun(go())
    if as_json:
        print_json(
            {"queue": queue, "total": total, "messages": [_message_doc(m) for m in messages]}
        )
        return
    from rich.table import Table

    table = Table(title=f"{escape(queue)}: oldest {len(messages)} of {total}", title_justify="left")
    for col in ("message id", "state", "receives", "enqueued", "tenant"):
        table.add_column(col, no_wrap=True)
    table.add_column("body", overflow="ellipsis", max_width=80)
    for m in messages:
        doc = body_json(m.body)
        tenant = doc.get("tenant_id") if isinstance(doc, dict) else None
        table.add_row(
            escape(m.message_id),
            m.state,
            str(m.receive_count),
            fmt_time(_utc(m.enqueued_at)),
            escape(str(tenant or m.attributes.get(TENANT_ATTRIBUTE) or "-")),
            escape(m.body.replace("\n", " ")),
        )
    console().print(table)


def _utc(epoch: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


@queues_cli.command("purge", cls=ApixCommand)
@handle_errors
def queues_purge(
    queue: Annotated[str, typer.Argument(help="Queue name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    app_path: AppOpt = None,
    transport_url: TransportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete every message of a queue (in-flight ones too). Asks first unless --yes."""
    use_transport(transport_url)

    async def depth() -> int:
        async with _opened(app_path) as (raw, _):
            _inspector(raw)
            return (await queue_admin(raw).depth(queue)).total

    async def purge() -> int:
        async with _opened(app_path) as (raw, _):
            return await _inspector(raw).purge(queue)

    if not yes:
        count = arun(depth())
        typer.confirm(
            f"Delete {count} message(s) from queue {queue}? This cannot be undone", abort=True
        )
    purged = arun(purge())
    if as_json:
        print_json({"queue": queue, "purged": purged})
        return
    console().print(f"purged [bold]{purged}[/] message(s) from {escape(queue)}")


def register(app: typer.Typer) -> None:
    """Add the ``queues`` group to ``app``."""
    app.add_typer(queues_cli, name="queues")
