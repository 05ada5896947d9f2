"""The exactly-once path on uvloop, against each backend (the inline SQLite driver and asyncpg
alike).
"""

from __future__ import annotations

import asyncio

import pytest

from apix_core import App, Message, ProcessorContext, tenant_context
from apix_core.processing import OutcomeKind
from apix_core.runtime import loop_name
from apix_core.runtime.loop import run

uvloop = pytest.importorskip("uvloop", reason="uvloop comes with the [postgres] and [dev] extras")


async def _current_loop() -> str:
    return loop_name(asyncio.get_running_loop())


def test_exactly_once_path_on_uvloop(database_url: str, queue_url: str) -> None:
    # GIVEN an App on the test's backend, driven from uvloop as run_sync drives a function
    app = App("loop", database_url=database_url, queue_url=queue_url, auto_migrate=True)

    @app.processor("ingest", consumes="in", produces=["out"])
    async def ingest(message: Message, ctx: ProcessorContext) -> dict:
        ctx.persist_entity(str(message.payload["id"]), "order", "shop", message.payload)
        return {"id": message.payload["id"]}

    async def scenario() -> tuple[list[OutcomeKind], int, int, str]:
        try:
            await app.start()
            handler = app.handler("ingest")
            first = Message(message_id="m-1", tenant_id="acme", payload={"id": 1})
            second = Message(message_id="m-2", tenant_id="acme", payload={"id": 2})
            # WHEN a batch is processed, then redelivered
            outcomes = await handler.handle_batch([first, second])
            outcomes += await handler.handle_batch([first])
            assert app.store is not None and app.transport is not None
            with tenant_context("acme"):
                entities = await app.store.entities.count()
            sent = len(await app.transport.receive("out", 10))
            return [o.kind for o in outcomes], entities, sent, await _current_loop()
        finally:
            await app.close()

    kinds, entities, sent, loop = run(scenario(), event_loop="uvloop")

    # THEN it ran on uvloop with the same exactly-once effect as anywhere else
    assert loop == "uvloop"
    assert kinds == [OutcomeKind.COMPLETED, OutcomeKind.COMPLETED, OutcomeKind.DUPLICATE]
    assert (entities, sent) == (2, 2)
