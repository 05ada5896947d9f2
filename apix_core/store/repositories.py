"""Tenant-scoped read access to the metadata store.

Every method reads the tenant from :func:`apix_core.tenant_context` and filters on it; there is
no way to pass a tenant explicitly, so a caller cannot forget the scope or cross it.
"""

from __future__ import annotations

import base64
import builtins
import json
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from apix_core.errors import EntityNotFoundError, InvalidCursorError
from apix_core.store.database import Database
from apix_core.store.lazy import lazy_module
from apix_core.store.types import Entity, EntityPage, EntityVersion, StateTransition
from apix_core.tenancy import require_tenant

if TYPE_CHECKING:
    import sqlalchemy as sa

    from apix_core.store import models as _m
else:
    # Loaded on first use: `Store` is built at start, its reads come later (store.lazy).
    sa = lazy_module("sqlalchemy")
    _m = lazy_module("apix_core.store.models")

if TYPE_CHECKING:
    from apix_core.outputs.base import OutboxRow
    from apix_core.processing.unit_of_work import ErrorRecord, KeptAnswer
    from apix_core.processor import ProcessorConfig
    from apix_core.store.unit_of_work import SqlUnitOfWork
    from apix_core.transport.base import Producer


class _Repository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _all(self, stmt: sa.Select[Any], tenant: str) -> list[sa.Row[Any]]:
        async with self.db.transaction(tenant_id=tenant, write=False) as conn:
            return list((await conn.execute(stmt)).all())


