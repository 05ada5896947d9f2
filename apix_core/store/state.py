"""Per-tenant transactional state: watermarks, cursors, pagination positions.

A processor (and extraction, for incremental loads) keeps small JSON values under
``(namespace, key)``; they are written in the processing transaction, so a position moves
exactly when the work that reached it commits. State is metadata, not content: values are
bounded (:data:`MAX_STATE_VALUE_BYTES`).

:class:`StateStore` is the interface (a non-SQL backend can implement it);
:class:`SqlStateStore` implements it on an open transaction (SQLite and PostgreSQL);
:class:`StateRepository` reads and resets state outside processing (CLI, operators), scoped to
the tenant of :func:`apix_core.tenant_context`. Every version starts at 1 and grows by one per
write; ``put(..., expected_version=v)`` writes only if the stored version is still ``v``
(``0``: only if the key does not exist yet).
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from apix_core.errors import ApixError, StateConflictError
from apix_core.message import dump_json
from apix_core.store.database import Database
from apix_core.store.models import state
from apix_core.tenancy import check_tenant_id, require_tenant

#: Largest stored value, in bytes of its JSON encoding (compact, as stored).
MAX_STATE_VALUE_BYTES = 64 * 1024
#: Deepest nesting of lists and objects a value may have.
MAX_STATE_DEPTH = 32
#: Longest namespace and key, in characters (the column sizes).
MAX_NAMESPACE_LENGTH = 200
MAX_KEY_LENGTH = 500


class InvalidStateError(ApixError):
    """A namespace, key, value or expected version that state cannot hold."""

    code: ClassVar[str] = "INVALID_STATE"


@dataclass(frozen=True)
class StateEntry:
    """One stored value and its version."""

    namespace: str
    key: str
    value: Any
    version: int
    updated_at: datetime


@runtime_checkable
class StateStore(Protocol):
    """Transactional key-value state of one tenant, namespaced."""

    async def get(self, namespace: str, key: str) -> StateEntry | None:
        """The entry, or None when the key has none."""
        ...

    async def put(
        self, namespace: str, key: str, value: Any, *, expected_version: int | None = None
    ) -> StateEntry:
        """Store ``value`` (any JSON value) and return the new entry.

        With ``expected_version``, only if the stored version is that one (``0``: only if there
        is none); otherwise :class:`StateConflictError`.
        """
        ...

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove the entry; whether there was one."""
        ...

    async def list(self, namespace: str, prefix: str = "") -> builtins.list[StateEntry]:
        """The entries of ``namespace`` whose key starts with ``prefix`` (case-sensitive),
        ordered by key."""
        ...


