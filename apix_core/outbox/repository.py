"""The outbox table: rows written with the processing transaction, marked sent after dispatch.

A sent row keeps its metadata and loses its body.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from apix_core.outputs.base import OutboxRow, unpack_body
from apix_core.store.models import outbox
from apix_core.store.sql import (
    any_of,
    any_params,
    bind_value,
    insert_many,
    param,
    run_sqlite,
    sqlite_writer,
)

if TYPE_CHECKING:
    from apix_core.store.database import Database
    from apix_core.store.pg import WriteBundle

OUTBOX_COLUMNS = (
    "id",
    "tenant_id",
    "processor",
    "source_message_id",
    "seq",
    "kind",
    "destination",
    "body",
    "delay_seconds",
    "created_at",
)


async def insert_rows(
    conn: AsyncConnection, rows: Sequence[OutboxRow], bundle: WriteBundle | None = None
) -> None:
    """Insert outbox rows on ``conn``, or add them to a PostgreSQL write ``bundle``."""
    await insert_many(conn, outbox, OUTBOX_COLUMNS, [r.as_tuple() for r in rows], bundle=bundle)


async def pending_rows(
    conn: AsyncConnection, tenant_id: str, processor: str, message_ids: Sequence[str]
) -> list[OutboxRow]:
    """Unsent rows of already-completed messages (a redelivery re-dispatches them)."""
    if not message_ids:
        return []
    stmt = (
        sa.select(outbox)
        .where(
            outbox.c.tenant_id == tenant_id,
            outbox.c.processor == processor,
            outbox.c.source_message_id.in_(message_ids),
            outbox.c.sent_at.is_(None),
        )
        .order_by(outbox.c.source_message_id, outbox.c.seq)
    )
    return [_from_row(r) for r in (await conn.execute(stmt)).all()]


async def stale_rows(db: Database, older_than_seconds: float, limit: int = 500) -> list[OutboxRow]:
    """Unsent rows older than the threshold, of every tenant (for the sweeper)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
    async with db.transaction(write=False, maintenance=True) as conn:
        if db.is_postgres:
            # Cross-tenant by design: past row-level security through the SECURITY DEFINER
            # function of migration 0007 (an application session passes no tenant policy).
            stale = sa.text("SELECT * FROM apix_outbox_stale(:cutoff, :limit)").columns(*outbox.c)
            result = await conn.execute(stale, {"cutoff": cutoff, "limit": limit})
            return [_from_row(r) for r in result.all()]
        stmt = (
            sa.select(outbox)
            .where(outbox.c.sent_at.is_(None), outbox.c.created_at <= cutoff)
            .order_by(outbox.c.created_at)
            .limit(limit)
        )
        return [_from_row(r) for r in (await conn.execute(stmt)).all()]


async def mark_sent(db: Database, rows: Sequence[OutboxRow]) -> None:
    """Mark dispatched rows sent and erase their bodies (one transaction per tenant)."""
    if not rows:
        return
    by_tenant: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        by_tenant[r.tenant_id].append(r.id)
    now = datetime.now(UTC)
    dialect = db.dialect
    for tenant, ids in by_tenant.items():
        # By id only, the key's leading column: with `tenant_id = ? AND id IN (...)` both
        # planners may walk the tenant's rows in ix_apix_outbox_source instead (SQLite does;
        # PostgreSQL under a generic plan made without statistics). Ids derive from the
        # tenant, and row-level security confines PostgreSQL to the tenant's rows.
        async with db.transaction(tenant_id=tenant) as conn:
            sent_at = bind_value(conn.dialect, outbox, "sent_at", now)
            sql = f"UPDATE apix_outbox SET sent_at = {param(dialect, 1)}, body = NULL WHERE "
            sql += any_of(dialect, "id", len(ids), first=2)
            params = (sent_at, *any_params(dialect, ids))
            raw = sqlite_writer(conn)
            if raw is not None:  # SQLite: straight on the writer's sqlite3 connection
                run_sqlite(raw, sql, params)
            else:
                await conn.exec_driver_sql(sql, params)


def _from_row(r: sa.Row[Any]) -> OutboxRow:
    body, config = unpack_body(r.body or "")
    created = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=UTC)
    return OutboxRow(
        id=r.id,
        tenant_id=r.tenant_id,
        processor=r.processor,
        source_message_id=r.source_message_id,
        seq=r.seq,
        kind=r.kind,
        destination=r.destination,
        body=body,
        delay_seconds=r.delay_seconds,
        created_at=created,
        config=config,
    )
