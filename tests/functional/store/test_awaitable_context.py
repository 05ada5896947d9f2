"""``async def`` processors may ``await`` the context's recording calls; plain calls still work."""

from __future__ import annotations

from typing import Any

from apix_core import App, Message, OutcomeKind, ProcessorContext
from apix_core.testing import TestApp


def build(seen: dict[str, Any]) -> App:
    app = App("awaits", tenant_id="acme")

    @app.processor("awaiting", consumes="a", produces=["out"])
    async def awaiting(message: Message, ctx: ProcessorContext) -> None:
        entity_id = await ctx.persist_entity("A-1", "order", "shop", {"n": 1})
        seen["awaited"] = entity_id
        assert await ctx.transition(entity_id, "booked", "awaited") is None
        assert await ctx.send("out", {"from": "awaiting"}) is None

    @app.processor("plain", consumes="p", produces=["out"])
    async def plain(message: Message, ctx: ProcessorContext) -> None:
        entity_id = ctx.persist_entity("P-1", "order", "shop", {"n": 2})
        seen["plain"] = entity_id
        ctx.transition(entity_id, "booked")
        ctx.send("out", {"from": "plain"})

    return app


async def test_both_spellings_record_the_same_things(database_url: str) -> None:
    seen: dict[str, Any] = {}
    async with TestApp(build(seen), database_url=database_url) as t:
        # WHEN one processor awaits the context calls and the other calls them plainly
        awaited = await t.deliver("a", {})
        plain = await t.deliver("p", {})

        # THEN both complete with the same effects; the ids are strings either way
        assert awaited.kind is OutcomeKind.COMPLETED, awaited.error
        assert plain.kind is OutcomeKind.COMPLETED, plain.error
        assert type(seen["awaited"]) is str
        assert isinstance(seen["plain"], str)
        for entity_id in (seen["awaited"], seen["plain"]):
            assert (await t.entity(entity_id)).state == "booked"
        assert sorted(m.payload["from"] for m in await t.messages("out")) == ["awaiting", "plain"]
