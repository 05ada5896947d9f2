"""Queue transports as small interfaces, and the values that cross them.

As httpx keeps one small transport interface, apix splits a queue service by what it can do:

* :class:`Producer` — ``send_batch`` (and ``send``) and the service's size limit. Every transport
  is one; the outbox dispatcher needs nothing more.
* :class:`Consumer` — ``receive`` / ``ack`` / ``release`` / ``dead_letter``: what a polling
  worker (``apix run``, ``apix worker``) needs. A Lambda or Azure trigger never receives; its
  adapter settles outcomes its own way (``apix_core.processing.settle``).
* optional admin capabilities, checked with ``isinstance``: :class:`DeadLetterAdmin`
  (list / show / replay dead letters) and :class:`QueueAdmin` (depth, queue names).

:class:`QueueTransport` is a producer and a consumer: a full transport a worker can drive.
Joining the metadata store's transaction is the local SQL transport's alone
(:class:`apix_core.transport.local.LocalTransport`).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from apix_core.errors import MessageTooLargeError


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to send. ``tenant_id`` is part of its identity where a transport
    deduplicates (the local one: per queue, tenant and message id); when None, the
    ``tenant_id`` attribute stands in."""

    message_id: str
    body: str
    delay_seconds: float = 0.0
    attributes: dict[str, str] = field(default_factory=dict)
    tenant_id: str | None = None


@dataclass(slots=True)
class ReceivedMessage:
    """One delivery of a message. ``receive_count`` starts at 1 on the first delivery."""

    queue: str
    message_id: str
    body: str | bytes
    receipt: str = ""
    receive_count: int = 1
    attributes: dict[str, str] = field(default_factory=dict)
    enqueued_at: float | None = None


@dataclass(frozen=True)
class DeadLetterInfo:
    error_code: str
    error_category: str
    error_message: str
    attempts: int
    processor: str | None = None
    tenant_id: str | None = None


@dataclass(frozen=True)
class DeadLetterRecord:
    id: str
    queue: str
    message_id: str
    body: str
    error_code: str
    error_category: str
    error_message: str
    attempts: int
    created_at: datetime | None
    processor: str | None = None
    tenant_id: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    replayed_at: datetime | None = None


@dataclass(frozen=True)
class QueueDepth:
    visible: int
    in_flight: int
    delayed: int = 0

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


class Producer(ABC):
    """Sends messages to named queues."""

    name: str = "transport"

    @abstractmethod
    async def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        """Send messages; re-sending a message id already queued must not fail."""

    async def send(self, queue: str, message: OutgoingMessage) -> None:
        await self.send_batch(queue, [message])

    @abstractmethod
    def max_message_bytes(self, queue: str) -> int:
        """The largest body ``queue`` accepts, in the units of :meth:`encoded_size`."""

    def encoded_size(self, body: str) -> int:
        """Bytes a body occupies on this transport (UTF-8 unless the transport re-encodes)."""
        return len(body.encode("utf-8"))

    def check_size(self, queue: str, body: str) -> None:
        """Raise :class:`MessageTooLargeError` when ``body`` does not fit ``queue``."""
        limit = self.max_message_bytes(queue)
        if len(body) * 4 <= limit and type(self).encoded_size is Producer.encoded_size:
            return  # UTF-8 needs at most 4 bytes a character: no need to encode
        size = self.encoded_size(body)
        if size > limit:
            raise MessageTooLargeError(size, limit, f"{self.name}:{queue}")

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class Consumer(ABC):
    """Receives from a queue with a visibility timeout and settles each delivery."""

    @abstractmethod
    async def receive(
        self, queue: str, max_messages: int = 10, visibility_timeout: float | None = None
    ) -> list[ReceivedMessage]: ...

    @abstractmethod
    async def ack(self, queue: str, messages: Sequence[ReceivedMessage]) -> None:
        """Delete processed messages."""

    @abstractmethod
    async def release(self, queue: str, message: ReceivedMessage, delay_seconds: float) -> None:
        """Make a message visible again after ``delay_seconds`` (a nack)."""

    @abstractmethod
    async def dead_letter(self, queue: str, message: ReceivedMessage, info: DeadLetterInfo) -> None:
        """Move a message to the dead-letter destination with its error, then delete it."""

    async def wait_for_messages(self, queue: str, max_wait: float) -> None:
        """Return when ``queue`` may have messages, at the latest after ``max_wait`` seconds.

        The default just sleeps (polling); a transport that can tell sooner overrides it.
        """
        await asyncio.sleep(max_wait)


class QueueTransport(Producer, Consumer):
    """A full transport: a worker sends, receives and settles through it."""


@runtime_checkable
class DeadLetterAdmin(Protocol):
    """Optional capability: list, show and replay dead letters (``apix dlq``)."""

    async def list_dead_letters(
        self, queue: str | None = None, limit: int = 50
    ) -> list[DeadLetterRecord]: ...

    async def get_dead_letter(self, dead_letter_id: str) -> DeadLetterRecord: ...

    async def replay_dead_letter(self, dead_letter_id: str) -> str:
        """Send the original message back to its queue; returns its message id."""
        ...


@runtime_checkable
class QueueAdmin(Protocol):
    """Optional capability: queue depth and the names of queues holding messages."""

    async def depth(self, queue: str) -> QueueDepth: ...

    async def queues(self) -> list[str]: ...


__all__ = [
    "Consumer",
    "DeadLetterAdmin",
    "DeadLetterInfo",
    "DeadLetterRecord",
    "OutgoingMessage",
    "Producer",
    "QueueAdmin",
    "QueueDepth",
    "QueueTransport",
    "ReceivedMessage",
]
