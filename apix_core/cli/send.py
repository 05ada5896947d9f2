"""``apix send``: put one message, or many (JSONL from a file or stdin), on a queue."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from apix_core.cli._common import (
    ApixCommand,
    TenantOpt,
    TransportOpt,
    arun,
    console,
    escape,
    handle_errors,
    json_object,
    masked_url,
    resolve_tenant,
    transport,
    use_transport,
)
from apix_core.constants import TENANT_ATTRIBUTE
from apix_core.errors import ConfigurationError, MalformedMessageError

#: Messages per ``send_batch`` when sending without ``--app`` (one transaction each locally).
BATCH = 500


def decode_utf8(data: bytes, source: str) -> str:
    """``data`` as UTF-8 text, else a :class:`MalformedMessageError` naming where it broke."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MalformedMessageError(
            f"{source} is not valid UTF-8 (line {line}, byte {exc.start}: {exc.reason})"
        ) from None


def parse_jsonl(text: str, source: str) -> list[dict[str, Any]]:
    """One JSON object per non-blank line; the first bad line is an error naming it (so
    nothing is sent unless every line is valid)."""
    found: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            found.append(json_object(line))
        except MalformedMessageError as exc:
            raise MalformedMessageError(f"{source} line {number}: {exc}") from None
    if not found:
        raise MalformedMessageError(f"{source} holds no message (one JSON object per line)")
    return found


def _stdin_payloads() -> list[dict[str, Any]]:
    raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    text = decode_utf8(raw, "stdin")
    # One JSON object (possibly over several lines), else JSON Lines.
    try:
        whole = json.loads(text)
    except ValueError:
        return parse_jsonl(text, "stdin")
    return [json_object(text)] if not isinstance(whole, dict) else [whole]


def _file_payloads(path: Path) -> list[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_jsonl(decode_utf8(raw, str(path)), str(path))


async def _send_bare(
    queue: str, payloads: list[dict[str, Any]], tenant_id: str, message_id: str | None
) -> tuple[list[str], str]:
    """Send on the transport of the environment; returns the ids and where they went."""
    from apix_core.config import Settings
    from apix_core.message import Message
    from apix_core.transport.base import OutgoingMessage

    outgoing: list[OutgoingMessage] = []
    async with transport(None) as opened:
        where = f"{opened.name} transport: {masked_url(Settings.from_env().queue_url)}"
        for payload in payloads:
            msg = Message(
                message_id=message_id or str(uuid.uuid4()), tenant_id=tenant_id, payload=payload
            )
            body = msg.to_json()
            opened.check_size(queue, body)
            outgoing.append(
                OutgoingMessage(msg.message_id, body, 0.0, {TENANT_ATTRIBUTE: tenant_id})
            )
        for start in range(0, len(outgoing), BATCH):
            await opened.send_batch(queue, outgoing[start : start + BATCH])
    return [m.message_id for m in outgoing], where


async def _send_app(
    app_path: str,
    queue: str,
    payloads: list[dict[str, Any]],
    tenant_id: str | None,
    message_id: str | None,
) -> tuple[list[str], str]:
    """Send through the app at ``app_path``; returns the ids and where they went."""
    from apix_core.cli.loader import load_app

    app = load_app(app_path)
    if app.consumer_of(queue) is None:
        consumed = sorted(q for s in app.specs.values() if (q := app.input_queue(s)))
        raise ConfigurationError(
            f"no processor of {app.name} consumes queue {queue!r}: the message would stay "
            f"queued (it consumes: {', '.join(consumed) or 'nothing'})"
        )
    try:
        if len(payloads) == 1:
            sent = [await app.send(queue, payloads[0], tenant_id=tenant_id, message_id=message_id)]
        else:
            sent = await app.send_many(queue, payloads, tenant_id=tenant_id)
        # The app may bring a transport of its own: its name, not a URL, says which.
        assert app.transport is not None
        return sent, f"{app.transport.name} transport of {app.name}"
    finally:
        await app.close()


@handle_errors
def send(
    queue: Annotated[str, typer.Argument(help="Queue name.")],
    payload: Annotated[
        str | None,
        typer.Argument(
            help="JSON object, or - to read stdin (one JSON object, or one per line).",
        ),
    ] = None,
    tenant: TenantOpt = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="Send every line of this JSONL file (one object each)."),
    ] = None,
    app_path: Annotated[
        str | None,
        typer.Option(
            "--app",
            help="Send through this app (its transport and settings); refuses a queue "
            "none of its processors consumes.",
        ),
    ] = None,
    message_id: Annotated[
        str | None, typer.Option("--message-id", help="Message id (the idempotency key).")
    ] = None,
    transport_url: TransportOpt = None,
) -> None:
    """Put a message (an apix envelope) on a queue, or many from a JSONL file or stdin.

    Every line is validated before anything is sent: a bad line names its number and sends
    nothing. The last line says where the messages went: queue and transport.
    """
    use_transport(transport_url)
    if (payload is None) == (file is None):
        raise ConfigurationError("give a payload (JSON, or - for stdin) or --file, not both")
    if file is not None:
        payloads = _file_payloads(file)
    elif payload == "-":
        payloads = _stdin_payloads()
    else:
        assert payload is not None
        payloads = [json_object(payload)]
    if message_id and len(payloads) > 1:
        raise ConfigurationError("--message-id names one message; it cannot go with many")
    if tenant:
        tenant = resolve_tenant(tenant)  # validates the spelling before anything is opened
    if app_path:
        sent, where = arun(_send_app(app_path, queue, payloads, tenant, message_id))
    else:
        sent, where = arun(_send_bare(queue, payloads, resolve_tenant(tenant), message_id))
        console(stderr=True).print(
            f"[yellow]note:[/] not checked that a processor consumes {escape(queue)} "
            "(pass --app app.py to check); unconsumed messages stay queued, see "
            "`apix queues list`"
        )
    what = f"[bold]{escape(sent[0])}[/]" if len(sent) == 1 else f"[bold]{len(sent)}[/] messages"
    console().print(f"sent {what} to {escape(queue)} ({escape(where)})", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``send`` to ``app``."""
    app.command(cls=ApixCommand)(send)
