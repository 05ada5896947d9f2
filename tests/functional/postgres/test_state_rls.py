"""Row-level security on ``apix_state`` (migration 0004), as the non-owner role ``apix_app``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from apix_core import tenant_context
from apix_core.store.database import Database
from apix_core.store.state import SqlStateStore, StateConflictError, StateRepository

#: The LOGIN member of ``apix_app`` the suite runs as (tests/conftest.py).
LOGIN_ROLE = "apix_test_app"


@pytest.fixture
async def app_db(backend: str, database_url: str) -> AsyncIterator[Database]:
    """The migrated test database as the suite's LOGIN member of ``apix_app`` (tests/conftest)."""
    if backend != "postgres":
        pytest.skip("row-level security and roles exist on PostgreSQL only")
    database = Database(database_url)
    yield database
    await database.dispose()


async def _seed(app_db: Database) -> None:
    for tenant in ("tenant-a", "tenant-b"):
        async with app_db.transaction(tenant_id=tenant) as conn:
            store = SqlStateStore(conn, tenant)
            await store.put("extract.orders", "watermark", f"{tenant}-w")
            await store.put("extract.orders", f"only-{tenant}", 1)


async def test_tenant_a_cannot_see_or_change_tenant_b_state(app_db: Database) -> None:
    # GIVEN state of tenants A and B, written by apix_app under each tenant
    await _seed(app_db)

    # WHEN tenant A's session reads, updates and deletes B's rows with raw SQL (no tenant filter)
    async with app_db.transaction(tenant_id="tenant-a") as conn:
        who = (await conn.execute(sa.text("SELECT current_user"))).scalar()
        visible = sorted(
            (await conn.execute(sa.text("SELECT tenant_id || '/' || key FROM apix_state")))
            .scalars()
            .all()
        )
        updated = (
            await conn.execute(
                sa.text(
                    "UPDATE apix_state SET value = '\"hacked\"', version = version + 1 "
                    "WHERE tenant_id = 'tenant-b'"
                )
            )
        ).rowcount
        deleted = (
            await conn.execute(sa.text("DELETE FROM apix_state WHERE tenant_id <> 'tenant-a'"))
        ).rowcount

    # THEN it is not the owner, sees only A's rows, and B's rows are unchanged
    assert who == LOGIN_ROLE
    assert visible == ["tenant-a/only-tenant-a", "tenant-a/watermark"]
    assert updated == 0 and deleted == 0
    with tenant_context("tenant-b"):
        b = await StateRepository(app_db).list("extract.orders")
    assert [(e.key, e.value, e.version) for e in b] == [
        ("only-tenant-b", 1, 1),
        ("watermark", "tenant-b-w", 1),
    ]


async def test_a_store_given_another_tenant_than_the_transaction_finds_and_writes_nothing(
    app_db: Database,
) -> None:
    # GIVEN state of both tenants
    await _seed(app_db)

    # WHEN a store for tenant B runs inside tenant A's transaction (a wiring mistake)
    async with app_db.transaction(tenant_id="tenant-a") as conn:
        wrong = SqlStateStore(conn, "tenant-b")
        got = await wrong.get("extract.orders", "watermark")
        listed = await wrong.list("extract.orders")
        removed = await wrong.delete("extract.orders", "watermark")
        with pytest.raises(StateConflictError):
            await wrong.put("extract.orders", "watermark", "x", expected_version=1)

    # THEN the policy hid B's rows from it, and writing one fails the WITH CHECK
    assert (got, listed, removed) == (None, [], False)
    with pytest.raises(sa.exc.DBAPIError, match="row-level security"):
        async with app_db.transaction(tenant_id="tenant-a") as conn:
            await SqlStateStore(conn, "tenant-b").put("extract.orders", "watermark", "forged")
    with tenant_context("tenant-b"):
        entry = await StateRepository(app_db).get("extract.orders", "watermark")
    assert entry is not None and (entry.value, entry.version) == ("tenant-b-w", 1)


async def test_transaction_without_tenant_sees_no_state(
    app_db: Database, admin_db: Database
) -> None:
    # GIVEN state of both tenants
    await _seed(app_db)

    # WHEN a transaction without tenant reads the table (even a maintenance one, even with the
    # old bypass setting); then the superuser does
    async with app_db.transaction(write=False) as conn:
        plain = (await conn.execute(sa.text("SELECT count(*) FROM apix_state"))).scalar()
    async with app_db.transaction(maintenance=True, write=False) as conn:
        await conn.execute(sa.text("SET LOCAL apix.bypass_rls = 'on'"))
        maintenance = (await conn.execute(sa.text("SELECT count(*) FROM apix_state"))).scalar()
    async with admin_db.connect() as conn:
        owner = (await conn.execute(sa.text("SELECT count(*) FROM apix_state"))).scalar()

    # THEN no application session sees a row; the rows are there
    assert (plain, maintenance, owner) == (0, 0, 4)
