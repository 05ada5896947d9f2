"""Row-level security on ``apix_state`` (migration 0004), as the non-owner role ``apix_app``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from apix_core import tenant_context
from apix_core.store.database import Database
from apix_core.store.state import SqlStateStore, StateConflictError, StateRepository

#: The LOGIN member of ``apix_app`` of test_pg_rls.py (roles are cluster-wide, so both modules
#: share it; the fixture below is that module's, which pytest does not share across modules).
LOGIN_ROLE = "apix_app_login"


@pytest.fixture
async def app_db(backend: str, db: Database, database_url: str) -> AsyncIterator[Database]:
    """The migrated test database, connected as a LOGIN member of ``apix_app`` (not the owner)."""
    if backend != "postgres":
        pytest.skip("row-level security and roles exist on PostgreSQL only")
    async with db.connect() as conn:
        await conn.execute(
            sa.text(
                f"""
                DO $$ BEGIN
                    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{LOGIN_ROLE}') THEN
                        CREATE ROLE {LOGIN_ROLE} LOGIN IN ROLE apix_app;
                    END IF;
                EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                END $$
                """
            )
        )
        await conn.commit()
    scheme, rest = database_url.split("://", 1)
    database = Database(f"{scheme}://{LOGIN_ROLE}@{rest.split('@', 1)[1]}")
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


async def test_transaction_without_tenant_sees_no_state(app_db: Database) -> None:
    # GIVEN state of both tenants
    await _seed(app_db)

    # WHEN a transaction without tenant reads the table; then one on the maintenance path
    async with app_db.transaction(write=False) as conn:
        plain = (await conn.execute(sa.text("SELECT count(*) FROM apix_state"))).scalar()
    async with app_db.transaction(maintenance=True, write=False) as conn:
        maintenance = (await conn.execute(sa.text("SELECT count(*) FROM apix_state"))).scalar()

    # THEN only the maintenance path sees rows
    assert (plain, maintenance) == (0, 4)
