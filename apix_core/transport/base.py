"""The ``QueueTransport`` interface and the values that cross it."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from apix_core.exceptions import MessageTooLargeError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from apix_core.store.database import Database
    from apix_core.store.pg import WriteBundle


@dataclass(frozen=True)
class OutgoingMessage:
    message_id: str
    body: str
    delay_seconds: float = 0.0
    attributes: dict[str, str] = field(default_factory=dict)


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


class QueueTransport(ABC):
    """At-least-once queues: send, receive with a visibility timeout, ack, release, dead-letter."""

    name: str = "transport"

    @abstractmethod
    async def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        """Send messages; re-sending a message id already queued must not fail."""

    async def send(self, queue: str, message: OutgoingMessage) -> None:
        await self.send_batch(queue, [message])

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

    @abstractmethod
    def max_message_bytes(self, queue: str) -> int: ...

    def encoded_size(self, body: str) -> int:
        """Bytes a body occupies on this transport (UTF-8 unless the transport re-encodes)."""
        return len(body.encode("utf-8"))

    def check_size(self, queue: str, body: str) -> None:
        limit = self.max_message_bytes(queue)
        if len(body) * 4 <= limit and type(self).encoded_size is QueueTransport.encoded_size:
            return  # UTF-8 needs at most 4 bytes a character: no need to encode
        size = self.encoded_size(body)
        if size > limit:
            raise MessageTooLargeError(size, limit, f"{self.name}:{queue}")

    @abstractmethod
    async def list_dead_letters(
        self, queue: str | None = None, limit: int = 50
    ) -> list[DeadLetterRecord]: ...

    @abstractmethod
    async def get_dead_letter(self, dead_letter_id: str) -> DeadLetterRecord: ...

    @abstractmethod
    async def replay_dead_letter(self, dead_letter_id: str) -> str:
        """Send the original message back to its queue; returns its message id."""

    @abstractmethod
    async def depth(self, queue: str) -> QueueDepth: ...

    def joins_transactions_of(self, db: Database) -> bool:
        """True when this transport stores its queues in ``db``: then a handler sends in its
        own transaction (:meth:`send_in_transaction`) instead of through the outbox."""
        return False

    async def send_in_transaction(
        self,
        conn: AsyncConnection,
        queue: str,
        messages: Sequence[OutgoingMessage],
        bundle: WriteBundle | None = None,
    ) -> None:
        """Enqueue on ``conn``, a transaction of the database named by
        :meth:`joins_transactions_of`; visible when it commits. Call :meth:`notify` after.
        With a PostgreSQL ``bundle`` the rows join the transaction's single write statement."""
        raise NotImplementedError(f"{type(self).__name__} cannot join a database transaction")

    def notify(self, queue: str) -> None:  # noqa: B027 - optional hook
        """Messages were committed to ``queue`` outside :meth:`send_batch` (a wake-up hint)."""

    async def wait_for_messages(self, queue: str, max_wait: float) -> None:
        """Return when ``queue`` may have messages, at the latest after ``max_wait`` seconds.

        The default just sleeps (polling); a transport that can tell sooner overrides it.
        """
        await asyncio.sleep(max_wait)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