class SqlStateStore:
    """:class:`StateStore` on an open transaction (SQLAlchemy ``AsyncConnection``).

    Nothing commits here: the entries are written, or not, with the caller's transaction. Every
    statement filters on ``tenant_id`` (SQLite has no row-level security).
    """

    def __init__(self, conn: AsyncConnection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = check_tenant_id(tenant_id)

    def _where(self, namespace: str) -> sa.ColumnElement[bool]:
        return sa.and_(state.c.tenant_id == self.tenant_id, state.c.namespace == namespace)

    async def get(self, namespace: str, key: str) -> StateEntry | None:
        _check_key(namespace, key)
        row = (
            await self.conn.execute(
                sa.select(state.c.value, state.c.version, state.c.updated_at).where(
                    self._where(namespace), state.c.key == key
                )
            )
        ).first()
        return None if row is None else _entry(namespace, key, row)

    async def put(
        self, namespace: str, key: str, value: Any, *, expected_version: int | None = None
    ) -> StateEntry:
        _check_key(namespace, key)
        check_state_value(namespace, key, value)
        if expected_version is not None and (
            isinstance(expected_version, bool)
            or not isinstance(expected_version, int)
            or expected_version < 0
        ):
            raise InvalidStateError(
                f"state {namespace!r}/{key!r}: expected_version must be an int >= 0 "
                f"(0: the key must not exist), not {expected_version!r}"
            )
        now = datetime.now(UTC)
        returning = (state.c.value, state.c.version, state.c.updated_at)
        row: sa.Row[Any] | None
        if expected_version is None or expected_version == 0:
            values = {
                "tenant_id": self.tenant_id,
                "namespace": namespace,
                "key": key,
                "value": value,
                "version": 1,
                "updated_at": now,
            }
            insert = _dialect_insert(self.conn)(state).values(**values)
            if expected_version == 0:
                stmt = insert.on_conflict_do_nothing(
                    index_elements=[state.c.tenant_id, state.c.namespace, state.c.key]
                )
            else:
                stmt = insert.on_conflict_do_update(
                    index_elements=[state.c.tenant_id, state.c.namespace, state.c.key],
                    set_={
                        "value": insert.excluded.value,
                        "version": state.c.version + 1,
                        "updated_at": insert.excluded.updated_at,
                    },
                )
            row = (await self.conn.execute(stmt.returning(*returning))).first()
        else:
            # Under READ COMMITTED a concurrent writer's UPDATE waits for the row lock and then
            # re-checks the version: exactly one of two racing compare-and-sets wins.
            row = (
                await self.conn.execute(
                    sa.update(state)
                    .where(
                        self._where(namespace),
                        state.c.key == key,
                        state.c.version == expected_version,
                    )
                    .values(value=value, version=state.c.version + 1, updated_at=now)
                    .returning(*returning)
                )
            ).first()
        if row is None:
            assert expected_version is not None  # an unconditional upsert always returns
            current = await self.get(namespace, key)
            raise StateConflictError(
                namespace, key, expected_version, None if current is None else current.version
            )
        return _entry(namespace, key, row)

    async def delete(self, namespace: str, key: str) -> bool:
        _check_key(namespace, key)
        result = await self.conn.execute(
            sa.delete(state).where(self._where(namespace), state.c.key == key)
        )
        return bool(result.rowcount)

    async def list(self, namespace: str, prefix: str = "") -> builtins.list[StateEntry]:
        _check_namespace(namespace)
        if not isinstance(prefix, str) or len(prefix) > MAX_KEY_LENGTH:
            raise InvalidStateError(f"state key prefix must be a str of at most {MAX_KEY_LENGTH}")
        stmt = sa.select(state.c.key, state.c.value, state.c.version, state.c.updated_at).where(
            self._where(namespace)
        )
        if prefix:
            # Not LIKE: SQLite's LIKE ignores ASCII case, and the prefix needs no escaping.
            stmt = stmt.where(sa.func.substr(state.c.key, 1, len(prefix)) == prefix)
        rows = (await self.conn.execute(stmt)).all()
        # Sorted here: PostgreSQL's collation and SQLite's binary order would differ.
        return sorted((_entry(namespace, r.key, r) for r in rows), key=lambda e: e.key)

    async def delete_namespace(self, namespace: str) -> int:
        """Remove every entry of ``namespace``; how many there were."""
        _check_namespace(namespace)
        result = await self.conn.execute(sa.delete(state).where(self._where(namespace)))
        return int(result.rowcount or 0)

    async def list_all(self) -> builtins.list[StateEntry]:
        """Every entry of the tenant, ordered by namespace and key."""
        rows = (
            await self.conn.execute(
                sa.select(
                    state.c.namespace,
                    state.c.key,
                    state.c.value,
                    state.c.version,
                    state.c.updated_at,
                ).where(state.c.tenant_id == self.tenant_id)
            )
        ).all()
        entries = (_entry(r.namespace, r.key, r) for r in rows)
        return sorted(entries, key=lambda e: (e.namespace, e.key))


class StateRepository:
    """State of the tenant in :func:`apix_core.tenant_context`, outside processing: each call is
    its own transaction (for ``apix extract state`` and operators)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def list(self, namespace: str | None = None) -> builtins.list[StateEntry]:
        """Entries of ``namespace``, or of every namespace, ordered by namespace and key."""
        tenant = require_tenant()
        async with self.db.transaction(tenant_id=tenant, write=False) as conn:
            store = SqlStateStore(conn, tenant)
            return await (store.list_all() if namespace is None else store.list(namespace))

    async def get(self, namespace: str, key: str) -> StateEntry | None:
        tenant = require_tenant()
        async with self.db.transaction(tenant_id=tenant, write=False) as conn:
            return await SqlStateStore(conn, tenant).get(namespace, key)

    async def reset(self, namespace: str, key: str | None = None) -> int:
        """Delete one key, or the whole namespace when ``key`` is None; rows deleted. The next
        run starts from scratch (e.g. a full load instead of an incremental one)."""
        tenant = require_tenant()
        async with self.db.transaction(tenant_id=tenant) as conn:
            store = SqlStateStore(conn, tenant)
            if key is None:
                return await store.delete_namespace(namespace)
            return int(await store.delete(namespace, key))


def check_state_value(namespace: str, key: str, value: Any) -> None:
    """Raise :class:`InvalidStateError` unless ``value`` is plain JSON (``None``, bool, int,
    finite float, str, list, dict with str keys) within :data:`MAX_STATE_DEPTH` and
    :data:`MAX_STATE_VALUE_BYTES`. Tuples, sets, datetimes and non-str keys are refused rather
    than converted: a value must read back as it was written."""
    problem = _json_problem(value, "", 0)
    if problem is not None:
        raise InvalidStateError(
            f"state value of {namespace!r}/{key!r} is not plain JSON: {problem}"
        )
    size = len(dump_json(value).encode())
    if size > MAX_STATE_VALUE_BYTES:
        raise InvalidStateError(
            f"state value of {namespace!r}/{key!r} is {size} bytes encoded, more than the "
            f"{MAX_STATE_VALUE_BYTES}-byte limit: state holds positions, not content"
        )


def _json_problem(value: Any, path: str, depth: int) -> str | None:
    """What makes ``value`` not plain JSON (with where, as ``value[...]``), or None."""
    if value is None or isinstance(value, bool | int | str):
        return None
    where = f"value{path}"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value!r} (not finite)"
    if depth >= MAX_STATE_DEPTH and isinstance(value, dict | list):
        return f"{where} is nested deeper than {MAX_STATE_DEPTH} levels (or is circular)"
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{where} has the {type(k).__name__} key {k!r} (JSON keys are str)"
            problem = _json_problem(v, f"{path}[{k!r}]", depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            problem = _json_problem(v, f"{path}[{i}]", depth + 1)
            if problem is not None:
                return problem
        return None
    return f"{where} is a {type(value).__name__}"


def _check_name(label: str, name: str, limit: int) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidStateError(f"state {label} must be a non-empty str, not {name!r}")
    if len(name) > limit:
        raise InvalidStateError(
            f"state {label} {name[:40]!r}... is {len(name)} characters, more than {limit}"
        )
    if "\x00" in name:
        # PostgreSQL text cannot hold NUL; SQLite could, and the backends would differ.
        raise InvalidStateError(f"state {label} {name!r} contains a NUL character")


def _check_namespace(namespace: str) -> None:
    _check_name("namespace", namespace, MAX_NAMESPACE_LENGTH)


def _check_key(namespace: str, key: str) -> None:
    _check_name("namespace", namespace, MAX_NAMESPACE_LENGTH)
    _check_name("key", key, MAX_KEY_LENGTH)


def _dialect_insert(conn: AsyncConnection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def _entry(namespace: str, key: str, row: Any) -> StateEntry:
    """An entry from a row with ``value``, ``version`` and ``updated_at``."""
    updated_at: datetime = row.updated_at
    if updated_at.tzinfo is None:  # SQLite stores no offset; apix writes UTC
        updated_at = updated_at.replace(tzinfo=UTC)
    return StateEntry(namespace, key, row.value, int(row.version), updated_at)


__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_NAMESPACE_LENGTH",
    "MAX_STATE_DEPTH",
    "MAX_STATE_VALUE_BYTES",
    "InvalidStateError",
    "SqlStateStore",
    "StateConflictError",
    "StateEntry",
    "StateRepository",
    "StateStore",
]
