"""Schema management: migrations create the schema, match the models; SQLite pragmas."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from apix_core.store.database import WRITER_CACHE_KIB, Database
from apix_core.store.errors import is_lock_timeout, is_transient_store_error
from apix_core.store.migrate import alembic_config
from apix_core.store.models import metadata
from apix_core.store.sql import insert_many


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _diffs(conn: sa.Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_upgrade_creates_the_schema_on_an_empty_database(empty_database_url: str) -> None:
    # GIVEN an empty database
    db = Database(empty_database_url)
    try:
        assert await db.current_revision() is None

        # WHEN it is upgraded (what `apix db upgrade` runs), twice
        await db.upgrade()
        await db.upgrade()

        # THEN it is at head with every table of the models
        assert await db.current_revision() == _head()
        async with db.connect() as conn:
            tables = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        assert set(metadata.tables) <= tables
    finally:
        await db.dispose()


async def test_models_and_migrations_agree(database_url: str) -> None:
    # GIVEN a database migrated to head
    db = Database(database_url)
    try:
        await db.upgrade()

        # WHEN Alembic compares the migrated schema with the SQLAlchemy models
        async with db.connect() as conn:
            diffs = await conn.run_sync(_diffs)
    finally:
        await db.dispose()

    # THEN there is nothing to autogenerate: a model change without a migration fails here
    assert diffs == []


async def test_sqlite_uses_wal_and_secure_delete(backend: str, database_url: str) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite pragmas")
    # GIVEN a migrated SQLite store
    db = Database(database_url)
    try:
        await db.upgrade()

        # WHEN its connections are inspected
        async with db.connect() as conn:
            journal = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            secure = (await conn.exec_driver_sql("PRAGMA secure_delete")).scalar()
            foreign_keys = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
    finally:
        await db.dispose()

    # THEN WAL, secure_delete and foreign keys are on
    assert str(journal).lower() == "wal"
    assert secure == 1 and foreign_keys == 1
    # WAL is persistent: a plain sqlite3 connection to the file sees it too
    path = Path(make_url(database_url).database or "")
    with sqlite3.connect(path) as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_write_transactions_roll_back_on_error(database_url: str) -> None:
    # GIVEN a migrated store
    db = Database(database_url)
    try:
        await db.upgrade()
        idem = metadata.tables["apix_idempotency"]
        row = {
            "tenant_id": "acme",
            "processor": "p",
            "message_id": "m",
            "status": "completed",
            "created_at": sa.func.now(),
        }

        # WHEN a transaction fails after a write
        with pytest.raises(RuntimeError):
            async with db.transaction(tenant_id="acme") as conn:
                await conn.execute(sa.insert(idem).values(**row))
                raise RuntimeError("processor crashed")

        # THEN nothing was written; a committed transaction is visible
        async with db.transaction(tenant_id="acme", write=False) as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(idem))).scalar() == 0
        async with db.transaction(tenant_id="acme") as conn:
            await conn.execute(sa.insert(idem).values(**row))
        async with db.transaction(tenant_id="acme", write=False) as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(idem))).scalar() == 1
    finally:
        await db.dispose()


async def test_sqlite_write_transactions_commit_roll_back_and_nest(
    backend: str, database_url: str
) -> None:
    if backend != "sqlite":
        pytest.skip("the SQLite writer connection")
    # GIVEN a migrated SQLite store (write transactions share one connection)
    db = Database(database_url)
    idem = metadata.tables["apix_idempotency"]

    def row(mid: str) -> dict[str, Any]:
        return {"tenant_id": "acme", "processor": "p", "message_id": mid, "status": "completed"}

    async def ids() -> set[str]:
        async with db.transaction(write=False) as conn:
            return set((await conn.execute(sa.select(idem.c.message_id))).scalars())

    try:
        await db.upgrade()
        # WHEN transactions commit, fail, roll back a savepoint, and are cancelled
        for mid in ("a", "b"):
            async with db.transaction() as conn:
                await conn.execute(sa.insert(idem).values(**row(mid), created_at=sa.func.now()))
        with pytest.raises(sa.exc.IntegrityError):
            async with db.transaction() as conn:
                await conn.execute(sa.insert(idem).values(**row("c"), created_at=sa.func.now()))
                await conn.execute(sa.insert(idem).values(**row("a"), created_at=sa.func.now()))
        async with db.transaction() as conn:
            savepoint = await conn.begin_nested()
            await conn.execute(sa.insert(idem).values(**row("d"), created_at=sa.func.now()))
            await savepoint.rollback()
            await conn.execute(sa.insert(idem).values(**row("e"), created_at=sa.func.now()))

        async def cancelled() -> None:
            async with db.transaction() as conn:
                await conn.execute(sa.insert(idem).values(**row("f"), created_at=sa.func.now()))
                await asyncio.sleep(10)

        task = asyncio.ensure_future(cancelled())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with db.transaction() as conn:
            await conn.execute(sa.insert(idem).values(**row("g"), created_at=sa.func.now()))

        async with db.transaction() as conn:
            cache = (await conn.exec_driver_sql("PRAGMA cache_size")).scalar()

        # THEN exactly the committed writes are there, also for another connection; the
        # writer has its larger page cache
        assert await ids() == {"a", "b", "e", "g"}
        assert cache == -WRITER_CACHE_KIB
        path = Path(make_url(database_url).database or "")
        with sqlite3.connect(path) as plain:
            got = {r[0] for r in plain.execute("SELECT message_id FROM apix_idempotency")}
        assert got == {"a", "b", "e", "g"}
    finally:
        await db.dispose()


def test_sqlite_writer_waits_for_another_process_lock_and_survives_new_loops(
    backend: str, database_url: str
) -> None:
    if backend != "sqlite":
        pytest.skip("the SQLite writer connection")
    # GIVEN a store used from two event loops in turn, and another connection holding the
    # write lock for a moment
    db = Database(database_url, timeout=5)
    idem = metadata.tables["apix_idempotency"]
    path = Path(make_url(database_url).database or "")

    async def write(mid: str) -> None:
        async with db.transaction() as conn:
            await conn.execute(
                sa.insert(idem).values(
                    tenant_id="acme",
                    processor="p",
                    message_id=mid,
                    status="completed",
                    created_at=sa.func.now(),
                )
            )

    async def contended() -> None:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        asyncio.get_running_loop().call_later(0.2, other.rollback)
        try:
            started = time.monotonic()
            await write("second")
            waited = time.monotonic() - started
        finally:
            other.close()
        assert waited >= 0.15  # it waited for the lock instead of failing

    try:
        asyncio.run(db.upgrade())
        # WHEN one loop writes, then a later loop writes while the lock is held elsewhere
        asyncio.run(write("first"))
        asyncio.run(contended())
    finally:
        asyncio.run(db.dispose())

    # THEN both writes are committed
    with sqlite3.connect(path) as plain:
        got = {r[0] for r in plain.execute("SELECT message_id FROM apix_idempotency")}
    assert got == {"first", "second"}


async def test_hot_path_inserts_fail_with_sqlalchemy_errors_and_roll_back(
    database_url: str,
) -> None:
    # GIVEN a migrated store (on SQLite, insert_many runs on the writer's sqlite3 connection)
    db = Database(database_url)
    idem = metadata.tables["apix_idempotency"]
    columns = ("tenant_id", "processor", "message_id", "status", "created_at")
    now = datetime.now(UTC)
    try:
        await db.upgrade()
        async with db.transaction(tenant_id="acme") as conn:
            await insert_many(conn, idem, columns, [("acme", "p", "a", "completed", now)])

        # WHEN a batch repeats a primary key
        with pytest.raises(sa.exc.IntegrityError):
            async with db.transaction(tenant_id="acme") as conn:
                await insert_many(
                    conn,
                    idem,
                    columns,
                    [("acme", "p", "b", "completed", now), ("acme", "p", "a", "completed", now)],
                )

        # THEN the error is SQLAlchemy's (what the handler classifies) and nothing of the
        # batch was written; the datetime column reads back as it was written
        async with db.transaction(tenant_id="acme", write=False) as conn:
            rows = (await conn.execute(sa.select(idem.c.message_id, idem.c.created_at))).all()
    finally:
        await db.dispose()
    assert [r.message_id for r in rows] == ["a"]
    created = rows[0].created_at
    assert (created if created.tzinfo else created.replace(tzinfo=UTC)) == now


async def test_sqlite_write_lock_wait_that_runs_out_is_a_transient_store_error(
    backend: str, database_url: str
) -> None:
    if backend != "sqlite":
        pytest.skip("the SQLite writer connection")
    # GIVEN a store with a short lock wait, and another connection holding the write lock
    db = Database(database_url, timeout=0.2)
    path = Path(make_url(database_url).database or "")
    try:
        await db.upgrade()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            # WHEN a write transaction waits longer than the timeout
            with pytest.raises(sa.exc.OperationalError) as caught:
                async with db.transaction():
                    pass
        finally:
            other.rollback()
            other.close()

        # THEN it fails as SQLAlchemy reports it (a lock timeout, transient), and the next
        # write transaction works
        assert is_lock_timeout(caught.value, postgres=False)
        assert is_transient_store_error(caught.value)
        async with db.transaction() as conn:
            await conn.exec_driver_sql("DELETE FROM apix_idempotency")
    finally:
        await db.dispose()


async def test_sqlite_with_a_custom_async_creator_uses_sqlalchemy_transactions(
    backend: str, database_url: str
) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite engines")
    import aiosqlite

    path = str(Path(make_url(database_url).database or ""))

    async def creator() -> aiosqlite.Connection:
        return await aiosqlite.connect(path, timeout=0)

    # GIVEN a store whose connections are aiosqlite's own (no inline writer)
    db = Database(database_url, engine_options={"async_creator": creator})
    idem = metadata.tables["apix_idempotency"]
    columns = ("tenant_id", "processor", "message_id", "status", "created_at")
    now = datetime.now(UTC)
    try:
        await db.upgrade()
        # WHEN transactions commit and fail
        async with db.transaction() as conn:
            await insert_many(conn, idem, columns, [("acme", "p", "a", "completed", now)])
        with pytest.raises(RuntimeError):
            async with db.transaction() as conn:
                await insert_many(conn, idem, columns, [("acme", "p", "b", "completed", now)])
                raise RuntimeError("boom")
        async with db.transaction(write=False) as conn:
            got = set((await conn.execute(sa.select(idem.c.message_id))).scalars())
    finally:
        await db.dispose()

    # THEN they behave as with the inline writer
    assert got == {"a"}
