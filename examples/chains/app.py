"""A chain of two extractors, run two ways: whole in one invocation, or fanned out.

    apix run examples/chains/app.py      # one tick of sync_catalog, drained, with a summary

``chain.yaml`` lists a catalog's categories, then fetches each category's products. The app
registers the chain twice:

- ``catalog-inline`` (queue ``catalog-sync``): one processor runs both steps per message;
- ``catalog-fanout`` (queue ``catalog-sync-fanout``): one processor per step; the first sends
  one message per category to the second step's queue, so categories are fetched in separate
  invocations (on AWS Lambda or Azure Functions: separate function instances).

Both send every product to the ``products`` queue, once per trigger message, through the
outbox (a redelivered trigger sends nothing twice). The catalog is a small in-process data set
standing in for an API (the built-in ``http`` extractor takes its place in a real chain).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from apix_core import App, Message, ProcessorContext
from apix_core.extract.base import BaseExtractor, ExtractorFactory, Inputs, Record
from apix_core.extract.chain_processors import register_chain_processors
from apix_core.extract.chains import load_chain_yaml

CATALOG: dict[str, list[str]] = {
    "books": ["atlas", "novel", "poems"],
    "games": ["chess", "go"],
    "tools": ["hammer", "saw", "drill", "level"],
}
RETIRED = {"maps"}


def _one(inputs: Inputs) -> dict[str, Any]:
    if isinstance(inputs, list):
        raise ValueError("the catalog extractors take one input mapping")
    return dict(inputs or {})


@ExtractorFactory.register("catalog.categories")
class Categories(BaseExtractor):
    """The categories with ``status`` (``active``: those still sold)."""

    async def extract_stream(self, inputs: Inputs = None) -> AsyncIterator[list[Record]]:
        status = _one(inputs).get("status", "active")
        names = sorted(CATALOG) if status == "active" else sorted(RETIRED)
        yield [{"slug": name, "status": status} for name in names]


@ExtractorFactory.register("catalog.products")
class Products(BaseExtractor):
    """The products of one ``category``, one page per two products."""

    async def extract_stream(self, inputs: Inputs = None) -> AsyncIterator[list[Record]]:
        category = _one(inputs)["category"]
        products = CATALOG.get(category)
        if products is None:
            raise LookupError(f"no category {category!r}")
        for start in range(0, len(products), 2):
            yield [
                {"sku": f"{category}-{name}", "category": category}
                for name in products[start : start + 2]
            ]


CHAIN = load_chain_yaml(Path(__file__).with_name("chain.yaml"))

app = App("catalog", tenant_id="demo-shop")
register_chain_processors(
    app, CHAIN, consumes="catalog-sync", name="catalog-inline", output_queue="products"
)
register_chain_processors(
    app,
    CHAIN,
    consumes="catalog-sync-fanout",
    name="catalog-fanout",
    fan_out=True,
    output_queue="products",
)


@app.processor(
    "sync_catalog", schedule="0 * * * *", produces=["catalog-sync", "catalog-sync-fanout"]
)
async def sync_catalog(message: Message, ctx: ProcessorContext) -> None:
    """Every hour, start the chain both ways (a real app would pick one)."""
    ctx.send("catalog-sync", {"status": "active"})
    ctx.send("catalog-sync-fanout", {"status": "active"})
