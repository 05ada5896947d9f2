"""``ProcessorContext``: what a processor may touch while it runs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from apix_core.errors import (
    OutputSerializationError,
    PermanentError,
    ProcessorContextError,
    TopologyError,
    names_only,
)
from apix_core.hashing import content_hash, entity_id_for
from apix_core.message import EntityReference, Message, dump_json
from apix_core.outputs import OutputHandler, QueueOutputHandler
from apix_core.store.types import (
    CANONICAL_TYPE_LENGTH,
    EXTERNAL_ID_LENGTH,
    REASON_LENGTH,
    SOURCE_LENGTH,
    STATE_LENGTH,
    Entity,
    EntityPage,
    EntityVersion,
    EntityWriteBatch,
    EntityWriteResult,
    PendingEntity,
    PendingTransition,
    StateTransition,
)

if TYPE_CHECKING:
    from apix_core.store.repositories import Store
    from apix_core.store.state import StateEntry, StateStore


class EntityId(str):
    """An entity id that is also awaitable: ``ctx.persist_entity(...)`` and
    ``await ctx.persist_entity(...)`` both give the id (a plain ``str`` once awaited)."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, str]:
        return str(self)
        yield  # a generator that finishes at once: nothing to wait for


class Done:
    """The result of ``ctx.transition`` / ``ctx.send``: None-like, and awaitable (to None), so
    ``async def`` processors may ``await`` them as they would any context call."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return None
        yield

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "Done"


DONE = Done()


def _json_checked(encode: Any, value: Any, root: str) -> str:
    """``encode(value)``, with the path of a value that has no JSON form inside ``root``."""
    try:
        return str(encode(value))
    except OutputSerializationError as exc:
        raise exc.under(root) from None


class EntityAccess(Protocol):
    """How a context inside a unit of work reads its own writes (read-your-writes)."""

    async def flush(self, ctx: ProcessorContext) -> None: ...

    async def read_entity(self, entity_id: str) -> Entity: ...

    async def discard(self) -> None:
        """Undo what :meth:`flush` wrote for the current call (before a retry, or on failure)."""
        ...

    async def state(self) -> StateStore:
        """Per-tenant state in the unit of work's transaction, undone if the call fails."""
        ...


class EntityReader:
    """``ctx.entities``: the current tenant's committed entity metadata, read-only.

    Every read is scoped to the message's tenant (another tenant's entity is simply not
    found). For an HTTP processor answering a ``GET``: it needs no queue and sends nothing."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, entity_id: str) -> Entity | None:
        """The entity with this id, or None."""
        from apix_core.errors import EntityNotFoundError

        try:
            return await self._store.entities.get(entity_id)
        except EntityNotFoundError:
            return None

    async def find(self, canonical_type: str, source: str, external_id: str) -> Entity | None:
        """The entity with this natural key, or None."""
        return await self._store.entities.find(canonical_type, source, external_id)

    async def page(
        self,
        *,
        canonical_type: str | None = None,
        state: str | None = None,
        source: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> EntityPage:
        """Entities newest first, ``limit`` at a time; pass ``page.next_cursor`` back as
        ``cursor`` for the next page (an invalid cursor raises ``InvalidCursorError``)."""
        return await self._store.entities.page(
            canonical_type=canonical_type, state=state, source=source, limit=limit, cursor=cursor
        )

    async def history(self, entity_id: str) -> list[StateTransition]:
        """The entity's state transitions, oldest first."""
        return await self._store.states.transitions(entity_id)

    async def versions(self, entity_id: str) -> list[EntityVersion]:
        """The entity's versions (content hashes and attributes), oldest first."""
        return await self._store.entities.versions(entity_id)


