"""Watermark persistence: where an incremental extraction got to, per (tenant, pipeline, key).

A row of ``apix_watermarks`` (migration 0006, under row-level security on PostgreSQL) holds the
highest cursor value durably written, the content hashes of the records at exactly that value
(see :mod:`apix_core.extract.incremental`) and, for a run its invocation's deadline cut short,
the position to resume from. Callers commit a watermark only after the output of the records
it covers is durably written; ``commit`` is a compare-and-set on ``version``, so two runs of one
pipeline cannot both move it (the second gets :class:`WatermarkConflictError`).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from apix_core.errors import ApixError, TransientError
from apix_core.store.database import Database
from apix_core.store.models import watermarks
from apix_core.store.state import check_state_value
from apix_core.tenancy import check_tenant_id, require_tenant

#: Column sizes of ``pipeline_id`` and ``key``.
MAX_PIPELINE_ID_LENGTH = 200
MAX_WATERMARK_KEY_LENGTH = 200
DEFAULT_KEY = "default"


class InvalidWatermarkError(ApixError):
    """A pipeline id, key or value that a watermark cannot hold."""

    code: ClassVar[str] = "INVALID_WATERMARK"


class WatermarkConflictError(TransientError):
    """Another run committed the watermark since this one loaded it (two runs of one pipeline
    at once): this run's position is stale, so it must not overwrite the other's."""

    code: ClassVar[str] = "WATERMARK_CONFLICT"

    def __init__(self, pipeline_id: str, key: str, expected: int, actual: int | None) -> None:
        found = "none" if actual is None else f"version {actual}"
        super().__init__(
            f"watermark {pipeline_id!r}/{key!r} moved while this run held version {expected} "
            f"(now {found}): another run of the pipeline committed first"
        )
        self.pipeline_id = pipeline_id
        self.key = key


@dataclass(frozen=True)
class Watermark:
    """One stored watermark; ``version`` 0 means nothing is stored yet."""

    pipeline_id: str
    key: str = DEFAULT_KEY
    last_value: Any = None
    boundary: tuple[str, ...] = ()
    position: Any = None
    version: int = 0
    updated_at: datetime | None = field(default=None, compare=False)


def _check_name(label: str, value: str, limit: int) -> None:
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        raise InvalidWatermarkError(
            f"watermark {label} must be a non-empty str of at most {limit} characters "
            f"without NUL, not {str(value)[:80]!r}"
        )


class SqlWatermarks:
    """Watermarks of one tenant on an open transaction (nothing commits here)."""

    def __init__(self, conn: AsyncConnection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = check_tenant_id(tenant_id)

    def _where(self, pipeline_id: str, key: str) -> sa.ColumnElement[bool]:
        return sa.and_(
            watermarks.c.tenant_id == self.tenant_id,
            watermarks.c.pipeline_id == pipeline_id,
            watermarks.c.key == key,
        )

    async def load(self, pipeline_id: str, key: str = DEFAULT_KEY) -> Watermark:
        _check_name("pipeline_id", pipeline_id, MAX_PIPELINE_ID_LENGTH)
        _check_name("key", key, MAX_WATERMARK_KEY_LENGTH)
        row = (
            await self.conn.execute(
                sa.select(
                    watermarks.c.last_value,
                    watermarks.c.boundary,
                    watermarks.c.position,
                    watermarks.c.version,
                    watermarks.c.updated_at,
                ).where(self._where(pipeline_id, key))
            )
        ).first()
        if row is None:
            return Watermark(pipeline_id, key)
        return _from_row(pipeline_id, key, row)

    async def commit(
        self,
        previous: Watermark,
        *,
        last_value: Any,
        boundary: tuple[str, ...] | builtins.list[str] = (),
        position: Any = None,
    ) -> Watermark:
        """Store the new watermark if the stored version is still ``previous.version``."""
        pid, key = previous.pipeline_id, previous.key
        _check_name("pipeline_id", pid, MAX_PIPELINE_ID_LENGTH)
        _check_name("key", key, MAX_WATERMARK_KEY_LENGTH)
        hashes = list(boundary)
        for label, value in (("last_value", last_value), ("position", position)):
            try:
                check_state_value(pid, key, value)
            except ApixError as exc:
                raise InvalidWatermarkError(f"watermark {label}: {exc}") from None
        now = datetime.now(UTC)
        values = {
            "last_value": last_value,
            "boundary": hashes,
            "position": position,
            "updated_at": now,
        }
        returning = (
            watermarks.c.last_value,
            watermarks.c.boundary,
            watermarks.c.position,
            watermarks.c.version,
            watermarks.c.updated_at,
        )
        if previous.version == 0:
            insert = _dialect_insert(self.conn)(watermarks).values(
                tenant_id=self.tenant_id, pipeline_id=pid, key=key, version=1, **values
            )
            stmt = insert.on_conflict_do_nothing(
                index_elements=[
                    watermarks.c.tenant_id,
                    watermarks.c.pipeline_id,
                    watermarks.c.key,
                ]
            )
        else:
            # Under READ COMMITTED a racing UPDATE waits for the row lock, then re-checks the
            # version: exactly one of two runs wins.
            stmt = (
                sa.update(watermarks)
                .where(self._where(pid, key), watermarks.c.version == previous.version)
                .values(version=watermarks.c.version + 1, **values)
            )
        row = (await self.conn.execute(stmt.returning(*returning))).first()
        if row is None:
            current = await self.load(pid, key)
            raise WatermarkConflictError(pid, key, previous.version, current.version or None)
        return _from_row(pid, key, row)

    async def delete(self, pipeline_id: str, key: str | None = None) -> int:
        _check_name("pipeline_id", pipeline_id, MAX_PIPELINE_ID_LENGTH)
        cond = sa.and_(
            watermarks.c.tenant_id == self.tenant_id, watermarks.c.pipeline_id == pipeline_id
        )
        if key is not None:
            cond = sa.and_(cond, watermarks.c.key == key)
        result = await self.conn.execute(sa.delete(watermarks).where(cond))
        return int(result.rowcount or 0)

    async def list(self, pipeline_id: str | None = None) -> builtins.list[Watermark]:
        stmt = sa.select(
            watermarks.c.pipeline_id,
            watermarks.c.key,
            watermarks.c.last_value,
            watermarks.c.boundary,
            watermarks.c.position,
            watermarks.c.version,
            watermarks.c.updated_at,
        ).where(watermarks.c.tenant_id == self.tenant_id)
        if pipeline_id is not None:
            stmt = stmt.where(watermarks.c.pipeline_id == pipeline_id)
        rows = (await self.conn.execute(stmt)).all()
        found = [_from_row(r.pipeline_id, r.key, r) for r in rows]
        return sorted(found, key=lambda w: (w.pipeline_id, w.key))


class WatermarkStore:
    """Watermarks of one tenant (``tenant_id=``, else :func:`apix_core.tenant_context`'s),
    each call its own transaction."""

    def __init__(self, db: Database, tenant_id: str | None = None) -> None:
        self.db = db
        self._tenant = tenant_id

    @property
    def tenant_id(self) -> str:
        return check_tenant_id(self._tenant) if self._tenant else require_tenant()

    async def load(self, pipeline_id: str, key: str = DEFAULT_KEY) -> Watermark:
        tenant = self.tenant_id
        async with self.db.transaction(tenant_id=tenant, write=False) as conn:
            return await SqlWatermarks(conn, tenant).load(pipeline_id, key)

    async def commit(
        self,
        previous: Watermark,
        *,
        last_value: Any,
        boundary: tuple[str, ...] | builtins.list[str] = (),
        position: Any = None,
    ) -> Watermark:
        tenant = self.tenant_id
        async with self.db.transaction(tenant_id=tenant) as conn:
            return await SqlWatermarks(conn, tenant).commit(
                previous, last_value=last_value, boundary=boundary, position=position
            )

    async def reset(self, pipeline_id: str, key: str | None = None) -> int:
        """Forget the watermark(s): the next run starts from ``initial_value`` (a full load)."""
        tenant = self.tenant_id
        async with self.db.transaction(tenant_id=tenant) as conn:
            return await SqlWatermarks(conn, tenant).delete(pipeline_id, key)

    async def list(self, pipeline_id: str | None = None) -> builtins.list[Watermark]:
        tenant = self.tenant_id
        async with self.db.transaction(tenant_id=tenant, write=False) as conn:
            return await SqlWatermarks(conn, tenant).list(pipeline_id)


def _from_row(pipeline_id: str, key: str, row: Any) -> Watermark:
    updated_at: datetime = row.updated_at
    if updated_at.tzinfo is None:  # SQLite stores no offset; apix writes UTC
        updated_at = updated_at.replace(tzinfo=UTC)
    return Watermark(
        pipeline_id,
        key,
        row.last_value,
        tuple(row.boundary or ()),
        row.position,
        int(row.version),
        updated_at,
    )


def _dialect_insert(conn: AsyncConnection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


__all__ = [
    "DEFAULT_KEY",
    "InvalidWatermarkError",
    "SqlWatermarks",
    "Watermark",
    "WatermarkConflictError",
    "WatermarkStore",
]
