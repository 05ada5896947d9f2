"""Output handlers and output kinds.

A processor's result names *output handlers* (``QueueOutputHandler``, ``FileOutputHandler``...).
Each handler class belongs to an :class:`OutputKind`, registered by name, that knows how the
handler becomes an :class:`OutboxRow` inside the processing transaction and how rows of its
kind are dispatched after commit. New kinds (Service Bus, object storage, extraction outputs)
register themselves with :func:`register_output_kind`; nothing else switches on kind names.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from apix_core.errors import ConfigurationError

if TYPE_CHECKING:
    from apix_core.message import Message
    from apix_core.transport.base import Producer


@dataclass(slots=True)
class OutboxRow:
    """One output of one processed message, as the outbox stores it.

    ``id`` is deterministic (tenant, processor, input message id, position), and is also the
    outgoing message id, so a re-dispatch after a crash is deduplicated downstream.
    """

    id: str
    tenant_id: str
    processor: str
    source_message_id: str
    seq: int
    kind: str
    destination: str
    body: str
    delay_seconds: float
    created_at: datetime
    config: dict[str, Any] | None = None

    def as_tuple(self) -> tuple[Any, ...]:
        body = self.body
        if self.config:
            # Options travel with the row so a re-dispatch does exactly the same.
            body = json.dumps({"config": self.config, "body": self.body}, separators=(",", ":"))
        return (
            self.id,
            self.tenant_id,
            self.processor,
            self.source_message_id,
            self.seq,
            self.kind,
            self.destination,
            body,
            self.delay_seconds,
            self.created_at,
        )


def unpack_body(stored: str) -> tuple[str, dict[str, Any] | None]:
    """The body and options of a stored row (see :meth:`OutboxRow.as_tuple`)."""
    if stored.startswith('{"config"'):
        wrapped = json.loads(stored)
        return wrapped["body"], wrapped["config"]
    return stored, None


@dataclass
class OutputHandler:
    """Base class: a destination and free-form configuration."""

    destination: str
    config: dict[str, Any] = field(default_factory=dict)

    kind: ClassVar[str] = "noop"


@dataclass
class NoOpOutputHandler(OutputHandler):
    """Terminal stage: nothing is sent."""

    destination: str = ""

    kind: ClassVar[str] = "noop"


@dataclass(slots=True)
class RowContext:
    """What turning one message's outputs into rows may use."""

    tenant_id: str
    processor: str
    message: Message
    trace_context: dict[str, str]
    created_at: datetime
    #: Entity versions written by this message's call (entity id → its write result).
    written: Mapping[str, Any]
    #: The transport outputs are sent with (for its size limit), if any.
    producer: Producer | None


class OutputKind(ABC):
    """How one kind of output becomes outbox rows and is dispatched."""

    #: The name stored in ``apix_outbox.kind``.
    name: ClassVar[str]
    #: Output handler classes of this kind.
    handler_types: ClassVar[tuple[type[OutputHandler], ...]]

    @abstractmethod
    def to_row(self, handler: OutputHandler, row_id: str, seq: int, rc: RowContext) -> OutboxRow:
        """The outbox row of ``handler``; raise a ``PermanentError`` for an output that can
        never be delivered (the message then fails alone, before commit)."""

    @abstractmethod
    async def dispatch(self, rows: Sequence[OutboxRow], producer: Producer | None) -> None:
        """Deliver committed rows of this kind (idempotently: a row may be dispatched twice)."""


_KINDS: dict[str, OutputKind] = {}
# A bare OutputHandler names a destination but no way to reach it: nothing is sent (as NoOp).
_BY_HANDLER: dict[type[OutputHandler], OutputKind | None] = {
    OutputHandler: None,
    NoOpOutputHandler: None,
}


def register_output_kind(kind: OutputKind) -> OutputKind:
    """Make ``kind`` available to processors (and its rows to the dispatcher)."""
    _KINDS[kind.name] = kind
    for t in kind.handler_types:
        _BY_HANDLER[t] = kind
    return kind


def output_kind(name: str) -> OutputKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise ConfigurationError(
            f"no output kind {name!r} is registered (known: {sorted(_KINDS)})"
        ) from None


def kind_of(handler: OutputHandler) -> OutputKind | None:
    """The kind of ``handler`` (``None``: nothing to send, as for ``NoOpOutputHandler``)."""
    cls = type(handler)
    try:
        return _BY_HANDLER[cls]
    except KeyError:
        pass
    for base in cls.__mro__[1:]:
        if base in _BY_HANDLER:
            _BY_HANDLER[cls] = found = _BY_HANDLER[base]
            return found
    raise ConfigurationError(
        f"{cls.__name__} is not an output kind apix knows; subclass a registered handler "
        "or register_output_kind() one"
    )