class ContextState:
    """``ctx.state``: small per-tenant state (watermarks, cursors) that commits — or not — with
    the message's transaction. Keys live in a namespace, the processor's name by default."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: ProcessorContext) -> None:
        self._ctx = ctx

    async def _store(self) -> StateStore:
        access = self._ctx._access
        if access is None:
            raise ProcessorContextError(
                "ctx.state needs persistence (ProcessorConfig.enable_persistence) and runs "
                "inside the processing transaction"
            )
        return await access.state()

    def _ns(self, namespace: str | None) -> str:
        return namespace or self._ctx.processor_name

    async def get(self, key: str, *, namespace: str | None = None) -> StateEntry | None:
        return await (await self._store()).get(self._ns(namespace), key)

    async def value(self, key: str, default: Any = None, *, namespace: str | None = None) -> Any:
        """The stored value of ``key``, or ``default``."""
        entry = await self.get(key, namespace=namespace)
        return default if entry is None else entry.value

    async def put(
        self,
        key: str,
        value: Any,
        *,
        expected_version: int | None = None,
        namespace: str | None = None,
    ) -> StateEntry:
        """Store ``value`` (JSON); with ``expected_version``, only if the entry still has that
        version (``0``: only if absent), else :class:`~apix_core.errors.StateConflictError`."""
        store = await self._store()
        return await store.put(self._ns(namespace), key, value, expected_version=expected_version)

    async def delete(self, key: str, *, namespace: str | None = None) -> bool:
        return await (await self._store()).delete(self._ns(namespace), key)

    async def list(self, prefix: str = "", *, namespace: str | None = None) -> list[StateEntry]:
        return await (await self._store()).list(self._ns(namespace), prefix)


def _check_length(name: str, limit: int, value: str) -> None:
    """``value`` fits its column: else this message fails alone."""
    if not isinstance(value, str) or not value or len(value) > limit:
        raise PermanentError(f"{name} must be a non-empty string of at most {limit} characters")


def _fits(value: Any, limit: int) -> bool:
    return type(value) is str and 0 < len(value) <= limit


class ProcessorContext:
    """Per-message services for a processor (sync or async).

    Writes (``persist_entity``, ``transition``, ``send``) are buffered and committed with the
    message's idempotency record and outbox rows in one transaction once the processor returns
    successfully; if it fails, they are discarded.
    """

    # Built for every message: slots and a lazily created write batch keep that cheap.
    __slots__ = (
        "_access",
        "_writes",
        "deadline",
        "logger",
        "loop",
        "message",
        "outputs",
        "payload",
        "processor_name",
        "produces",
        "store",
        "tenant_id",
        "written",
    )

    def __init__(
        self,
        *,
        message: Message,
        processor_name: str,
        produces: tuple[str, ...] = (),
        store: Store | None = None,
        logger: logging.Logger | None = None,
        payload: BaseModel | None = None,
        access: EntityAccess | None = None,
        deadline: float | None = None,
    ) -> None:
        self.message = message
        self.tenant_id = message.tenant_id
        self.processor_name = processor_name
        self.produces = produces
        self.store = store
        self.logger = logger or logging.getLogger(f"apix.processor.{processor_name}")
        #: The payload validated by the processor's ``payload=`` model, if it declared one.
        self.payload = payload
        self._writes: EntityWriteBatch | None = None
        self.outputs: list[OutputHandler] = []
        #: Versions of entities written so far by this call (filled when writes are flushed).
        self.written: dict[str, EntityWriteResult] = {}
        #: The event loop a sync processor's thread reaches back into (set by the handler).
        self.loop: asyncio.AbstractEventLoop | None = None
        self._access = access
        #: When the invocation must end (``time.monotonic()`` based; None: no limit), e.g. a
        #: Lambda's remaining time: long work (an extraction) stops before it and continues.
        self.deadline = deadline

    @classmethod
    def for_call(
        cls,
        message: Message,
        processor_name: str,
        produces: tuple[str, ...],
        store: Store | None,
        logger: logging.Logger,
        access: EntityAccess | None,
        deadline: float | None,
    ) -> ProcessorContext:
        """The invoker's constructor, once per message: positional, without ``__init__``'s
        keyword handling (a third of its cost). Sets exactly what ``__init__`` sets
        (tests/unit/test_context_for_call.py compares the two)."""
        ctx = object.__new__(cls)
        ctx.message = message
        ctx.tenant_id = message.tenant_id
        ctx.processor_name = processor_name
        ctx.produces = produces
        ctx.store = store
        ctx.logger = logger
        ctx.payload = None
        ctx._writes = None
        ctx.outputs = []
        ctx.written = {}
        ctx.loop = None
        ctx._access = access
        ctx.deadline = deadline
        return ctx

    def time_remaining(self) -> float | None:
        """Seconds until :attr:`deadline`, or None when the invocation has none."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    @property
    def state(self) -> ContextState:
        """Per-tenant state committed with this message (``await ctx.state.get("cursor")``)."""
        return ContextState(self)

    @property
    def entities(self) -> EntityReader:
        """Tenant-scoped reads of committed entity metadata (``await ctx.entities.page(...)``)."""
        if self.store is None:
            raise ProcessorContextError(
                "ctx.entities needs persistence (ProcessorConfig.enable_persistence)"
            )
        return EntityReader(self.store)

    @property
    def writes(self) -> EntityWriteBatch:
        """Entity writes buffered by this call, not yet flushed."""
        if self._writes is None:
            self._writes = EntityWriteBatch()
        return self._writes

    @writes.setter
    def writes(self, batch: EntityWriteBatch) -> None:
        self._writes = batch

    @property
    def has_writes(self) -> bool:
        return self._writes is not None and bool(self._writes)

    # -- entities -------------------------------------------------------------------------
    def persist_entity(
        self,
        external_id: str,
        canonical_type: str,
        source: str,
        data: Any,
        *,
        state: str | None = None,
        **attributes: Any,
    ) -> EntityId:
        """Record the metadata of an entity (its content hash, never its content); returns its id.

        The id is an :class:`EntityId`: a ``str`` that ``async def`` processors may also
        ``await`` (``entity_id = await ctx.persist_entity(...)``).

        ``attributes`` are stored as JSON by the outputs' rule (``apix_core.message.json_default``:
        datetimes as ISO 8601...; a value with no JSON form raises ``OutputSerializationError``):
        pass identifiers and flags, not content. A value too long for its column
        raises :class:`~apix_core.errors.PermanentError` here, failing this message only.
        """
        if self.store is None:
            raise ProcessorContextError(
                "persist_entity needs persistence (ProcessorConfig.enable_persistence)"
            )
        # The usual case in one expression: this runs for every entity a processor writes.
        if not (
            _fits(external_id, EXTERNAL_ID_LENGTH)
            and _fits(canonical_type, CANONICAL_TYPE_LENGTH)
            and _fits(source, SOURCE_LENGTH)
        ):
            _check_length("external_id", EXTERNAL_ID_LENGTH, external_id)
            _check_length("canonical_type", CANONICAL_TYPE_LENGTH, canonical_type)
            _check_length("source", SOURCE_LENGTH, source)
        if state is not None:
            _check_length("state", STATE_LENGTH, state)
        entity_id = entity_id_for(self.tenant_id, canonical_type, source, external_id)
        if attributes:
            # Stored with the batch: a value with no JSON form must fail this message, now.
            _json_checked(dump_json, attributes, "attributes")
        self.writes.entities.append(
            PendingEntity(
                id=entity_id,
                external_id=external_id,
                canonical_type=canonical_type,
                source=source,
                content_hash=_json_checked(content_hash, data, "data"),
                attributes=attributes,
                state=state,
                processor=self.processor_name,
                message_id=self.message.message_id,
            )
        )
        return EntityId(entity_id)

    def transition(self, entity_id: str, to_state: str, reason: str | None = None) -> Done:
        """Move an entity to ``to_state`` (recorded with the message's transaction).

        Returns :data:`DONE` (falsy; ``await ctx.transition(...)`` works too)."""
        _check_length("to_state", STATE_LENGTH, to_state)
        self.writes.transitions.append(
            PendingTransition(
                entity_id,
                to_state,
                reason[:REASON_LENGTH] if reason else reason,
                self.processor_name,
                self.message.message_id,
            )
        )
        return DONE

    async def aget_entity(self, entity_id: str) -> Entity:
        """The entity's current metadata, including this call's own pending writes."""
        if self.store is None:
            raise ProcessorContextError("get_entity needs persistence")
        if self._access is None:
            entity: Entity = await self.store.entities.get(entity_id)
            return entity
        if self.has_writes and any(p.id == entity_id for p in self.writes.entities):
            await self._access.flush(self)
        return await self._access.read_entity(entity_id)

    def get_entity(self, entity_id: str) -> Entity:
        """Sync form of :meth:`aget_entity`, for ``def`` processors (run in a worker thread)."""
        loop = self.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None or loop is None:
            raise ProcessorContextError(
                "ctx.get_entity() is for sync processors; in `async def` use "
                "`await ctx.aget_entity(entity_id)`"
            )
        return asyncio.run_coroutine_threadsafe(self.aget_entity(entity_id), loop).result()

    def reset(self) -> None:
        """Drop buffered writes and outputs (before an in-invocation retry)."""
        self._writes = None
        self.outputs = []
        self.written = {}

    # -- outputs --------------------------------------------------------------------------
    def send(
        self,
        queue: str,
        payload: dict[str, Any],
        *,
        entity: EntityReference | None = None,
        metadata: dict[str, Any] | None = None,
        delay_seconds: float = 0.0,
    ) -> Done:
        """Send ``payload`` to ``queue`` (one of ``produces``) when the processor succeeds.

        Returns :data:`DONE` (falsy; ``await ctx.send(...)`` works too)."""
        if queue not in self.produces:
            raise names_only(
                TopologyError(
                    f"processor {self.processor_name!r} may send to {list(self.produces)}, "
                    f"not {queue!r}"
                ),
                self.processor_name,
                *self.produces,
                queue,
            )
        self.outputs.append(
            QueueOutputHandler(
                destination=queue,
                payload=payload,
                entity=entity,
                metadata=dict(metadata or {}),
                delay_seconds=delay_seconds,
            )
        )
        return DONE
