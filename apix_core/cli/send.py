"""``apix send``: put a message on a queue."""

from __future__ import annotations

import sys
import uuid
from typing import Annotated, Any

import typer

from apix_core.cli._common import (
    ApixCommand,
    TenantOpt,
    arun,
    console,
    escape,
    handle_errors,
    json_object,
    resolve_tenant,
    transport,
)
from apix_core.constants import TENANT_ATTRIBUTE


async def _send_bare(
    queue: str, payload: dict[str, Any], tenant_id: str, message_id: str | None
) -> str:
    from apix_core.message import Message
    from apix_core.transport.base import OutgoingMessage

    msg = Message(message_id=message_id or str(uuid.uuid4()), tenant_id=tenant_id, payload=payload)
    async with transport(None) as opened:
        body = msg.to_json()
        opened.check_size(queue, body)
        await opened.send(
            queue, OutgoingMessage(msg.message_id, body, 0.0, {TENANT_ATTRIBUTE: tenant_id})
        )
    return msg.message_id


async def _send_app(
    app_path: str,
    queue: str,
    payload: dict[str, Any],
    tenant_id: str | None,
    message_id: str | None,
) -> str:
    from apix_core.cli.loader import load_app

    app = load_app(app_path)
    try:
        return await app.send(queue, payload, tenant_id=tenant_id, message_id=message_id)
    finally:
        await app.close()


@handle_errors
def send(
    queue: Annotated[str, typer.Argument(help="Queue name.")],
    payload: Annotated[str, typer.Argument(help="JSON object, or - to read it from stdin.")],
    tenant: TenantOpt = None,
    app_path: Annotated[
        str | None,
        typer.Option("--app", help="Send through this app (its transport and settings)."),
    ] = None,
    message_id: Annotated[
        str | None, typer.Option("--message-id", help="Message id (the idempotency key).")
    ] = None,
) -> None:
    """Put a message (an apix envelope) on a queue."""
    data = json_object(sys.stdin.read() if payload == "-" else payload)
    if app_path:
        sent = arun(_send_app(app_path, queue, data, tenant, message_id))
    else:
        sent = arun(_send_bare(queue, data, resolve_tenant(tenant), message_id))
    console().print(f"sent [bold]{sent}[/] to {escape(queue)}")


def register(app: typer.Typer) -> None:
    """Add ``send`` to ``app``."""
    app.command(cls=ApixCommand)(send)
