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


async def _entity_scans(dsn: str) -> tuple[int, int]:
    """(sequential scans, rows they read) of apix_entities, once the app's backends reported."""
    conn = await asyncpg.connect(dsn)
    try:
        return tuple(
            await conn.fetchrow(
                "SELECT seq_scan, seq_tup_read FROM pg_stat_user_tables "
                "WHERE relname = 'apix_entities'"
            )
        )  # type: ignore[return-value]
    finally:
        await conn.close()


async def test_entity_lookups_and_updates_never_scan_the_table(
    backend: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend != "postgres":
        pytest.skip("plan caching is PostgreSQL's")
    # GIVEN an empty, never analysed database (autovacuum may be off, as on this machine) and
    # one pooled connection, so every batch reuses the same prepared statements: PostgreSQL
    # settles on a generic plan after five executions, while the table is still tiny
    monkeypatch.setenv("APIX_DB_POOL_SIZE", "1")
    app = App("plans", database_url=database_url, queue_url=database_url, tenant_id="acme")

    @app.processor("ingest", consumes="in")
    async def ingest(message: Message, ctx: ProcessorContext) -> None:
        ctx.persist_entity(str(message.payload["id"]), "item", "bench", message.payload)

    await app.start()
    handler = app.handler("ingest")
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    before = await _entity_scans(dsn)

    # WHEN 600 new entities arrive in batches of 10, then each of them is updated
    for revision in (1, 2):
        for start in range(0, 600, 10):
            batch = _deliveries(f"r{revision}", range(start, start + 10), revision)
            outcomes = await handler.handle_batch(batch)
            assert {o.kind.value for o in outcomes} == {"completed"}
    await app.close()  # the backends exit and report their table statistics

    # THEN no lookup or update read the table sequentially (without the fix: 183 scans reading
    # 89,700 rows, one scan of the whole growing table per batch; a scan costs about 0.1 ms at
    # 10 rows and several ms at 10,000). A few statements of the start-up ran on the empty table.
    after = before
    for _ in range(50):
        await asyncio.sleep(0.05)
        after = await _entity_scans(dsn)
        if after != before:
            break
    seq_scans, rows_read = after[0] - before[0], after[1] - before[1]
    assert rows_read == 0
    assert seq_scans < 10
