"""Two apps in one process handle the same message at the same moment: one runs it.

The processes' version of this race is tests/e2e/test_concurrency.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from apix_core import App, Message, OutcomeKind, ProcessorContext
from apix_core.store.models import entities, entity_versions
from apix_core.transport.base import ReceivedMessage

TENANT = "acme"
LOSER_KINDS = {OutcomeKind.DUPLICATE.value, OutcomeKind.RETRY.value}


async def versions(app: App) -> dict[str, int]:
    assert app.store is not None
    stmt = (
        sa.select(entities.c.external_id, sa.func.count(entity_versions.c.version))
        .join(entity_versions, entity_versions.c.entity_id == entities.c.id)
        .where(entities.c.tenant_id == TENANT)
        .group_by(entities.c.external_id)
    )
    async with app.store.db.transaction(tenant_id=TENANT, write=False) as conn:
        return {k: int(v) for k, v in (await conn.execute(stmt)).all()}


async def test_two_apps_in_one_process_same_message_run_once(make_app, tmp_path: Path) -> None:
    # GIVEN two apps on separate connections (separate engines) to the same database,
    # each with the same slow processor that records its runs in a file
    run_log = tmp_path / "runs.log"

    def build() -> App:
        app: App = make_app("dups", tenant_id=TENANT)

        @app.processor("slow", consumes="in")
        async def slow(message: Message, ctx: ProcessorContext) -> None:
            with run_log.open("a") as fh:
                fh.write(f"{message.message_id}\n")
            await asyncio.sleep(0.5)
            ctx.persist_entity(message.message_id, "thing", "dups", {"app": id(app)})

        return app

    app_a, app_b = build(), build()
    await app_a.start()
    await app_b.start()
    body = Message(message_id="order-7", tenant_id=TENANT, payload={}).to_json()

    def delivery() -> ReceivedMessage:
        return ReceivedMessage(queue="in", message_id="order-7", body=body)

    # WHEN both handle a delivery of the same message concurrently
    out_a, out_b = await asyncio.gather(
        app_a.process("in", [delivery()]), app_b.process("in", [delivery()])
    )

    # THEN one completed, the other waited (duplicate) or was released (retry); one run
    kinds = sorted([out_a[0].kind.value, out_b[0].kind.value])
    assert OutcomeKind.COMPLETED.value in kinds
    kinds.remove(OutcomeKind.COMPLETED.value)
    assert kinds[0] in LOSER_KINDS
    assert run_log.read_text().splitlines() == ["order-7"]
    assert await versions(app_a) == {"order-7": 1}
