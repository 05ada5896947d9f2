"""Warm function invocations: ``run_sync`` keeps one event loop, so the connection pool survives.

Each invocation does what a queue-triggered function does: receive a delivery, run the processor
through the App, settle, and reports ``pg_backend_pid()`` of a connection from the App's pool.
The tests are synchronous, like a Lambda or Azure Functions handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextvars import ContextVar

import pytest
import sqlalchemy as sa

from apix_core import App, Message, ProcessorContext, tenant_context
from apix_core.processing import OutcomeKind
from apix_core.runtime import close_runner, run_sync

_probe: ContextVar[str | None] = ContextVar("probe", default=None)


@pytest.fixture
def warm_app(backend: str, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """A module-global-style App on PostgreSQL with a one-connection pool (so a reused pool
    shows as one backend pid)."""
    if backend != "postgres":
        pytest.skip("asyncpg connections are what is bound to an event loop")
    monkeypatch.setenv("APIX_DB_POOL_SIZE", "1")
    app = App("warm", database_url=database_url, queue_url=database_url, auto_migrate=True)

    @app.processor("ingest", consumes="in")
    async def ingest(message: Message, ctx: ProcessorContext) -> None:
        ctx.persist_entity(str(message.payload["id"]), "order", "shop", message.payload)

    yield app


async def _invocation(app: App, n: int) -> int:
    """One function invocation: one message processed; returns the pool's backend pid."""
    await app.send("in", {"id": n}, tenant_id="acme")
    assert app.transport is not None and app.store is not None
    deliveries = await app.transport.receive("in", 10)
    outcomes = await app.process("in", deliveries)
    await app.settle("in", outcomes)
    assert [o.kind for o in outcomes] == [OutcomeKind.COMPLETED]
    async with app.store.db.connect() as conn:
        pid = int((await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())
        await conn.rollback()
    return pid


async def _entity_count(app: App) -> int:
    assert app.store is not None
    with tenant_context("acme"):
        return await app.store.entities.count()


def test_run_sync_reuses_the_pool_across_invocations(warm_app: App) -> None:
    # GIVEN a warm function's App, invoked through run_sync
    try:
        # WHEN it is invoked three times in a row
        pids = [run_sync(_invocation(warm_app, n)) for n in range(3)]

        # THEN every invocation ran its message and used the same server connection
        assert run_sync(_entity_count(warm_app)) == 3
        assert len(set(pids)) == 1, pids
    finally:
        run_sync(warm_app.close())
        close_runner()


def test_asyncio_run_per_invocation_still_works(warm_app: App) -> None:
    # GIVEN the same kind of App, invoked with a new event loop each time
    try:
        # WHEN it is invoked three times with asyncio.run
        pids = [asyncio.run(_invocation(warm_app, n)) for n in range(3)]

        # THEN every invocation succeeded, on a pool rebuilt for each loop
        assert asyncio.run(_entity_count(warm_app)) == 3
        assert len(set(pids)) == 3, pids
    finally:
        asyncio.run(warm_app.close())


def test_run_sync_returns_results_raises_errors_and_isolates_context() -> None:
    # GIVEN coroutines that return, raise, and set a context variable
    async def set_probe(value: str | None) -> str | None:
        if value is None:
            return _probe.get()
        _probe.set(value)  # set and never reset, like a careless handler
        return value

    async def fail() -> None:
        raise ValueError("boom")

    try:
        # WHEN/THEN results and exceptions come back as from asyncio.run
        assert run_sync(set_probe("acme")) == "acme"
        with pytest.raises(ValueError, match="boom"):
            run_sync(fail())
        # AND context set by one invocation does not leak into the next
        assert run_sync(set_probe(None)) is None

        # AND it cannot be nested in a running loop (a clear error, not a deadlock)
        async def nested() -> None:
            coro = fail()
            try:
                run_sync(coro)
            finally:
                coro.close()

        with pytest.raises(RuntimeError, match="running event loop"):
            run_sync(nested())
    finally:
        close_runner()
