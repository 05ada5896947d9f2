"""Migration 0008: the purge functions delete at most 10,000 rows a call, the local transport
calls them until a purge is complete (each call its own transaction), and the downgrade to 0007
restores the uncapped purges and drops the kept HTTP answers' columns.

Rows are seeded as the superuser (``generate_series``: tens of thousands in one statement); the
purges run as the suite's application role, through the functions, like ``apix queues purge``
and ``apix dlq purge``.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from apix_core import App
from apix_core.store.database import Database
from apix_core.store.sql import PG_MAX_ROWS

ROWS = 2 * PG_MAX_ROWS + 345


@pytest.fixture
def postgres_only(backend: str) -> None:
    if backend != "postgres":
        pytest.skip("the maintenance functions exist on PostgreSQL only")


async def _seed(admin_db: Database, queue: str, rows: int) -> None:
    async with admin_db.connect() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO apix_queue_messages (queue, tenant_id, message_id, body, "
                "enqueued_at, visible_at) SELECT :q, 't', 'm-' || i, '{}', 0, 0 "
                "FROM generate_series(1, :n) AS i"
            ),
            {"q": queue, "n": rows},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO apix_dead_letters (queue, message_id, tenant_id, body, attributes, "
                "error_code, error_category, error_message, attempts, created_at) "
                "SELECT :q, 'm-' || i, 't', '{}', '{}', 'E', 'unexpected', 'x', 1, now() "
                "FROM generate_series(1, :n) AS i"
            ),
            {"q": queue, "n": rows},
        )
        await conn.commit()


async def _count(admin_db: Database, table: str, queue: str) -> int:
    async with admin_db.connect() as conn:
        sql = sa.text(f"SELECT count(*) FROM {table} WHERE queue = :q")
        return int((await conn.execute(sql, {"q": queue})).scalar_one())


async def test_one_call_deletes_at_most_the_cap(postgres_only: None, admin_db: Database) -> None:
    # GIVEN more rows than the cap on a queue and its dead letters
    await _seed(admin_db, "bulk", PG_MAX_ROWS + 7)

    # WHEN each purge function is called once
    async with admin_db.connect() as conn:
        queue = (await conn.execute(sa.text("SELECT apix_queue_purge('bulk')"))).scalar_one()
        dead = (
            await conn.execute(
                sa.text("SELECT apix_dead_letters_purge('bulk', NULL, NULL, NULL, NULL)")
            )
        ).scalar_one()
        await conn.commit()

    # THEN each deleted the cap and left the rest
    assert (queue, dead) == (PG_MAX_ROWS, PG_MAX_ROWS)
    assert await _count(admin_db, "apix_queue_messages", "bulk") == 7
    assert await _count(admin_db, "apix_dead_letters", "bulk") == 7


async def test_a_purge_larger_than_the_cap_completes(
    postgres_only: None, make_app: Any, admin_db: Database
) -> None:
    # GIVEN more than twice the cap of messages and dead letters, and another queue's
    app: App = make_app("purge")
    await app.start()
    await _seed(admin_db, "bulk", ROWS)
    await _seed(admin_db, "other", 3)
    transport: Any = app.transport

    # WHEN the application role purges the queue and its dead letters
    purged = await transport.purge("bulk")
    dead = await transport.purge_dead_letters("bulk")

    # THEN every row went, over several bounded calls, and the other queue's rows stayed
    assert (purged, dead) == (ROWS, ROWS)
    assert await _count(admin_db, "apix_queue_messages", "bulk") == 0
    assert await _count(admin_db, "apix_dead_letters", "bulk") == 0
    assert await _count(admin_db, "apix_queue_messages", "other") == 3
    assert await _count(admin_db, "apix_dead_letters", "other") == 3


async def test_downgrade_to_0007_restores_the_uncapped_purges(
    postgres_only: None, admin_db: Database
) -> None:
    # GIVEN more rows than the cap, and the store downgraded to 0007
    from alembic import command

    from apix_core.store.migrate import alembic_config

    await _seed(admin_db, "bulk", PG_MAX_ROWS + 7)
    await admin_db.run_migration(lambda c: command.downgrade(alembic_config(c), "0007"))

    # WHEN the queue purge is called once, then the store upgraded again
    async with admin_db.connect() as conn:
        purged = (await conn.execute(sa.text("SELECT apix_queue_purge('bulk')"))).scalar_one()
        await conn.commit()
    await admin_db.upgrade()

    # THEN 0007's function deleted everything in one call; head is back
    assert purged == PG_MAX_ROWS + 7
    assert await admin_db.current_revision() == "0008"
