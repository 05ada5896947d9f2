"""PostgreSQL row-level security (migration 0002), exercised as the non-owner role ``apix_app``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from apix_core import (
    App,
    FileOutputHandler,
    Message,
    ProcessingResult,
    ProcessorContext,
    tenant_context,
)
from apix_core.outbox import stale_rows
from apix_core.runtime import LocalRunner
from apix_core.store.database import Database
from apix_core.store.models import metadata

#: Every table with a ``tenant_id`` column, as the models declare them; the catalog test below
#: also finds any table of the database with such a column that the models forgot.
TENANT_TABLES = tuple(t.name for t in metadata.sorted_tables if "tenant_id" in t.c)
LOGIN_ROLE = "apix_test_app"


@pytest.fixture
def app_url(postgres_only: None, database_url: str) -> str:
    """The migrated test database as the suite's LOGIN member of ``apix_app`` (tests/conftest)."""
    return database_url


@pytest.fixture
async def app_db(app_url: str) -> AsyncIterator[Database]:
    database = Database(app_url)
    yield database
    await database.dispose()


async def test_every_tenant_table_has_forced_rls_and_the_tenant_policy(
    postgres_only: None, admin_db: Database
) -> None:
    # GIVEN a database migrated to head
    # WHEN the catalog is read
    async with admin_db.connect() as conn:
        with_tenant = set(
            (
                await conn.execute(
                    sa.text(
                        "SELECT table_name FROM information_schema.columns "
                        "WHERE table_schema = 'public' AND column_name = 'tenant_id'"
                    )
                )
            ).scalars()
        )
        flags = {
            r.relname: (r.relrowsecurity, r.relforcerowsecurity)
            for r in await conn.execute(
                sa.text(
                    "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                    "WHERE relname = ANY(:t)"
                ),
                {"t": list(TENANT_TABLES)},
            )
        }
        policies = {
            r.tablename: (r.cmd, r.qual, r.with_check)
            for r in await conn.execute(
                sa.text("SELECT tablename, cmd, qual, with_check FROM pg_policies")
            )
        }

    # THEN RLS is enabled and forced (the owner is subject too) with USING and WITH CHECK
    assert with_tenant == set(TENANT_TABLES)
    assert {"apix_dead_letters", "apix_state"} <= with_tenant
    assert flags == {t: (True, True) for t in TENANT_TABLES}
    assert set(policies) == set(TENANT_TABLES)
    for cmd, qual, check in policies.values():
        assert cmd == "ALL"
        assert "current_setting('apix.tenant_id'" in qual
        assert "bypass" not in qual  # migration 0007: no setting passes the policy
        assert qual == check


async def test_app_role_has_dml_rights_but_owns_nothing(
    postgres_only: None, admin_db: Database, role_attributes: Any
) -> None:
    # GIVEN a migrated database
    # WHEN the role and the table owners are read
    role = await role_attributes("apix_app")
    async with admin_db.connect() as conn:
        owners = set(
            (
                await conn.execute(
                    sa.text("SELECT tableowner FROM pg_tables WHERE tablename LIKE 'apix_%'")
                )
            ).scalars()
        )
        rights = (
            await conn.execute(
                sa.text(
                    "SELECT bool_and(has_table_privilege('apix_app', t, "
                    "'SELECT,INSERT,UPDATE,DELETE')) FROM unnest(CAST(:t AS text[])) AS t"
                ),
                {"t": list(TENANT_TABLES)},
            )
        ).scalar()

    # THEN apix_app is a plain NOLOGIN role with DML rights on tables it does not own
    assert tuple(role) == (False, False, False)
    assert "apix_app" not in owners
    assert rights is True


async def test_migration_is_idempotent_when_the_role_already_exists(
    postgres_only: None, admin_db: Database
) -> None:
    db = admin_db
    # GIVEN a database at head: the cluster-wide role exists
    # WHEN 0002 is rolled back and applied again
    from alembic import command
    from alembic.script import ScriptDirectory

    from apix_core.store.migrate import alembic_config

    async with db.connect() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0001"))
        await conn.commit()
    await db.upgrade()

    # THEN the schema is back at head with its policies
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert await db.current_revision() == head
    async with db.connect() as conn:
        count = (await conn.execute(sa.text("SELECT count(*) FROM pg_policies"))).scalar()
    assert count == len(TENANT_TABLES)


