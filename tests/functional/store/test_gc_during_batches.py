"""The collector's threshold while the local runtime processes batches (processing/gc_tuning)."""

from __future__ import annotations

import gc

from apix_core import App, Message, ProcessorContext
from apix_core.processing.gc_tuning import BATCH_GC_THRESHOLD, MIN_GC_BATCH
from apix_core.testing import TestApp


async def test_batches_run_with_the_raised_threshold_and_it_is_restored(
    database_url: str,
) -> None:
    # GIVEN a processor that records the collector's threshold as it runs
    app = App("gc-shop", tenant_id="acme")
    seen: list[int] = []

    @app.processor("record", consumes="raw")
    async def record(message: Message, ctx: ProcessorContext) -> None:
        seen.append(gc.get_threshold()[0])

    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        async with TestApp(app, database_url=database_url) as t:
            for i in range(5):
                await t.send("raw", {"id": i})
            # WHEN the queue is drained
            stats = await t.drain(max_seconds=30)
        # THEN every message ran with the raised threshold, and the default is back after
        assert stats.completed == 5
        assert seen == [BATCH_GC_THRESHOLD] * 5
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*saved)


async def test_the_handler_raises_the_threshold_for_large_batches_only(database_url: str) -> None:
    # GIVEN a processor that records the collector's threshold, called straight through its
    # handler (as the cloud adapters call it)
    app = App("gc-handler", tenant_id="acme", database_url=database_url)
    seen: list[int] = []

    @app.processor("record", consumes="raw", enable_persistence=False)
    async def record(message: Message, ctx: ProcessorContext) -> None:
        seen.append(gc.get_threshold()[0])

    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        await app.start()
        handler = app.handler("record")
        small = [Message(tenant_id="acme", payload={"i": i}) for i in range(MIN_GC_BATCH - 1)]
        large = [Message(tenant_id="acme", payload={"i": i}) for i in range(MIN_GC_BATCH)]
        # WHEN a batch below MIN_GC_BATCH and one at it are handled
        await handler.handle_batch(small)
        await handler.handle_batch(large)
        # THEN only the large one ran with the raised threshold, restored afterwards
        assert seen == [700] * len(small) + [BATCH_GC_THRESHOLD] * len(large)
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*saved)
        await app.close()
