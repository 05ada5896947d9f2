"""Message identity includes the tenant: one tenant's id never suppresses another's message."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from apix_core import App, Message, ProcessorContext
from apix_core.runtime import LocalRunner
from apix_core.store.database import Database
from apix_core.store.models import entities, entity_versions, outbox
from apix_core.transport.base import OutgoingMessage
from apix_core.transport.local import LocalTransport


async def test_two_tenants_sending_one_message_id_are_both_delivered(make_app: Any) -> None:
    # GIVEN an app whose processor records which tenant it saw
    app: App = make_app("identity")
    seen: list[tuple[str, str]] = []

    @app.processor("ingest", consumes="orders")
    async def ingest(message: Message, ctx: ProcessorContext) -> None:
        seen.append((ctx.tenant_id, message.payload["who"]))

    await app.start()
    # WHEN tenants acme and globex send the same message id
    await app.send("orders", {"who": "acme"}, tenant_id="acme", message_id="m-1")
    await app.send("orders", {"who": "globex"}, tenant_id="globex", message_id="m-1")
    await LocalRunner(app).run()
    # THEN both messages are delivered and processed, each under its own tenant
    assert sorted(seen) == [("acme", "acme"), ("globex", "globex")]


async def test_the_local_queue_deduplicates_per_tenant(queue_url: str) -> None:
    # GIVEN a local queue
    db = Database(queue_url)
    await db.upgrade()
    transport = LocalTransport(db, owns_database=True)
    try:
        # WHEN two tenants send one id, and one of them sends it again
        await transport.send("q", OutgoingMessage("m-1", '{"t":"a"}', tenant_id="a"))
        await transport.send("q", OutgoingMessage("m-1", '{"t":"b"}', tenant_id="b"))
        await transport.send("q", OutgoingMessage("m-1", '{"t":"a"}', tenant_id="a"))
        # THEN each tenant's message is queued once
        bodies = sorted(m.body for m in await transport.receive("q", 10))
        assert bodies == ['{"t":"a"}', '{"t":"b"}']
    finally:
        await transport.close()


def _rows(tenant: str, now: datetime) -> dict[sa.Table, dict[str, Any]]:
    """One row per keyed tenant table, with keys every tenant would share."""
    return {
        entities: {
            "id": "shared-id",
            "tenant_id": tenant,
            "external_id": f"x-{tenant}",
            "canonical_type": "order",
            "source": "shop",
            "version": 1,
            "content_hash": "h",
            "attributes": {"owner": tenant},
            "state": "new",
            "created_at": now,
            "updated_at": now,
        },
        entity_versions: {
            "tenant_id": tenant,
            "entity_id": "shared-id",
            "version": 1,
            "content_hash": "h",
            "attributes": {"owner": tenant},
            "created_at": now,
        },
        outbox: {
            "id": "shared-id",
            "tenant_id": tenant,
            "processor": "p",
            "source_message_id": "m-1",
            "seq": 0,
            "kind": "queue",
            "destination": "q",
            "body": tenant,
            "created_at": now,
        },
    }


async def test_a_key_another_tenant_holds_is_a_separate_row(db: Database) -> None:
    # GIVEN tenant globex's entity, entity version and outbox row
    now = datetime.now(UTC)
    async with db.transaction(tenant_id="globex") as conn:
        for table, row in _rows("globex", now).items():
            await conn.execute(sa.insert(table).values(**row))
    # WHEN tenant acme inserts rows with the very same keys
    async with db.transaction(tenant_id="acme") as conn:
        for table, row in _rows("acme", now).items():
            await conn.execute(sa.insert(table).values(**row))
    # THEN each is a row of its own (no duplicate key revealing globex's), and globex's is intact
    for tenant in ("acme", "globex"):
        async with db.transaction(tenant_id=tenant) as conn:
            for table in (entities, entity_versions, outbox):
                owners = (
                    await conn.execute(sa.select(table).where(table.c.tenant_id == tenant))
                ).all()
                assert len(owners) == 1, (table.name, tenant)