async def _seed_two_tenants(app_url: str, make_app, out_dir: Path) -> App:
    app: App = make_app("rls", database_url=app_url, queue_url=app_url, auto_migrate=False)

    @app.processor("ingest", consumes="in", produces=["out"])
    async def ingest(message: Message, ctx: ProcessorContext) -> dict:
        ctx.persist_entity(str(message.payload["id"]), "order", "shop", message.payload)
        return {"id": message.payload["id"]}

    @app.processor("sink", consumes="out")
    async def sink(message: Message, ctx: ProcessorContext) -> ProcessingResult:
        # Queue outputs go straight to the queue table (same database); a file output still
        # passes through the outbox, so every tenant table gets rows.
        return ProcessingResult.create_success(
            output_handlers=[FileOutputHandler(destination=str(out_dir))]
        )

    await app.start()
    for tenant in ("tenant-a", "tenant-b"):
        for i in range(3):
            await app.send("in", {"id": i}, tenant_id=tenant)
    stats = await LocalRunner(app).run()
    assert stats.completed == 12 and stats.dead_lettered == 0
    return app


async def test_app_runs_as_non_owner_and_sees_only_its_tenant(
    app_url: str, make_app, tmp_path: Path
) -> None:
    # GIVEN the pipeline ran as apix_app for tenants A and B
    app = await _seed_two_tenants(app_url, make_app, tmp_path)
    db = app.store.db

    # WHEN tenant A's session reads, updates and inserts tenant B's rows with raw SQL
    async with db.transaction(tenant_id="tenant-a") as conn:
        who = (await conn.execute(sa.text("SELECT current_user"))).scalar()
        visible = {
            t: (await conn.execute(sa.text(f"SELECT count(*) FROM {t}"))).scalar()
            for t in (
                "apix_entities",
                "apix_idempotency",
                "apix_outbox",
                "apix_state_transitions",
                "apix_entity_versions",
            )
        }
        of_b = (
            await conn.execute(
                sa.text("SELECT count(*) FROM apix_entities WHERE tenant_id = 'tenant-b'")
            )
        ).scalar()
        updated = (
            await conn.execute(
                sa.text("UPDATE apix_entities SET state = 'hacked' WHERE tenant_id = 'tenant-b'")
            )
        ).rowcount
        deleted = (
            await conn.execute(
                sa.text("DELETE FROM apix_idempotency WHERE tenant_id <> 'tenant-a'")
            )
        ).rowcount

    # THEN it is not the owner, sees only A's rows and changes nothing of B's
    assert who == LOGIN_ROLE
    assert visible == {
        "apix_entities": 3,
        "apix_idempotency": 6,
        "apix_outbox": 3,
        "apix_state_transitions": 3,
        "apix_entity_versions": 3,
    }
    assert of_b == 0 and updated == 0 and deleted == 0
    with tenant_context("tenant-b"):
        entities = await app.store.entities.list()
    assert len(entities) == 3 and {e.state for e in entities} != {"hacked"}


async def test_insert_with_another_tenants_id_fails_the_check(
    app_url: str, make_app, tmp_path: Path
) -> None:
    # GIVEN the app's database as apix_app
    app = await _seed_two_tenants(app_url, make_app, tmp_path)

    # WHEN tenant A inserts a row claiming tenant B
    # THEN the policy's WITH CHECK rejects it
    with pytest.raises(sa.exc.DBAPIError, match="row-level security"):
        async with app.store.db.transaction(tenant_id="tenant-a") as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO apix_idempotency (tenant_id, processor, message_id, status, "
                    "created_at) VALUES ('tenant-b', 'ingest', 'forged', 'completed', now())"
                )
            )


async def test_transaction_without_tenant_sees_nothing(
    app_url: str, make_app, tmp_path: Path
) -> None:
    # GIVEN rows of two tenants
    app = await _seed_two_tenants(app_url, make_app, tmp_path)

    # WHEN a transaction without tenant reads every tenant table
    async with app.store.db.transaction(write=False) as conn:
        counts = {
            t: (await conn.execute(sa.text(f"SELECT count(*) FROM {t}"))).scalar()
            for t in TENANT_TABLES
        }

    # THEN it sees no row at all
    assert counts == dict.fromkeys(TENANT_TABLES, 0)


