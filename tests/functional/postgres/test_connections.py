"""Connection handling: warm-function reuse, a new event loop per invocation, clear failures."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from apix_core import App, Message, ProcessorContext, tenant_context
from apix_core.errors import DatabaseUnavailableError
from apix_core.runtime import LocalRunner
from apix_core.store.database import Database


def test_same_app_works_across_several_asyncio_runs(database_url: str, queue_url: str) -> None:
    # GIVEN one App and Database kept between invocations, as in a warm serverless function
    app = App("warm", database_url=database_url, queue_url=queue_url, tenant_id="acme")

    @app.processor("ingest", consumes="in")
    async def ingest(message: Message, ctx: ProcessorContext) -> None:
        ctx.persist_entity(str(message.payload["id"]), "order", "shop", message.payload)

    async def invocation(i: int) -> int:
        await app.send("in", {"id": i}, tenant_id="acme")
        stats = await LocalRunner(app, fire_schedules=False).run()
        with tenant_context("acme"):
            return stats.completed + 1000 * await app.store.entities.count()

    # WHEN each invocation runs under its own event loop (asyncio.run per call)
    results = [asyncio.run(invocation(i)) for i in range(4)]
    asyncio.run(app.close())

    # THEN every invocation processed its message and saw the previous ones' entities
    assert results == [1001, 2001, 3001, 4001]


async def test_warm_invocation_reuses_pooled_connections(backend: str, database_url: str) -> None:
    if backend != "postgres":
        pytest.skip("SQLite has no server connections to pool")
    # GIVEN a Database with a small pool
    db = Database(database_url, pool_size=1)

    # WHEN several transactions run one after another in one invocation
    pids = set()
    for _ in range(5):
        async with db.transaction(tenant_id="acme", write=False) as conn:
            pids.add((await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar())
    await db.dispose()

    # THEN they all used the same server connection
    assert len(pids) == 1


async def test_transactions_keep_their_connection_clean_between_uses(
    backend: str, database_url: str
) -> None:
    if backend != "postgres":
        pytest.skip("SQLite has no server connections to keep")
    # GIVEN a Database; one transaction fails half-way, with its tenant set
    db = Database(database_url, pool_size=2)
    with pytest.raises(RuntimeError):
        async with db.transaction(tenant_id="acme") as conn:
            await conn.execute(sa.text("SELECT 1"))
            raise RuntimeError("boom")

    # WHEN the following transactions run, for another tenant and none
    seen = []
    for tenant in ("globex", None, "globex"):
        async with db.transaction(tenant_id=tenant) as conn:
            row = (
                await conn.execute(
                    sa.text(
                        "SELECT pg_backend_pid(), current_setting('apix.tenant_id', true), "
                        "current_setting('enable_seqscan')"
                    )
                )
            ).one()
            seen.append(tuple(row))
    async with db.transaction(tenant_id="acme", maintenance=True) as conn:
        maintenance_seqscan = (await conn.execute(sa.text("SHOW enable_seqscan"))).scalar()
    await db.dispose()

    # THEN each saw only its own settings (nothing leaks between transactions on a kept
    # connection), and the successful ones reused one server connection
    assert [(tenant, seqscan) for _, tenant, seqscan in seen] == [
        ("globex", "off"),
        ("", "off"),
        ("globex", "off"),
    ]
    assert len({pid for pid, _, _ in seen}) == 1
    assert maintenance_seqscan == "on"


def test_kept_connections_go_back_to_the_pool_when_the_loop_ends(database_url: str) -> None:
    # GIVEN a Database used by invocations that each run under asyncio.run
    db = Database(database_url)

    async def invocation() -> None:
        async with db.transaction(tenant_id="acme") as conn:
            await conn.execute(sa.text("SELECT 1"))

    # WHEN the loops end with a connection kept for the next transaction
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(invocation())
        asyncio.run(invocation())
        asyncio.run(db.dispose())
        gc.collect()

    # THEN it was returned to the pool in time: SQLAlchemy never had to drop a connection
    # that was still checked out
    assert [str(w.message) for w in caught if "non-checked-in" in str(w.message)] == []


def test_database_detects_a_new_event_loop(database_url: str) -> None:
    # GIVEN a Database used under one event loop, which is then closed
    db = Database(database_url)

    async def touch() -> int:
        async with db.transaction(tenant_id="acme") as conn:
            return int((await conn.execute(sa.text("SELECT 1"))).scalar())

    first_engine_results = asyncio.run(touch())
    engine_before = db.engine

    # WHEN it is used from a second, fresh event loop
    second = asyncio.run(touch())
    asyncio.run(db.dispose())

    # THEN it rebuilt its engine and works
    assert (first_engine_results, second) == (1, 1)
    assert db.engine is not engine_before


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections but never speaks (a hung database or proxy)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


@pytest.mark.timeout(60)
async def test_closed_port_raises_database_unavailable(backend: str) -> None:
    if backend != "postgres":
        pytest.skip("network failures concern the PostgreSQL backend")
    # GIVEN a database URL whose port is closed
    db = Database(f"postgresql://postgres@127.0.0.1:{_closed_port()}/apix", timeout=1.0)

    # WHEN a transaction starts / THEN a clear, typed error names the target
    with pytest.raises(DatabaseUnavailableError, match=r"127\.0\.0\.1"):
        async with db.transaction(tenant_id="acme"):
            pass
    await db.dispose()


@pytest.mark.timeout(60)
async def test_unresponsive_server_raises_database_unavailable(
    backend: str, silent_server: int
) -> None:
    if backend != "postgres":
        pytest.skip("network failures concern the PostgreSQL backend")
    # GIVEN a server that accepts TCP but never answers the PostgreSQL handshake
    db = Database(f"postgresql://postgres@127.0.0.1:{silent_server}/apix", timeout=1.0)

    # WHEN a transaction starts / THEN it fails with the typed error instead of hanging
    with pytest.raises(DatabaseUnavailableError):
        async with db.transaction(tenant_id="acme"):
            pass
    await db.dispose()


async def _named_statements_after_work(database_url: str, *, pgbouncer: bool) -> tuple[int, str]:
    db = Database(database_url, pool_size=1, pgbouncer=pgbouncer)
    for i in range(5):
        async with db.transaction(tenant_id="acme") as conn:
            await conn.execute(
                sa.text("SELECT count(*) FROM apix_entities WHERE external_id = :x"), {"x": str(i)}
            )
    async with db.transaction(tenant_id="acme", write=False) as conn:
        # The statement running this query is itself prepared; count only the leftovers.
        left = (
            await conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_prepared_statements "
                    "WHERE statement NOT LIKE '%pg_prepared_statements%'"
                )
            )
        ).scalar()
    async with db.connect() as conn:
        tenant_outside = (
            await conn.execute(sa.text("SELECT current_setting('apix.tenant_id', true)"))
        ).scalar()
        await conn.rollback()
    await db.dispose()
    return int(left or 0), tenant_outside or ""


async def test_pgbouncer_mode_leaves_no_named_statements(
    backend: str, database_url: str, db: Database
) -> None:
    if backend != "postgres":
        pytest.skip("PgBouncer options apply to PostgreSQL only")
    # GIVEN a migrated database
    # WHEN the same statements run in separate transactions, with and without PgBouncer mode
    default_left, _ = await _named_statements_after_work(database_url, pgbouncer=False)
    bouncer_left, tenant_outside = await _named_statements_after_work(database_url, pgbouncer=True)

    # THEN only the default mode caches prepared statements on the server connection
    # (under transaction pooling those would meet other clients' connections), and the tenant
    # setting does not outlive apix's transaction
    assert default_left > 0
    assert bouncer_left == 0
    assert tenant_outside == ""


async def test_idle_connection_cut_by_the_server_is_replaced(
    backend: str, database_url: str, pg_server: str
) -> None:
    if backend != "postgres":
        pytest.skip("SQLite has no server connections to lose")
    # GIVEN a one-connection pool whose idle connections are checked before use
    db = Database(database_url, pool_size=1, idle_ping_seconds=0)
    async with db.transaction(tenant_id="acme", write=False) as conn:
        first = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar()

    # WHEN the server ends that connection while it sits in the pool
    admin = Database(pg_server, pool_size=1)
    async with admin.connect() as conn:
        await conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": first})
        await conn.commit()
    await admin.dispose()

    # THEN the next transaction gets a fresh connection instead of failing
    async with db.transaction(tenant_id="acme", write=False) as conn:
        second = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar()
    await db.dispose()
    assert second != first
