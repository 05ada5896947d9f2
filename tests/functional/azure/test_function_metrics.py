"""apix's per-batch metrics from a generated Azure queue function, called with real
``azure.functions`` objects: what an Azure Monitor OpenTelemetry exporter would receive."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from apix_azure import function_app
from apix_core import App, Message, ProcessorContext
from apix_core.message import build_message


@pytest.fixture
async def ingest(
    tmp_path: Path, azurite: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Any]]:
    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    app = App(
        "azmetrics",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}",
        queue_url=f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}",
        tenant_id="acme",
    )

    @app.processor("ingest", consumes=queue_name)
    async def ingest(message: Message, ctx: ProcessorContext) -> None:
        return None

    fapp = function_app(app)
    [fn] = [f.get_user_function() for f in fapp.get_functions()]
    yield fn
    await app.close()
    await fapp.apix_runtime.poison_transport().close()  # type: ignore[attr-defined]


def _queue_message(body: str, dequeue_count: int) -> QueueMessage:
    now = datetime.now(UTC)
    return QueueMessage(  # type: ignore[no-untyped-call]
        id="m-1",
        body=body,
        dequeue_count=dequeue_count,
        pop_receipt="receipt",
        insertion_time=now,
        expiration_time=now,
        time_next_visible=now,
    )


async def test_queue_function_records_completed_then_duplicate(
    metric_points: Callable[[], dict[str, list[Any]]], ingest: Callable[..., Any], queue_name: str
) -> None:
    # GIVEN a message as the Functions host hands it over
    body = build_message(message_id="order-1", tenant_id="acme", payload={"id": 1}).to_json()
    # WHEN the queue function runs, then runs again on a redelivery
    await ingest(_queue_message(body, 1))
    await ingest(_queue_message(body, 2))
    # THEN apix.messages has one completed and one duplicate under the processor and queue
    points = metric_points()
    counts = {p.attributes["outcome"]: p.value for p in points["apix.messages"]}
    assert counts == {"completed": 1, "duplicate": 1}
    assert {p.attributes["queue"] for p in points["apix.messages"]} == {queue_name}
    [hist] = points["apix.batch.duration"]
    assert hist.count == 2
