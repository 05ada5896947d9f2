"""The example chain (examples/chains) across functions, on the local transport: the whole chain
in one invocation, and fanned out one step per processor — the same products, each sent once,
redeliveries included (SQLite and PostgreSQL stores); a failing item is retried by the core
and dead-lettered, never lost."""

from __future__ import annotations

from pathlib import Path

from apix_core.cli.loader import load_app
from apix_core.extract.chain_processors import CHAIN_KEY
from apix_core.processing.outcomes import OutcomeKind
from apix_core.testing import TestApp

EXAMPLE = Path(__file__).resolve().parents[4] / "examples" / "chains" / "app.py"
ALL_SKUS = sorted(
    f"{category}-{name}"
    for category, names in {
        "books": ["atlas", "novel", "poems"],
        "games": ["chess", "go"],
        "tools": ["hammer", "saw", "drill", "level"],
    }.items()
    for name in names
)


async def _skus(t: TestApp) -> list[str]:
    return sorted(m.payload["sku"] for m in await t.messages("products"))


async def test_the_whole_chain_in_one_invocation_sends_each_product_once(database_url: str) -> None:
    async with TestApp(load_app(str(EXAMPLE)), tenant_id="shop", database_url=database_url) as t:
        # WHEN one trigger message is delivered, then delivered again (at-least-once queue)
        first = await t.deliver("catalog-sync", {}, message_id="sync-1")
        again = await t.deliver("catalog-sync", {}, message_id="sync-1")
        # THEN both steps ran in that one invocation, and the redelivery sent nothing more
        assert first.kind == OutcomeKind.COMPLETED, first.error
        assert again.kind == OutcomeKind.DUPLICATE
        assert await _skus(t) == ALL_SKUS


async def test_the_fanned_out_chain_sends_one_message_per_item_then_each_product_once(
    database_url: str,
) -> None:
    async with TestApp(load_app(str(EXAMPLE)), tenant_id="shop", database_url=database_url) as t:
        # WHEN the first step's processor gets the trigger
        outcome = await t.deliver("catalog-sync-fanout", {"status": "active"}, message_id="f-1")
        assert outcome.kind == OutcomeKind.COMPLETED, outcome.error
        # THEN it sent one message per category to the next step's queue, with the state
        step_msgs = await t.messages("catalog-fanout.products")
        items = sorted(m.payload[CHAIN_KEY]["item"]["category"] for m in step_msgs)
        assert items == ["books", "games", "tools"]
        assert list(step_msgs[0].payload[CHAIN_KEY]["state"]["category_slugs"]) == items
        # WHEN each runs in its own invocation, one of them delivered twice
        for message in step_msgs:
            done = await t.deliver("catalog-fanout.products", message)
            assert done.kind == OutcomeKind.COMPLETED, done.error
        dup = await t.deliver("catalog-fanout.products", step_msgs[0])
        assert dup.kind == OutcomeKind.DUPLICATE
        # THEN every product arrived exactly once
        assert await _skus(t) == ALL_SKUS


async def test_the_fanned_out_chain_drains_to_the_same_products_as_the_inline_one(
    database_url: str,
) -> None:
    async with TestApp(load_app(str(EXAMPLE)), tenant_id="shop", database_url=database_url) as t:
        await t.send("catalog-sync-fanout", {})
        await t.drain()
        assert await _skus(t) == ALL_SKUS


async def test_a_failing_item_is_retried_then_dead_lettered_and_nothing_is_sent(
    database_url: str,
) -> None:
    async with TestApp(
        load_app(str(EXAMPLE)), tenant_id="shop", database_url=database_url, max_attempts=2
    ) as t:
        # GIVEN a step message for a category the catalog does not have
        bad = {
            CHAIN_KEY: {
                "chain_id": "catalog_sync",
                "state": {"status": "active"},
                "item": {"category": "maps"},
            }
        }
        await t.send("catalog-fanout.products", bad)
        # WHEN drained (the step's own policy retries twice in-invocation, then the core)
        stats = await t.drain(max_seconds=20)
        # THEN the message is dead-lettered with the extractor's error, and no product sent
        letters = await t.dead_letters()
        assert len(letters) == 1, stats
        # (the store redacts quoted values in error messages)
        assert "LookupError: no category" in letters[0].error_message
        assert letters[0].attempts == 2
        assert await t.messages("products") == []


async def test_a_step_message_without_chain_state_is_dead_lettered_with_a_clear_error(
    database_url: str,
) -> None:
    async with TestApp(load_app(str(EXAMPLE)), tenant_id="shop", database_url=database_url) as t:
        outcome = await t.deliver("catalog-fanout.products", {"category": "books"})
        assert outcome.kind == OutcomeKind.DEAD_LETTER
        assert outcome.error is not None
        assert "only the chain's first queue takes plain inputs" in str(outcome.error)
