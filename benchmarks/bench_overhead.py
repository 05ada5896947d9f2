"""Framework overhead per message: apix vs Powertools' BatchProcessor, side by side.

Both run a no-op record handler over the same SQS-shaped batches of 10 records. apix also parses
and validates the versioned envelope, scopes the tenant and checks tracing; persistence is off
(``enable_persistence=False``), so no database is touched. Reported: microseconds per record,
best of several runs, and the ratio apix / Powertools (goal ≤ 3×, absolute goal ≤ 10 µs).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from _common import Result, best_of, spread, sqs_record

from apix_core import App, Message
from apix_core.transport.base import ReceivedMessage

BATCH = 10
BATCHES = 2000
RUNS = 5


def _bodies() -> list[str]:
    return [
        Message(
            tenant_id="bench", payload={"order_id": i, "qty": i % 7, "sku": f"SKU-{i}"}
        ).to_json()
        for i in range(BATCH)
    ]


def bench_apix() -> tuple[float, list[float]]:
    app = App("bench-overhead", tenant_id="bench")

    @app.processor("noop", consumes="in", enable_persistence=False)
    async def noop(message: Message, ctx: Any) -> None:
        return None

    bodies = _bodies()
    records = [sqs_record(b) for b in bodies]

    async def main() -> tuple[float, list[float]]:
        await app.start()
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

        async def one_run() -> float:
            start = time.perf_counter()
            for _ in range(BATCHES):
                outcomes = await handler.handle_batch(deliveries())
            elapsed = time.perf_counter() - start
            assert all(o.kind.value == "completed" for o in outcomes)
            return elapsed / (BATCHES * BATCH) * 1e6

        await one_run()  # warm-up
        samples = [await one_run() for _ in range(RUNS)]
        await app.close()
        return min(samples), samples

    return asyncio.run(main())


def bench_powertools() -> tuple[float, list[float]]:
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
        elapsed = time.perf_counter() - start
        assert response == {"batchItemFailures": []}
        return elapsed / (BATCHES * BATCH) * 1e6

    one_run()
    return best_of(RUNS, one_run)


def run() -> list[Result]:
    apix_us, apix_samples = bench_apix()
    pt_us, pt_samples = bench_powertools()
    ratio = apix_us / pt_us
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
        Result("overhead ratio apix / Powertools", ratio, "×", "≤ 3"),
    ]


if __name__ == "__main__":
    for r in run():
        print(r.row())
