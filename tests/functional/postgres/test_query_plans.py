"""Query plans of the hot path stay keyed as tables grow from empty (no statistics)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from apix_core import App, Message, ProcessorContext
from apix_core.transport.base import ReceivedMessage


def _deliveries(prefix: str, ids: range, revision: int) -> list[ReceivedMessage]:
    out = []
    for i in ids:
        msg = Message(
            message_id=f"{prefix}-{i}", tenant_id="acme", payload={"id": i, "rev": revision}
        )
        out.append(
            ReceivedMessage("in", msg.message_id, msg.to_json(), attributes={"tenant_id": "acme"})
        )
    return out


async def _rows_scanned(dsn: str) -> dict[str, int]:
    """Rows read by sequential scans, per hot table (as the backends have reported them)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT relname, seq_tup_read FROM pg_stat_user_tables "
            "WHERE relname IN ('apix_entities', 'apix_queue_messages', 'apix_idempotency')"
        )
        return {r[0]: r[1] for r in rows}
    finally:
        await conn.close()


async def _index_rows_read(dsn: str) -> dict[str, int]:
    """Index entries read on apix_entities, per index (as the backends have reported them)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT indexrelname, idx_tup_read FROM pg_stat_user_indexes "
            "WHERE relname = 'apix_entities'"
        )
        return {r[0]: r[1] for r in rows}
    finally:
        await conn.close()


async def test_hot_path_never_scans_a_growing_table(
    backend: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend != "postgres":
        pytest.skip("plan caching is PostgreSQL's")
    # GIVEN an empty, never analysed database (autovacuum may be off, as on this machine) and
    # one pooled connection, so every batch reuses the same prepared statements: PostgreSQL
    # settles on a generic plan after five executions, while the table is still tiny
    monkeypatch.setenv("APIX_DB_POOL_SIZE", "1")
    app = App("plans", database_url=database_url, queue_url=database_url, tenant_id="acme")

    @app.processor("ingest", consumes="in", produces=["out"])
    async def ingest(message: Message, ctx: ProcessorContext) -> dict:
        ctx.persist_entity(str(message.payload["id"]), "item", "bench", message.payload)
        return {"id": message.payload["id"]}

    await app.start()
    assert app.transport is not None
    handler = app.handler("ingest")
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    before = await _rows_scanned(dsn)
    index_before = await _index_rows_read(dsn)

    # WHEN 600 new entities arrive in batches of 10, then each of them is updated, while a
    # consumer takes half as many messages from the output queue as arrive (the queue grows)
    for revision in (1, 2):
        for start in range(0, 600, 10):
            batch = _deliveries(f"r{revision}", range(start, start + 10), revision)
            outcomes = await handler.handle_batch(batch)
            assert {o.kind.value for o in outcomes} == {"completed"}
            received = await app.transport.receive("out", 5)
            assert len(received) == 5
            await app.transport.ack("out", received)
    await app.close()  # the backends exit and report their table statistics

    # THEN no statement read a hot table sequentially. Without enable_seqscan off, the cached
    # generic plans scan the whole growing table on every batch: the queue's receive and ack
    # read 36,900 rows here; the entity lookup, keyed by tenant too, read 89,700. A scan costs
    # about 0.1 ms at 10 rows and several ms at 10,000.
    after = before
    for _ in range(50):
        await asyncio.sleep(0.05)
        after = await _rows_scanned(dsn)
        if after != before:
            break
    assert {table: after[table] - before[table] for table in after} == dict.fromkeys(after, 0)
    # AND the entity lookups and updates read the key index by id: a few entries per entity
    # (600 entities, each looked up and written twice), never a walk of the tenant's entries
    # in an index led by the tenant (96,000 entries read here when they did)
    index_after = await _index_rows_read(dsn)
    read = {name: index_after[name] - index_before.get(name, 0) for name in index_after}
    assert read.get("uq_apix_entities_natural_key", 0) == 0, read
    assert sum(read.values()) < 10 * 600, read
