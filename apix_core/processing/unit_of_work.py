"""The unit of work: what a metadata backend does for one tenant's batch, as one transaction.

The orchestrator (``handler.py``) drives it; a backend implements it (``store/unit_of_work.py``
for SQL; a DynamoDB backend would use a transaction of conditional writes). Nothing above this
interface assumes SQL:

1. entering claims ``(tenant, processor, message_id)`` for the batch — :attr:`claimed` are the
   ids this unit now owns; the others are completed work;
2. :meth:`pending_outputs` returns the unsent outputs of completed work (re-dispatched);
3. each successful call is :meth:`add`\\ ed (its buffered entity writes and output handlers),
   each failure :meth:`fail`\\ ed (claim released, error recorded);
4. :meth:`complete` writes the entities and turns outputs into outbox rows; a message whose
   outputs cannot be built fails alone and is returned for the orchestrator to fail;
5. leaving the context commits everything at once, or nothing.

``access`` is what the processor's context uses to read its own writes mid-call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from apix_core.processing.outcomes import OutcomeKind

if TYPE_CHECKING:
    from apix_core.context import EntityAccess
    from apix_core.errors import ErrorInfo
    from apix_core.message import Message
    from apix_core.outputs import OutboxRow
    from apix_core.processing.invoke import Invocation
    from apix_core.processing.outcomes import Outcome
    from apix_core.processor import ProcessorConfig
    from apix_core.transport.base import Producer


@dataclass(slots=True)
class Completed:
    """The result of :meth:`UnitOfWork.complete`."""

    #: Outbox rows to dispatch after commit (what was not already enqueued in the transaction).
    rows: list[OutboxRow]
    #: Successes whose outputs could not be built: (key, exception); they must be failed.
    failed: list[tuple[Any, Exception]]


class UnitOfWork(ABC):
    """One tenant's transaction over a batch of one processor's messages."""

    #: Message ids this unit claimed (the rest of the batch is completed work).
    claimed: set[str]
    #: Read-your-writes for the processor's context (``None``: the backend has none).
    access: EntityAccess | None

    @abstractmethod
    async def pending_outputs(self, message_ids: Sequence[str]) -> list[OutboxRow]:
        """Unsent outputs of already-completed messages."""

    @abstractmethod
    async def add(self, key: Any, invocation: Invocation) -> None:
        """Keep a successful call's writes and outputs (raises when they cannot be kept: then
        the call fails and its writes are discarded)."""

    @abstractmethod
    async def discard(self) -> None:
        """Drop what the current call flushed (it failed)."""

    @abstractmethod
    async def complete(self) -> Completed:
        """Write the kept entities and build the outbox rows of every kept call."""

    @abstractmethod
    async def fail(self, outcomes: Sequence[Outcome]) -> None:
        """Record failures: release their claims, write their errors, mark dead-lettered
        entities failed."""

    @abstractmethod
    async def release(self, message_ids: Sequence[str]) -> None:
        """Give up claims on messages that were not run (the deadline came first): their
        redelivery is processed, not a duplicate. No error is recorded."""

    @abstractmethod
    async def enqueue(self, rows: Sequence[OutboxRow]) -> list[OutboxRow]:
        """Write outputs in this transaction: as outbox rows, or straight onto queues the
        transport keeps in the same database. Returns the rows to dispatch after commit."""

    async def keep_answers(self, answers: Sequence[KeptAnswer]) -> None:  # noqa: B027
        """Keep HTTP answers with their claims, in this transaction (an ``Idempotency-Key``
        retry is answered with them). A backend without it answers retries ``duplicate``."""


@dataclass(frozen=True, slots=True)
class KeptAnswer:
    """The first answer to an HTTP request with an ``Idempotency-Key``, kept with its claim.

    ``headers`` and ``body`` are JSON text, both ``None`` when the answer was too large to
    keep (``status`` is kept all the same)."""

    message_id: str
    request_hash: str
    status: int
    headers: str | None
    body: str | None


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """A processing error as the store records it (type, code, location — never content)."""

    message_id: str
    error: ErrorInfo
    attempt: int
    final: bool
    entity_id: str | None = None


def error_record(message: Message, outcome: Outcome) -> ErrorRecord:
    assert outcome.error is not None
    return ErrorRecord(
        message.message_id,
        outcome.error,
        message.attempt,
        outcome.kind is OutcomeKind.DEAD_LETTER,
        message.entity.id if message.entity else None,
    )


class MetadataStore(Protocol):
    """What the orchestrator needs of a metadata backend (``store.repositories.Store`` for SQL)."""

    def unit_of_work(
        self,
        *,
        tenant: str,
        processor: str,
        config: ProcessorConfig,
        message_ids: list[str],
        producer: Producer | None,
    ) -> AbstractAsyncContextManager[UnitOfWork]: ...

    async def record_errors(
        self, tenant: str, processor: str, records: Sequence[ErrorRecord]
    ) -> None: ...

    async def mark_sent(self, rows: Sequence[OutboxRow]) -> None: ...