class EntityRepository(_Repository):
    async def get(self, entity_id: str) -> Entity:
        tenant = require_tenant()
        rows = await self._all(
            sa.select(_m.entities).where(
                _m.entities.c.tenant_id == tenant, _m.entities.c.id == entity_id
            ),
            tenant,
        )
        if not rows:
            raise EntityNotFoundError(f"no entity {entity_id!r} for tenant {tenant!r}")
        return Entity.model_validate(dict(rows[0]._mapping))

    async def find(self, canonical_type: str, source: str, external_id: str) -> Entity | None:
        tenant = require_tenant()
        rows = await self._all(
            sa.select(_m.entities).where(
                _m.entities.c.tenant_id == tenant,
                _m.entities.c.canonical_type == canonical_type,
                _m.entities.c.source == source,
                _m.entities.c.external_id == external_id,
            ),
            tenant,
        )
        return Entity.model_validate(dict(rows[0]._mapping)) if rows else None

    async def list(
        self,
        *,
        canonical_type: str | None = None,
        state: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[Entity]:
        tenant = require_tenant()
        stmt = sa.select(_m.entities).where(_m.entities.c.tenant_id == tenant)
        if canonical_type:
            stmt = stmt.where(_m.entities.c.canonical_type == canonical_type)
        if state:
            stmt = stmt.where(_m.entities.c.state == state)
        stmt = (
            stmt.order_by(_m.entities.c.updated_at.desc(), _m.entities.c.id)
            .limit(limit)
            .offset(offset)
        )
        return [Entity.model_validate(dict(r._mapping)) for r in await self._all(stmt, tenant)]

    async def page(
        self,
        *,
        canonical_type: str | None = None,
        state: str | None = None,
        source: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> EntityPage:
        """Entities newest first (by creation, which never changes, so a page boundary never
        moves while entities change state); ``cursor`` is a previous page's ``next_cursor``.
        Raises :class:`~apix_core.errors.InvalidCursorError` for a cursor it did not issue."""
        tenant = require_tenant()
        if type(limit) is not int or limit < 1:
            raise InvalidCursorError(f"limit must be a positive integer, not {limit!r}")
        stmt = sa.select(_m.entities).where(_m.entities.c.tenant_id == tenant)
        if canonical_type:
            stmt = stmt.where(_m.entities.c.canonical_type == canonical_type)
        if state:
            stmt = stmt.where(_m.entities.c.state == state)
        if source:
            stmt = stmt.where(_m.entities.c.source == source)
        if cursor:
            created, last_id = _decode_cursor(cursor)
            stmt = stmt.where(
                sa.or_(
                    _m.entities.c.created_at < created,
                    sa.and_(_m.entities.c.created_at == created, _m.entities.c.id < last_id),
                )
            )
        stmt = stmt.order_by(_m.entities.c.created_at.desc(), _m.entities.c.id.desc()).limit(
            limit + 1
        )
        items = [Entity.model_validate(dict(r._mapping)) for r in await self._all(stmt, tenant)]
        more = len(items) > limit
        items = items[:limit]
        return EntityPage(items, _encode_cursor(items[-1]) if more else None)

    async def count(self) -> int:
        tenant = require_tenant()
        rows = await self._all(
            sa.select(sa.func.count())
            .select_from(_m.entities)
            .where(_m.entities.c.tenant_id == tenant),
            tenant,
        )
        return int(rows[0][0])

    async def versions(self, entity_id: str) -> builtins.list[EntityVersion]:
        tenant = require_tenant()
        stmt = (
            sa.select(_m.entity_versions)
            .where(
                _m.entity_versions.c.tenant_id == tenant,
                _m.entity_versions.c.entity_id == entity_id,
            )
            .order_by(_m.entity_versions.c.version)
        )
        return [
            EntityVersion.model_validate(dict(r._mapping)) for r in await self._all(stmt, tenant)
        ]


def _encode_cursor(last: Entity) -> str:
    raw = json.dumps([last.created_at.isoformat(), last.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, last_id = json.loads(raw)
        when = datetime.fromisoformat(created)
        if not isinstance(last_id, str):
            raise ValueError(cursor)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise InvalidCursorError("invalid cursor: pass a next_cursor this API returned") from None
    return when, last_id


class StateRepository(_Repository):
    async def transitions(self, entity_id: str) -> list[StateTransition]:
        tenant = require_tenant()
        stmt = (
            sa.select(_m.state_transitions)
            .where(
                _m.state_transitions.c.tenant_id == tenant,
                _m.state_transitions.c.entity_id == entity_id,
            )
            .order_by(_m.state_transitions.c.id)
        )
        return [
            StateTransition.model_validate(dict(r._mapping)) for r in await self._all(stmt, tenant)
        ]


@dataclass(frozen=True)
class ProcessingErrorRecord:
    processor: str
    message_id: str | None
    entity_id: str | None
    error_code: str
    category: str
    error_message: str
    attempt: int
    final: bool
    created_at: datetime


@dataclass(frozen=True)
class ErrorSummary:
    """Errors of one processor and code within one time window."""

    window_start: datetime
    processor: str
    error_code: str
    category: str
    count: int
    final: int
    last_message: str


class ErrorRepository(_Repository):
    async def list(
        self, *, processor: str | None = None, limit: int = 100
    ) -> list[ProcessingErrorRecord]:
        tenant = require_tenant()
        stmt = sa.select(_m.processing_errors).where(_m.processing_errors.c.tenant_id == tenant)
        if processor:
            stmt = stmt.where(_m.processing_errors.c.processor == processor)
        stmt = stmt.order_by(_m.processing_errors.c.id.desc()).limit(limit)
        return [
            ProcessingErrorRecord(
                **{k: v for k, v in r._mapping.items() if k not in ("id", "tenant_id")}
            )
            for r in await self._all(stmt, tenant)
        ]

    async def summarize(
        self, *, since: datetime | None = None, window_seconds: int = 3600
    ) -> builtins.list[ErrorSummary]:
        """Errors grouped by time window, processor and error code, newest window first."""
        tenant = require_tenant()
        stmt = sa.select(_m.processing_errors).where(_m.processing_errors.c.tenant_id == tenant)
        if since is not None:
            stmt = stmt.where(_m.processing_errors.c.created_at >= since)
        rows = await self._all(stmt.order_by(_m.processing_errors.c.id), tenant)
        groups: dict[tuple[float, str, str, str], list[sa.Row[Any]]] = {}
        for r in rows:
            ts = r.created_at.timestamp()
            start = ts - ts % window_seconds
            groups.setdefault((start, r.processor, r.error_code, r.category), []).append(r)
        out = [
            ErrorSummary(
                window_start=datetime.fromtimestamp(start, rows_[0].created_at.tzinfo),
                processor=proc,
                error_code=code,
                category=cat,
                count=len(rows_),
                final=sum(1 for r in rows_ if r.final),
                last_message=rows_[-1].error_message,
            )
            for (start, proc, code, cat), rows_ in groups.items()
        ]
        out.sort(key=lambda s: (-s.window_start.timestamp(), -s.count))
        return out


class IdempotencyRepository(_Repository):
    async def is_completed(self, processor: str, message_id: str) -> bool:
        tenant = require_tenant()
        rows = await self._all(
            sa.select(_m.idempotency.c.status).where(
                _m.idempotency.c.tenant_id == tenant,
                _m.idempotency.c.processor == processor,
                _m.idempotency.c.message_id == message_id,
            ),
            tenant,
        )
        return bool(rows) and rows[0][0] == "completed"

    async def kept_answer(self, processor: str, message_id: str) -> KeptAnswer | None:
        """The answer kept with an HTTP request's claim (``None``: no claim, or a claim
        without an answer: made before migration 0008, or by a queue message)."""
        tenant = require_tenant()
        t = _m.idempotency
        rows = await self._all(
            sa.select(
                t.c.request_hash, t.c.response_status, t.c.response_headers, t.c.response_body
            ).where(
                t.c.tenant_id == tenant, t.c.processor == processor, t.c.message_id == message_id
            ),
            tenant,
        )
        if not rows or rows[0].response_status is None:
            return None
        from apix_core.processing.unit_of_work import KeptAnswer

        row = rows[0]
        return KeptAnswer(
            message_id,
            row.request_hash or "",
            int(row.response_status),
            row.response_headers,
            row.response_body,
        )

    async def pending_outbox(self) -> int:
        tenant = require_tenant()
        rows = await self._all(
            sa.select(sa.func.count())
            .select_from(_m.outbox)
            .where(_m.outbox.c.tenant_id == tenant, _m.outbox.c.sent_at.is_(None)),
            tenant,
        )
        return int(rows[0][0])


class Store:
    """The metadata store: one database, its repositories, and the processing hooks of
    :class:`apix_core.processing.unit_of_work.MetadataStore`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.entities = EntityRepository(db)
        self.states = StateRepository(db)
        self.errors = ErrorRepository(db)
        self.idempotency = IdempotencyRepository(db)

    def unit_of_work(
        self,
        *,
        tenant: str,
        processor: str,
        config: ProcessorConfig,
        message_ids: list[str],
        producer: Producer | None,
    ) -> AbstractAsyncContextManager[SqlUnitOfWork]:
        from apix_core.store.unit_of_work import sql_unit_of_work

        return sql_unit_of_work(
            self.db,
            tenant=tenant,
            processor=processor,
            config=config,
            message_ids=message_ids,
            producer=producer,
        )

    async def record_errors(
        self, tenant: str, processor: str, records: Sequence[ErrorRecord]
    ) -> None:
        from apix_core.store.unit_of_work import record_errors

        await record_errors(self.db, tenant, processor, records)

    async def mark_sent(self, rows: Sequence[OutboxRow]) -> None:
        from apix_core.outbox.repository import mark_sent

        await mark_sent(self.db, rows)
