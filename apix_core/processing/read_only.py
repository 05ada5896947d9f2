"""What a read-only HTTP route's processor may touch (``ProcessorSpec.read_only``).

Such a route (``GET``/``HEAD``/``OPTIONS``, no ``produces``) runs outside the processing
transaction: nothing is claimed, so a read leaves no idempotency row, outbox row or error row,
and is never answered "duplicate". Its context reads committed metadata, each read in a
tenant-scoped read transaction; anything that would write raises :class:`ReadOnlyRouteError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from apix_core.errors import ReadOnlyRouteError

if TYPE_CHECKING:
    import builtins

    from apix_core.context import ProcessorContext
    from apix_core.processor import ProcessorSpec
    from apix_core.store.repositories import Store
    from apix_core.store.state import StateEntry
    from apix_core.store.types import Entity


def read_only_error(spec: ProcessorSpec, what: str) -> ReadOnlyRouteError:
    """The error for ``what`` (a write) attempted by the read-only route of ``spec``."""
    return ReadOnlyRouteError(
        f"processor {spec.name} answers the read-only route {spec.route} and cannot {what}: "
        "such routes write nothing (no idempotency record). To write, route it with "
        "POST, PUT, PATCH or DELETE (exactly-once with an Idempotency-Key header), or declare "
        "produces= on it"
    )


def check_no_writes(spec: ProcessorSpec, ctx: ProcessorContext, handlers: list[Any]) -> None:
    """Raise :class:`ReadOnlyRouteError` when the call buffered entity writes or outputs."""
    if ctx.has_writes:
        writes = ctx.writes
        raise read_only_error(
            spec,
            "persist entities" if writes.entities else "record state transitions",
        )
    if handlers:
        raise read_only_error(spec, "send outputs")


class ReadOnlyAccess:
    """The :class:`~apix_core.context.EntityAccess` of a read-only route: reads of committed
    metadata; a flush (pending writes) or a ``ctx.state`` change raises."""

    __slots__ = ("_spec", "_store")

    def __init__(self, spec: ProcessorSpec, store: Store) -> None:
        self._spec = spec
        self._store = store

    async def flush(self, ctx: ProcessorContext) -> None:
        raise read_only_error(self._spec, "persist entities")

    async def read_entity(self, entity_id: str) -> Entity:
        return await self._store.entities.get(entity_id)

    async def discard(self) -> None:
        return None  # nothing was written

    async def state(self) -> ReadOnlyState:
        return ReadOnlyState(self._spec, self._store)


class ReadOnlyState:
    """``ctx.state`` in a read-only route: ``get``/``list`` read committed entries (one read
    transaction each, tenant-scoped); ``put``/``delete`` raise :class:`ReadOnlyRouteError`."""

    __slots__ = ("_spec", "_store")

    def __init__(self, spec: ProcessorSpec, store: Store) -> None:
        self._spec = spec
        self._store = store

    async def get(self, namespace: str, key: str) -> StateEntry | None:
        from apix_core.store.state import StateRepository

        return await StateRepository(self._store.db).get(namespace, key)

    async def list(self, namespace: str, prefix: str = "") -> builtins.list[StateEntry]:
        from apix_core.store.state import SqlStateStore
        from apix_core.tenancy import require_tenant

        tenant = require_tenant()
        async with self._store.db.transaction(tenant_id=tenant, write=False) as conn:
            return await SqlStateStore(conn, tenant).list(namespace, prefix)

    async def put(
        self, namespace: str, key: str, value: Any, *, expected_version: int | None = None
    ) -> StateEntry:
        raise read_only_error(self._spec, "change ctx.state")

    async def delete(self, namespace: str, key: str) -> bool:
        raise read_only_error(self._spec, "change ctx.state")
