"""Cross-tenant work without a bypass setting (migration 0007): SECURITY DEFINER functions owned
by ``apix_maintenance``, and an application session that sees only its tenant whatever it sets.

Every test runs as the suite's application role (a LOGIN member of ``apix_app``, see
tests/conftest.py); the catalog and migration checks read as the superuser.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from apix_core import App, Message, PermanentError, ProcessorContext, tenant_context
from apix_core.runtime import LocalRunner
from apix_core.store.database import Database
from apix_core.store.retention import RetentionPolicy, prune

#: Tables whose rows the seeded flow below writes for both tenants.
SEEDED = (
    "apix_queue_messages",
    "apix_dead_letters",
    "apix_state",
    "apix_watermarks",
    "apix_entities",
    "apix_idempotency",
    "apix_processing_errors",
)


async def _two_tenants(make_app: Any) -> App:
    """Queued messages, dead letters, state, watermarks and entities of tenants A and B."""
    app: App = make_app("sec")

    @app.processor("ingest", consumes="in")
    async def ingest(message: Message, ctx: ProcessorContext) -> None:
        if message.payload.get("bad"):
            raise PermanentError("refused")
        ctx.persist_entity(str(message.payload["id"]), "order", "shop", message.payload)
        await ctx.state.put("last", message.payload["id"])

    await app.start()
    for tenant in ("tenant-a", "tenant-b"):
        await app.send("in", {"id": 1}, tenant_id=tenant)
        await app.send("in", {"id": 2, "bad": True}, tenant_id=tenant)
    stats = await LocalRunner(app).run()
    assert (stats.completed, stats.dead_lettered) == (2, 2)
    for tenant in ("tenant-a", "tenant-b"):
        await app.send("waiting", {"secret": f"of-{tenant}"}, tenant_id=tenant)
        async with app.store.db.transaction(tenant_id=tenant) as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO apix_watermarks (tenant_id, pipeline_id, key, boundary, "
                    "version, updated_at) VALUES (:t, 'p', 'k', '[]', 1, now())"
                ),
                {"t": tenant},
            )
    return app


async def test_the_bypass_setting_does_nothing(postgres_only: None, make_app: Any) -> None:
    # GIVEN rows of tenants A and B in every kind of table, written as the application role
    app = await _two_tenants(make_app)
    db = app.store.db

    # WHEN tenant A's session, and a session without tenant, set apix.bypass_rls and read
    async with db.transaction(tenant_id="tenant-a") as conn:
        await conn.execute(sa.text("SELECT set_config('apix.bypass_rls', 'on', true)"))
        await conn.execute(sa.text("SET LOCAL apix.bypass_rls = 'on'"))
        who = (await conn.execute(sa.text("SELECT current_user"))).scalar()
        as_a = {
            t: sorted(
                (await conn.execute(sa.text(f"SELECT DISTINCT tenant_id FROM {t}"))).scalars()
            )
            for t in SEEDED
        }
    async with db.transaction() as conn:
        await conn.execute(sa.text("SET LOCAL apix.bypass_rls = 'on'"))
        untenanted = {
            t: (await conn.execute(sa.text(f"SELECT count(*) FROM {t}"))).scalar() for t in SEEDED
        }

    # THEN A sees only its own rows and the tenantless session none: the setting is inert
    assert who == "apix_test_app"
    assert as_a == {t: ["tenant-a"] for t in SEEDED}
    assert untenanted == dict.fromkeys(SEEDED, 0)


async def test_the_functions_are_not_executable_by_public(
    postgres_only: None, admin_db: Database
) -> None:
    # GIVEN a database at head
    async with admin_db.connect() as conn:
        # WHEN the catalog describes apix's functions
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT p.proname, p.prosecdef, pg_get_userbyid(p.proowner) AS owner, "
                    "p.proconfig, has_function_privilege('public', p.oid, 'EXECUTE') AS public, "
                    "has_function_privilege('apix_app', p.oid, 'EXECUTE') AS app "
                    "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE n.nspname = current_schema() AND p.proname LIKE 'apix\\_%'"
                )
            )
        ).all()

    # THEN each is SECURITY DEFINER, owned by apix_maintenance, has its search_path pinned,
    # and only apix_app (not PUBLIC) may execute it
    names = {r.proname for r in rows}
    assert {"apix_queue_receive", "apix_queue_ack", "apix_dead_letter_replay"} <= names
    assert {"apix_outbox_stale", "apix_prune", "apix_dead_letters_list"} <= names
    for r in rows:
        assert r.prosecdef and r.owner == "apix_maintenance", r.proname
        assert any(c.startswith("search_path=") for c in r.proconfig), r.proname
        assert (r.public, r.app) == (False, True), r.proname


async def test_a_role_outside_apix_app_cannot_call_them(
    postgres_only: None, admin_database_url: str
) -> None:
    # GIVEN a LOGIN role that is not a member of apix_app
    admin = Database(admin_database_url)
    async with admin.connect() as conn:
        await conn.execute(
            sa.text(
                "DO $$ BEGIN CREATE ROLE apix_test_outsider LOGIN; "
                "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            )
        )
        await conn.commit()
    await admin.dispose()
    scheme, rest = admin_database_url.split("://", 1)
    outsider = Database(f"{scheme}://apix_test_outsider@{rest.rpartition('@')[2]}")

    # WHEN it calls the queue's receive function
    # THEN PostgreSQL refuses
    try:
        with pytest.raises(sa.exc.DBAPIError, match="permission denied"):
            async with outsider.transaction() as conn:
                await conn.execute(sa.text("SELECT * FROM apix_queue_receive('in', 0, 'x', 0, 1)"))
    finally:
        await outsider.dispose()


async def test_the_maintenance_role_bypasses_rls_and_cannot_log_in(
    postgres_only: None, admin_db: Database, role_attributes: Any
) -> None:
    # GIVEN a database at head
    # WHEN the role is read
    role = await role_attributes("apix_maintenance")
    async with admin_db.connect() as conn:
        owned = (
            await conn.execute(
                sa.text("SELECT count(*) FROM pg_tables WHERE tableowner = 'apix_maintenance'")
            )
        ).scalar()

    # THEN it passes row-level security, cannot log in, is no superuser and owns no table
    assert (role.bypass_rls, role.login, role.superuser) == (True, False, False)
    assert owned == 0


async def test_peek_never_hands_out_a_receipt(postgres_only: None, make_app: Any) -> None:
    # GIVEN a received (in-flight) message
    app: App = make_app("peek")
    await app.start()
    await app.send("in", {"id": 1}, tenant_id="tenant-a")
    received = await app.transport.receive("in", 1)

    # WHEN another session peeks at the queue through the function
    async with app.store.db.transaction() as conn:
        columns = list(
            (await conn.execute(sa.text("SELECT * FROM apix_queue_peek('in', 10)"))).keys()
        )
    peeked = await app.transport.peek("in")  # type: ignore[attr-defined]

    # THEN it learns the message is in flight, never the receipt that would settle it
    assert "receipt" not in columns
    assert [p.state for p in peeked] == ["in flight"]
    assert received and received[0].receipt not in repr(peeked)


async def test_the_whole_flow_runs_as_the_application_role(
    postgres_only: None, make_app: Any
) -> None:
    # GIVEN an app on the suite's application role: one good and one refused message per tenant
    app = await _two_tenants(make_app)
    db = app.store.db
    async with db.transaction() as conn:
        who = (await conn.execute(sa.text("SELECT current_user"))).scalar()
    transport: Any = app.transport

    # WHEN the dead letters are listed, counted, replayed, and retention runs
    letters = await transport.list_dead_letters("in")
    count = await transport.count_dead_letters("in")
    depth = await transport.depth("waiting")
    replayed = await transport.replay_dead_letter(letters[0].id)
    requeued = await transport.depth("in")
    await transport.delete_dead_letter(letters[1].id)
    left = await transport.count_dead_letters()
    report = await prune(
        db, older_than=timedelta(0), policy=RetentionPolicy(idempotency=False), now=None
    )

    # THEN everything worked without any bypass: both tenants' dead letters, the replayed
    # message back on its queue, history pruned across tenants
    assert who == "apix_test_app"
    assert sorted(d.tenant_id for d in letters) == ["tenant-a", "tenant-b"]
    assert count == 2 and depth.visible == 2
    assert replayed == letters[0].message_id and requeued.visible == 1
    assert left == 1
    assert report.deleted["processing_errors"] == 2
    assert report.deleted["replayed_dead_letters"] == 1
    assert await transport.count_dead_letters() == 0
    with tenant_context("tenant-a"):
        assert len(await app.store.entities.list()) == 1


async def test_downgrade_restores_0006_and_upgrade_comes_back(
    postgres_only: None, admin_db: Database
) -> None:
    # GIVEN a database at head
    from alembic import command

    from apix_core.store.migrate import alembic_config

    async def catalog() -> tuple[int, set[str]]:
        async with admin_db.connect() as conn:
            functions = (
                await conn.execute(
                    sa.text("SELECT count(*) FROM pg_proc WHERE proname = 'apix_queue_receive'")
                )
            ).scalar()
            quals = set((await conn.execute(sa.text("SELECT qual FROM pg_policies"))).scalars())
        return int(functions or 0), quals

    # WHEN 0007 is rolled back, then applied again
    async with admin_db.connect() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0006"))
        await conn.commit()
    down = await catalog()
    await admin_db.upgrade()
    up = await catalog()

    # THEN 0006 had no functions and the bypass clause; head has the functions and not the clause
    assert down[0] == 0 and all("apix.bypass_rls" in q for q in down[1])
    assert up[0] == 1 and not any("bypass" in q for q in up[1])
    assert len(up[1]) == 1  # one predicate, the same on every table
