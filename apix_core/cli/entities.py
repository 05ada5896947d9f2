"""``apix entities``: entity metadata (versions and state transitions)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from apix_core.cli._common import (
    ApixCommand,
    JsonOpt,
    TenantOpt,
    arun,
    command_group,
    console,
    escape,
    fmt_time,
    handle_errors,
    print_json,
    resolve_tenant,
    store,
)

entities_cli = command_group("Entity metadata (versions and state transitions).")


@entities_cli.command("list", cls=ApixCommand)
@handle_errors
def entities_list(
    tenant: TenantOpt = None,
    canonical_type: Annotated[
        str | None, typer.Option("--type", help="Only this canonical type.")
    ] = None,
    state: Annotated[
        str | None, typer.Option("--state", help="Only entities in this state.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List entities, most recently updated first."""
    from rich.table import Table

    from apix_core.tenancy import tenant_context

    tenant_id = resolve_tenant(tenant)

    async def go() -> tuple[list[Any], int]:
        async with store() as opened:
            with tenant_context(tenant_id):
                rows = await opened.entities.list(
                    canonical_type=canonical_type, state=state, limit=limit
                )
                return rows, await opened.entities.count()

    rows, total = arun(go())
    if as_json:
        print_json(
            {
                "tenant": tenant_id,
                "total": total,
                "shown": len(rows),
                "entities": [_entity_doc(e) for e in rows],
            }
        )
        return
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
            fmt_time(e.updated_at),
        )
    console().print(table)


@entities_cli.command("show", cls=ApixCommand)
@handle_errors
def entities_show(
    entity_id: Annotated[str, typer.Argument(help="Entity id (from `apix entities list`).")],
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show an entity's metadata, versions and state transitions."""
    from rich.table import Table

    from apix_core.tenancy import tenant_context

    tenant_id = resolve_tenant(tenant)

    async def go() -> tuple[Any, list[Any], list[Any]]:
        async with store() as opened:
            with tenant_context(tenant_id):
                entity = await opened.entities.get(entity_id)
                versions = await opened.entities.versions(entity_id)
                transitions = await opened.states.transitions(entity_id)
                return entity, versions, transitions

    entity, versions, transitions = arun(go())
    if as_json:
        print_json(
            {
                "entity": _entity_doc(entity),
                "versions": [
                    {
                        "version": v.version,
                        "content_hash": v.content_hash,
                        "processor": v.processor,
                        "message_id": v.message_id,
                        "created_at": v.created_at,
                    }
                    for v in versions
                ],
                "transitions": [
                    {
                        "from_state": t.from_state,
                        "to_state": t.to_state,
                        "reason": t.reason,
                        "processor": t.processor,
                        "message_id": t.message_id,
                        "created_at": t.created_at,
                    }
                    for t in transitions
                ],
            }
        )
        return
    out = console()
    out.print(f"[bold]entity[/] {entity.id}")
    for label, value in (
        ("tenant", entity.tenant_id),
        ("type", entity.canonical_type),
        ("source", entity.source),
        ("external id", entity.external_id),
        ("version", entity.version),
        ("state", entity.state),
        ("content hash", entity.content_hash),
        ("attributes", json.dumps(entity.attributes, sort_keys=True, default=str)),
        ("created", fmt_time(entity.created_at)),
        ("updated", fmt_time(entity.updated_at)),
    ):
        out.print(f"  {label:<13} {escape(str(value))}")
    vt = Table(title="versions", title_justify="left")
    for col in ("version", "content hash", "processor", "message id", "created"):
        vt.add_column(col, no_wrap=True)
    for v in versions:
        vt.add_row(
            str(v.version),
            v.content_hash[:16],
            v.processor or "-",
            v.message_id or "-",
            fmt_time(v.created_at),
        )
    out.print(vt)
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
            fmt_time(t.created_at),
        )
    out.print(tt)


def _entity_doc(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "tenant_id": e.tenant_id,
        "canonical_type": e.canonical_type,
        "source": e.source,
        "external_id": e.external_id,
        "version": e.version,
        "state": e.state,
        "content_hash": e.content_hash,
        "attributes": e.attributes,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
    }


def register(app: typer.Typer) -> None:
    """Add the ``entities`` group to ``app``."""
    app.add_typer(entities_cli, name="entities")
