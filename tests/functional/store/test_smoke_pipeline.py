"""A three-stage pipeline end to end on the real local transport, through ``apix_core.testing``."""

from __future__ import annotations

from apix_core import App, Message, ProcessorContext
from apix_core.testing import TestApp


def build_shop() -> tuple[App, list[int]]:
    """The user's module, as written: nothing in it knows about tests."""
    app = App("shop", tenant_id="acme")
    seen: list[int] = []

    @app.processor("normalize", consumes="raw", produces=["canonical"])
    async def normalize(message: Message, ctx: ProcessorContext) -> dict:
        ctx.persist_entity(str(message.payload["id"]), "order", "shop", message.payload)
        return {"id": message.payload["id"], "total": message.payload["qty"] * 2}

    @app.processor("enrich", consumes="canonical", produces=["done"])
    def enrich(message: Message, ctx: ProcessorContext) -> dict:
        return {**message.payload, "enriched": True}

    @app.processor("sink", consumes="done")
    async def sink(message: Message, ctx: ProcessorContext) -> None:
        assert message.payload["enriched"] is True
        seen.append(message.payload["id"])

    return app, seen


async def test_three_stage_pipeline_completes_every_message(database_url: str) -> None:
    # GIVEN the app on the test's database (SQLite, or PostgreSQL in the postgres session)
    app, seen = build_shop()
    async with TestApp(app, database_url=database_url) as t:
        # AND 50 queued orders
        for i in range(50):
            await t.send("raw", {"id": i, "qty": i})

        # WHEN the queues are drained
        stats = await t.drain(max_seconds=60)

        # THEN every message passed every stage once, and entities were recorded
        assert sorted(seen) == list(range(50))
        assert stats.completed == 150
        assert stats.dead_lettered == 0
        assert len(await t.entities("order")) == 50
        assert await t.messages("done") == []