async def test_sweeper_function_sees_every_tenant(app_db: Database) -> None:
    # GIVEN unsent outbox rows of two tenants, written under each tenant
    old = datetime(2020, 1, 1, tzinfo=UTC)
    for tenant in ("tenant-a", "tenant-b"):
        async with app_db.transaction(tenant_id=tenant) as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO apix_outbox (id, tenant_id, processor, source_message_id, seq, "
                    "kind, destination, body, delay_seconds, created_at) VALUES "
                    "(:id, :t, 'p', 'm', 0, 'queue', 'q', '{}', 0, :c)"
                ),
                {"id": f"row-{tenant}", "t": tenant, "c": old},
            )

    # WHEN the sweeper (no tenant) looks for stale rows, and a plain no-tenant read does too
    rows = await stale_rows(app_db, older_than_seconds=60)
    async with app_db.transaction(write=False) as conn:
        plain = (await conn.execute(sa.text("SELECT count(*) FROM apix_outbox"))).scalar()

    # THEN only the sweeper's function sees both tenants' rows
    assert sorted(r.tenant_id for r in rows) == ["tenant-a", "tenant-b"]
    assert plain == 0


async def test_retention_as_app_role_prunes_every_tenant(app_db: Database) -> None:
    # GIVEN sent outbox rows of two tenants, written by apix_app under each tenant
    from datetime import timedelta

    from apix_core.store.retention import RetentionPolicy, prune

    old = datetime(2020, 1, 1, tzinfo=UTC)
    for tenant in ("tenant-a", "tenant-b"):
        async with app_db.transaction(tenant_id=tenant) as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO apix_outbox (id, tenant_id, processor, source_message_id, seq, "
                    "kind, destination, body, delay_seconds, created_at, sent_at) VALUES "
                    "(:id, :t, 'p', 'm', 0, 'queue', 'q', NULL, 0, :c, :c)"
                ),
                {"id": f"row-{tenant}", "t": tenant, "c": old},
            )

    # WHEN retention runs (no tenant in scope) as the non-owner role
    report = await prune(
        app_db, older_than=timedelta(days=30), policy=RetentionPolicy(idempotency=False)
    )

    # THEN it reached both tenants' rows through apix_prune
    assert report.deleted["sent_outbox"] == 2


async def test_queued_messages_are_isolated_by_tenant(app_url: str, make_app) -> None:
    # GIVEN messages of tenants A and B waiting in the shared local queue, sent as apix_app
    app: App = make_app("rls-queue", database_url=app_url, queue_url=app_url, auto_migrate=False)
    await app.start()
    await app.send("in", {"secret": "of-a"}, tenant_id="tenant-a")
    await app.send("in", {"secret": "of-b"}, tenant_id="tenant-b")

    # WHEN tenant A's session reads and changes the queue table with raw SQL
    async with app.store.db.transaction(tenant_id="tenant-a") as conn:
        bodies = (await conn.execute(sa.text("SELECT body FROM apix_queue_messages"))).scalars()
        seen = [b for b in bodies]
        updated = (
            await conn.execute(
                sa.text("UPDATE apix_queue_messages SET body = '{}' WHERE tenant_id = 'tenant-b'")
            )
        ).rowcount
        deleted = (
            await conn.execute(
                sa.text("DELETE FROM apix_queue_messages WHERE tenant_id <> 'tenant-a'")
            )
        ).rowcount

    # THEN it sees only A's message, and B's is untouched (the worker still gets both)
    assert len(seen) == 1 and "of-a" in seen[0]
    assert updated == 0 and deleted == 0
    received = await app.transport.receive("in", 10)
    assert sorted("of-b" in m.body for m in received) == [False, True]


async def test_a_key_of_another_tenant_reveals_nothing(app_db: Database) -> None:
    # GIVEN tenant B's entity, written as apix_app
    now = datetime.now(UTC)
    insert = sa.text(
        "INSERT INTO apix_entities (id, tenant_id, external_id, canonical_type, source, version, "
        "content_hash, attributes, state, created_at, updated_at) VALUES "
        "('known-id', :t, :x, 'order', 'shop', 1, 'h', '{}', 'new', :now, :now)"
    )
    async with app_db.transaction(tenant_id="tenant-b") as conn:
        await conn.execute(insert, {"t": "tenant-b", "x": "of-b", "now": now})

    # WHEN tenant A inserts an entity with the same id (a probe for B's key)
    async with app_db.transaction(tenant_id="tenant-a") as conn:
        await conn.execute(insert, {"t": "tenant-a", "x": "of-a", "now": now})
        mine = (
            (
                await conn.execute(
                    sa.text("SELECT external_id FROM apix_entities WHERE id = 'known-id'")
                )
            )
            .scalars()
            .all()
        )

    # THEN the insert succeeds as A's own row (no duplicate key error tells A the id exists)
    assert mine == ["of-a"]
    async with app_db.transaction(tenant_id="tenant-b") as conn:
        theirs = (
            (
                await conn.execute(
                    sa.text("SELECT external_id FROM apix_entities WHERE id = 'known-id'")
                )
            )
            .scalars()
            .all()
        )
    assert theirs == ["of-b"]
