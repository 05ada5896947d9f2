"""A pipeline run inside a queue-triggered processor, bounded by each invocation's deadline: it
stops in time, saves its position with the message's transaction and continues in the next
invocation through a continuation message — every record reaches the consumer exactly once."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from apix_core import App, Message, ProcessorContext, tenant_context
from apix_core.errors import ConfigurationError
from apix_core.extract.pipeline import CONTINUATION_KEY, PipelineManager, RunResult
from apix_core.extract.processors import continuation_queues, register_extract_processors
from apix_core.processor import BackoffPolicy
from apix_core.runtime.runner import LocalRunner


def _pipeline(base_url: str) -> dict[str, Any]:
    return {
        "pipeline_id": "items",
        "extractor": {
            "class": "http",
            "base_url": base_url,
            "path": "/items",
            "params": {"since": "{watermark}"},
            "data_selector": "data",
            "pagination": {"type": "page_number", "page_size": 10},
        },
        "output": {"type": "queue", "config": {"queue": "items", "key": "id"}},
        "watermark": {
            "field": "updated_at",
            "initial_value": "2026-01-01T00:00:00Z",
            "max_lateness": 0,
        },
    }


async def test_a_deadline_bounded_extraction_continues_until_every_record_is_sent_once(
    items_api: Any, database_url: str, queue_url: str
) -> None:
    # GIVEN 200 records behind 20 slow pages, and an app that extracts them in a processor
    items_api.add(0, 200)
    items_api.delay = 0.05
    app = App("shop", tenant_id="acme", database_url=database_url, queue_url=queue_url)
    manager = PipelineManager(app=app, checkpoint_margin=0.0)
    manager.register_pipeline(_pipeline(items_api.base_url))
    runs: list[RunResult] = []
    received: list[int] = []

    @app.processor("extract_items", consumes="extract-jobs", produces=["more-items", "items"])
    async def extract_items(message: Message, ctx: ProcessorContext) -> None:
        runs.append(await manager.run_in_processor(ctx, "items", continue_on="more-items"))

    # A processor may not produce to its own queue: the continuation alternates two queues.
    @app.processor("more_items", consumes="more-items", produces=["extract-jobs", "items"])
    async def more_items(message: Message, ctx: ProcessorContext) -> None:
        runs.append(await manager.run_in_processor(ctx, "items", continue_on="extract-jobs"))

    @app.processor("use_items", consumes="items")
    async def use_items(message: Message, ctx: ProcessorContext) -> None:
        received.append(message.payload["id"])

    async with app:
        await app.send("extract-jobs", {"start": True})

        # WHEN each invocation may run ~400 ms (a Lambda's remaining time, scaled down; wide
        # enough that a loaded machine still starts the message before its deadline)
        invocations = 0
        queues = ["extract-jobs", "more-items"]
        while invocations < 60:
            queue = queues[invocations % 2]
            deliveries = await app.consumer().receive(queue, 10)
            if not deliveries:
                break
            invocations += 1
            outcomes = await app.process(queue, deliveries, deadline=time.monotonic() + 0.4)
            await app.settle(queue, outcomes)
        await LocalRunner(app, fire_schedules=False).run()
        watermark = await manager.watermark("items")

    # THEN it took several invocations, each continuing the last, and every record arrived once
    assert invocations >= 3
    assert [r.status for r in runs] == ["continued"] * (len(runs) - 1) + ["completed"]
    assert sorted(received) == list(range(200))
    assert watermark.position is None
    assert watermark.last_value == max(r["updated_at"] for r in items_api.records)

    # AND the next extraction (no new records) sends nothing again
    received.clear()
    async with app:
        await app.send("extract-jobs", {"start": True})
        await LocalRunner(app, fire_schedules=False).run()
    assert received == []


async def test_run_in_processor_needs_the_continuation_queue_in_produces(
    items_api: Any, database_url: str, queue_url: str
) -> None:
    app = App("shop", tenant_id="acme", database_url=database_url, queue_url=queue_url)
    manager = PipelineManager(app=app)
    manager.register_pipeline(_pipeline(items_api.base_url))
    errors: list[str] = []

    @app.processor("extract_items", consumes="extract-jobs", produces=["items"])
    async def extract_items(message: Message, ctx: ProcessorContext) -> None:
        try:
            await manager.run_in_processor(ctx, "items", continue_on="extract-jobs")
        except ConfigurationError as exc:
            errors.append(str(exc))

    async with app:
        await app.send("extract-jobs", {CONTINUATION_KEY: {"pipeline_id": "items"}})
        await LocalRunner(app, fire_schedules=False).run()
    assert errors and "declare it in the processor's produces=" in errors[0]
    with pytest.raises(ConfigurationError, match="no pipeline 'nope'"):
        manager.get_status("nope")


async def test_a_scheduled_extraction_registered_by_the_helper_continues_across_invocations(
    items_api: Any, database_url: str, queue_url: str, tmp_path: Path
) -> None:
    # GIVEN a pipeline to JSONL, run by a schedule through register_extract_processors
    items_api.add(0, 120)
    items_api.delay = 0.02
    app = App("shop", tenant_id="acme", database_url=database_url, queue_url=queue_url)
    manager = PipelineManager(app=app, checkpoint_margin=0.0)
    config = _pipeline(items_api.base_url)
    config["output"] = {"type": "jsonl", "config": {"path": str(tmp_path / "out")}}
    manager.register_pipeline(config)
    specs = register_extract_processors(app, manager, "items", schedule="0 * * * *")
    first, second = continuation_queues("extract-items")
    assert [s.name for s in specs] == [
        "extract-items",
        "extract-items.continue",
        "extract-items.continue-2",
    ]

    async with app:
        # WHEN the schedule fires and each invocation may run ~120 ms
        tick = app.timer_message(specs[0], datetime(2026, 11, 30, 12, tzinfo=UTC))
        outcome = await app.handler("extract-items").handle(tick, deadline=time.monotonic() + 0.12)
        invocations = 1
        queue = first
        while invocations < 60:
            deliveries = await app.consumer().receive(queue, 10)
            if not deliveries:
                break
            invocations += 1
            outcomes = await app.process(queue, deliveries, deadline=time.monotonic() + 0.12)
            await app.settle(queue, outcomes)
            queue = second if queue == first else first

    # THEN the tick's run continued over several invocations into files holding each record once
    assert outcome.kind.name == "COMPLETED"
    assert invocations >= 3
    ids = sorted(
        json.loads(line)["id"]
        for path in (tmp_path / "out").glob("*.jsonl")
        for line in path.read_text().splitlines()
    )
    assert ids == list(range(120))


async def test_a_failed_invocation_rolls_its_position_back_and_the_retry_repeats_nothing(
    items_api: Any, database_url: str, queue_url: str
) -> None:
    # GIVEN the two-queue extraction, whose continuation processor crashes once AFTER its run
    # (outputs buffered, position written: all of it in the transaction that now fails)
    items_api.add(0, 150)
    items_api.delay = 0.02
    app = App("shop", tenant_id="acme", database_url=database_url, queue_url=queue_url)
    manager = PipelineManager(app=app, checkpoint_margin=0.0)
    manager.register_pipeline(_pipeline(items_api.base_url))
    received: list[int] = []
    crashes: list[int] = []

    @app.processor("extract_items", consumes="extract-jobs", produces=["more-items", "items"])
    async def extract_items(message: Message, ctx: ProcessorContext) -> None:
        await manager.run_in_processor(ctx, "items", continue_on="more-items")

    @app.processor(
        "more_items",
        consumes="more-items",
        produces=["extract-jobs", "items"],
        backoff=BackoffPolicy(redelivery_seconds=0.0),
    )
    async def more_items(message: Message, ctx: ProcessorContext) -> None:
        result = await manager.run_in_processor(ctx, "items", continue_on="extract-jobs")
        if not crashes:
            crashes.append(result.records_written)
            raise RuntimeError("the container died after the run")

    @app.processor("use_items", consumes="items")
    async def use_items(message: Message, ctx: ProcessorContext) -> None:
        received.append(message.payload["id"])

    async with app:
        await app.send("extract-jobs", {"start": True})

        # WHEN invocations of ~150 ms run until no continuation is left
        for _ in range(80):
            busy = False
            for queue in ("extract-jobs", "more-items"):
                deliveries = await app.consumer().receive(queue, 10)
                if deliveries:
                    busy = True
                    outcomes = await app.process(
                        queue, deliveries, deadline=time.monotonic() + 0.15
                    )
                    await app.settle(queue, outcomes)
            if not busy:
                break
        await LocalRunner(app, fire_schedules=False).run()

    # THEN the crashed invocation had written records, yet every record arrived exactly once
    assert crashes and crashes[0] > 0
    assert sorted(received) == list(range(150))


async def test_an_entity_output_inside_a_processor_writes_with_the_message(
    items_api: Any, database_url: str, queue_url: str
) -> None:
    # GIVEN a pipeline whose output records entity metadata, run by a processor
    items_api.add(0, 40)
    app = App("shop", tenant_id="acme", database_url=database_url, queue_url=queue_url)
    manager = PipelineManager(app=app)
    config = _pipeline(items_api.base_url)
    config["output"] = {
        "type": "entity",
        "config": {"canonical_type": "item", "source": "items-api", "attributes": ["name"]},
    }
    manager.register_pipeline(config)
    register_extract_processors(app, manager, "items", consumes="extract-jobs")

    # WHEN it runs, then runs again after one record changed (the watermark filters the rest)
    async with app:
        await app.send("extract-jobs", {})
        await LocalRunner(app, fire_schedules=False).run()
        items_api.records[5] = {
            **items_api.records[5],
            "name": "renamed",
            "updated_at": "2026-11-30T00:00:00Z",
        }
        await app.send("extract-jobs", {})
        await LocalRunner(app, fire_schedules=False).run()
        assert app.store is not None
        with tenant_context("acme"):
            count = await app.store.entities.count()
            changed = await app.store.entities.find("item", "items-api", "5")
            other = await app.store.entities.find("item", "items-api", "6")

    # THEN every record is an entity; the changed one has a second version with its attribute
    assert count == 40
    assert changed is not None and changed.version == 2
    assert changed.attributes == {"name": "renamed"}
    assert other is not None and other.version == 1
