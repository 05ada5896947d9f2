"""Queue outputs: a message to a queue the processor ``produces``, sent through the transport."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from apix_core.errors import ConfigurationError, PayloadValidationError
from apix_core.hashing import entity_id_for
from apix_core.message import EntityReference, MessageType, dump_json, envelope
from apix_core.outputs.base import (
    OutboxRow,
    OutputHandler,
    OutputKind,
    RowContext,
    register_output_kind,
)
from apix_core.transport.base import OutgoingMessage

if TYPE_CHECKING:
    from apix_core.transport.base import Producer


@dataclass
class QueueOutputHandler(OutputHandler):
    """Send a message to a queue declared in the processor's ``produces``.

    The message carries ``payload`` if given, else the processed message's payload. ``entity``
    links it to an entity; a source processor's handler persists that entity's metadata.
    """

    payload: dict[str, Any] | None = None
    entity: EntityReference | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    delay_seconds: float = 0.0

    kind: ClassVar[str] = "queue"


def resolve_entity(
    tenant: str, written: Any, ref: EntityReference | None
) -> EntityReference | None:
    """``ref`` with its id derived from the natural key and the version this call wrote."""
    if ref is None:
        return None
    entity_id = ref.id or entity_id_for(tenant, ref.canonical_type, ref.source, ref.external_id)
    w = written.get(entity_id)
    version = w.version if w else ref.version
    return ref.model_copy(update={"id": entity_id, "version": version})


class QueueOutput(OutputKind):
    name = "queue"
    handler_types = (QueueOutputHandler,)

    def to_row(self, handler: OutputHandler, row_id: str, seq: int, rc: RowContext) -> OutboxRow:
        assert isinstance(handler, QueueOutputHandler)
        message = rc.message
        payload = handler.payload if handler.payload is not None else message.payload
        if not isinstance(payload, dict):
            raise PayloadValidationError(
                f"output payload must be a dict, not {type(payload).__name__}"
            )
        entity = resolve_entity(rc.tenant_id, rc.written, handler.entity)
        body = dump_json(
            envelope(
                message_id=row_id,
                correlation_id=message.correlation_id,
                tenant_id=rc.tenant_id,
                type=MessageType.ENTITY if entity else MessageType.QUEUE,
                payload=payload,
                metadata=handler.metadata,
                created_at=rc.created_at,
                entity=entity,
                trace_context=rc.trace_context,
            )
        )
        if rc.producer is not None:
            rc.producer.check_size(handler.destination, body)
        return OutboxRow(
            row_id,
            rc.tenant_id,
            rc.processor,
            message.message_id,
            seq,
            self.name,
            handler.destination,
            body,
            handler.delay_seconds,
            rc.created_at,
        )

    async def dispatch(self, rows: Sequence[OutboxRow], producer: Producer | None) -> None:
        if producer is None:
            raise ConfigurationError("outbox holds queue messages but the app has no transport")
        for queue, messages in outgoing(rows).items():
            await producer.send_batch(queue, messages)


def outgoing(rows: Sequence[OutboxRow]) -> dict[str, list[OutgoingMessage]]:
    """Queue rows as transport messages, by destination queue."""
    by_queue: dict[str, list[OutgoingMessage]] = defaultdict(list)
    for r in rows:
        by_queue[r.destination].append(
            OutgoingMessage(r.id, r.body, r.delay_seconds, tenant_id=r.tenant_id)
        )
    return by_queue


QUEUE = register_output_kind(QueueOutput())
