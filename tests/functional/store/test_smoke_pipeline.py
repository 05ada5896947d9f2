"""A three-stage pipeline end to end on the real local transport."""

from __future__ import annotations

from apix_core import App, Message, ProcessorContext, tenant_context
from apix_core.runtime import LocalRunner


async def test_three_stage_pipeline_completes_every_message(make_app) -> None:
    # GIVEN an app with three chained processors and 50 queued orders
    app: App = make_app("shop", tenant_id="acme")

    @app.processor("normalize", consumes="raw", produces=["canonical"])
    async def normalize(message: Message, ctx: ProcessorContext) -> dict:
        ctx.persist_entity(str(message.payload["id"]), "order", "shop", message.payload)
        return {"id": message.payload["id"], "total": message.payload["qty"] * 2}

    @app.processor("enrich", consumes="canonical", produces=["done"])
    def enrich(message: Message, ctx: ProcessorContext) -> dict:
        return {**message.payload, "enriched": True}

    seen: list[int] = []

    @app.processor("sink", consumes="done")
    async def sink(message: Message, ctx: ProcessorContext) -> None:
        assert message.payload["enriched"] is True
        seen.append(message.payload["id"])

    await app.start()
    for i in range(50):
        await app.send("raw", {"id": i, "qty": i}, tenant_id="acme")

    # WHEN the local runner drains the queues
    stats = await LocalRunner(app).run()

    # THEN every message passed every stage once, and entities were recorded
    assert sorted(seen) == list(range(50))
    assert stats.completed == 150
    assert stats.dead_lettered == 0
    with tenant_context("acme"):
        assert await app.store.entities.count() == 50
