"""Row-level security on ``apix_watermarks`` (migration 0006), as the non-owner ``apix_app``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from apix_core.extract.watermarks import SqlWatermarks, WatermarkStore
from apix_core.store.database import Database

#: The LOGIN member of ``apix_app`` shared with test_pg_rls.py and test_state_rls.py.
LOGIN_ROLE = "apix_test_app"


@pytest.fixture
async def app_db(backend: str, database_url: str) -> AsyncIterator[Database]:
    """The migrated test database as the suite's LOGIN member of ``apix_app`` (tests/conftest)."""
    if backend != "postgres":
        pytest.skip("row-level security and roles exist on PostgreSQL only")
    database = Database(database_url)
    yield database
    await database.dispose()


async def test_a_tenant_cannot_see_move_or_forge_another_tenants_watermark(
    app_db: Database,
) -> None:
    # GIVEN watermarks of tenants A and B, written by apix_app
    for tenant in ("tenant-a", "tenant-b"):
        store = WatermarkStore(app_db, tenant)
        await store.commit(await store.load("orders"), last_value=f"{tenant}-w")

    # WHEN tenant A's session reads and updates every row with raw SQL (no tenant filter)
    async with app_db.transaction(tenant_id="tenant-a") as conn:
        who = (await conn.execute(sa.text("SELECT current_user"))).scalar()
        visible = (
            (await conn.execute(sa.text("SELECT tenant_id FROM apix_watermarks"))).scalars().all()
        )
        updated = (
            await conn.execute(
                sa.text("UPDATE apix_watermarks SET version = 99 WHERE tenant_id = 'tenant-b'")
            )
        ).rowcount
        wrong = await SqlWatermarks(conn, "tenant-b").load("orders")

    # THEN it is not the owner, sees only its row, changes nothing of B's; forging B's fails
    assert who == LOGIN_ROLE
    assert visible == ["tenant-a"] and updated == 0 and wrong.version == 0
    with pytest.raises(sa.exc.DBAPIError, match="row-level security"):
        async with app_db.transaction(tenant_id="tenant-a") as conn:
            await SqlWatermarks(conn, "tenant-b").commit(wrong, last_value="forged")
    b = await WatermarkStore(app_db, "tenant-b").load("orders")
    assert (b.last_value, b.version) == ("tenant-b-w", 1)
