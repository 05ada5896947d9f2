"""Framework overhead per message: apix vs Powertools' BatchProcessor, side by side.

Both run a no-op record handler over the same SQS-shaped batches of 10 records. apix also parses
and validates the versioned envelope, scopes the tenant and checks tracing; persistence is off
(``enable_persistence=False``), so no database is touched. Reported: microseconds per record,
best of runs alternated between the contenders, and the ratio apix / Powertools
(goal ≤ 3×, absolute goal ≤ 10 µs).
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from _common import Result, spread, sqs_record

from apix_core import App, Message
from apix_core.transport.base import ReceivedMessage

BATCH = 10
BATCHES = 500
ROUNDS = 15


def _bodies() -> list[str]:
    return [
        Message(
            tenant_id="bench", payload={"order_id": i, "qty": i % 7, "sku": f"SKU-{i}"}
        ).to_json()
        for i in range(BATCH)
    ]


def apix_runner(loop: asyncio.AbstractEventLoop) -> tuple[Callable[[], float], App]:
    """One apix timing run (µs per record), on ``loop``."""
    app = App("bench-overhead", tenant_id="bench")

    @app.processor("noop", consumes="in", enable_persistence=False)
    async def noop(message: Message, ctx: Any) -> None:
        return None

    records = [sqs_record(b) for b in _bodies()]
    loop.run_until_complete(app.start())
    handler = app.handler("noop")

    def deliveries() -> list[ReceivedMessage]:
        # What the Lambda adapter builds from an SQS event: one ReceivedMessage per record.
        return [
            ReceivedMessage(
                queue="in",
                message_id=r["messageId"],
                body=r["body"],
                receipt=r["receiptHandle"],
                receive_count=int(r["attributes"]["ApproximateReceiveCount"]),
                attributes={"tenant_id": r["messageAttributes"]["tenant_id"]["stringValue"]},
            )
            for r in records
        ]

    async def batches() -> None:
        for _ in range(BATCHES):
            outcomes = await handler.handle_batch(deliveries())
        assert all(o.kind.value == "completed" for o in outcomes)

    def one_run() -> float:
        start = time.perf_counter()
        loop.run_until_complete(batches())
        return (time.perf_counter() - start) / (BATCHES * BATCH) * 1e6

    return one_run, app


def powertools_runner() -> Callable[[], float]:
    """One Powertools timing run (µs per record)."""
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )

    processor = BatchProcessor(event_type=EventType.SQS)
    event = {"Records": [sqs_record(b) for b in _bodies()]}

    def record_handler(record: Any) -> None:
        json.loads(record.body)  # the minimum a handler does with the body

    def one_run() -> float:
        start = time.perf_counter()
        for _ in range(BATCHES):
            response = process_partial_response(
                event=event, record_handler=record_handler, processor=processor
            )
        assert response == {"batchItemFailures": []}
        return (time.perf_counter() - start) / (BATCHES * BATCH) * 1e6

    return one_run


def measure() -> tuple[list[float], list[float]]:
    """Alternate the contenders run by run, so a noisy moment hits both alike."""
    loop = asyncio.new_event_loop()
    apix, app = apix_runner(loop)
    powertools = powertools_runner()
    apix(), powertools()  # warm-up
    apix_samples: list[float] = []
    pt_samples: list[float] = []
    for _ in range(ROUNDS):
        gc.collect()
        apix_samples.append(apix())
        gc.collect()
        pt_samples.append(powertools())
    loop.run_until_complete(app.close())
    loop.close()
    return apix_samples, pt_samples


def run() -> list[Result]:
    apix_samples, pt_samples = measure()
    apix_us, pt_us = min(apix_samples), min(pt_samples)
    # The ratio of best runs, and of each round's pair (same moment, same noise).
    ratio = apix_us / pt_us
    paired = statistics.median(a / p for a, p in zip(apix_samples, pt_samples, strict=True))
    return [
        Result(
            "overhead: apix handler, no-op, persistence off",
            apix_us,
            "µs/msg",
            "≤ 10",
            spread(apix_samples),
        ),
        Result(
            "overhead: Powertools BatchProcessor, no-op",
            pt_us,
            "µs/msg",
            "(reference)",
            spread(pt_samples),
        ),
        Result(
            "overhead ratio apix / Powertools", ratio, "×", "≤ 3", f"median of pairs {paired:.2f}"
        ),
    ]


if __name__ == "__main__":
    for r in run():
        print(r.row())
