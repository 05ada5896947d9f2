"""A worker process of the shared-queue test (run by test_work_queue.py; not a test module).

Usage: python queue_worker.py DATABASE_URL MAX_SECONDS
Runs the two-stage pipeline until its queues drain; prints one JSON line: the runner's counts
(``duplicates``: deliveries whose claim was already taken, i.e. messages this worker received
that another delivery had processed), how many times each processor body ran here, and the
wall-clock start and end of the run (``time.time()``) for the throughput figure.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

from apix_core import App, Message, ProcessorContext
from apix_core.runtime import LocalRunner

RAN: Counter[str] = Counter()


def build_app(url: str) -> App:
    app = App("shared", database_url=url, queue_url=url, auto_migrate=False, batch_size=50)

    @app.processor("ingest", consumes="in", produces=["mid"])
    async def ingest(message: Message, ctx: ProcessorContext) -> dict:
        RAN["ingest"] += 1
        return {"id": message.payload["id"]}

    @app.processor("store", consumes="mid")
    async def store(message: Message, ctx: ProcessorContext) -> None:
        RAN["store"] += 1
        ctx.persist_entity(str(message.payload["id"]), "item", "test", message.payload)

    return app


async def main(url: str, max_seconds: float) -> None:
    app = build_app(url)
    started_at = time.time()
    try:
        stats = await LocalRunner(app, fire_schedules=False, max_seconds=max_seconds).run()
    finally:
        await app.close()
    finished_at = time.time()
    print(
        json.dumps(
            {
                "completed": stats.completed,
                "dead_lettered": stats.dead_lettered,
                "duplicates": sum(q.duplicates for q in stats.queues.values()),
                "retried": sum(q.retried for q in stats.queues.values()),
                "ran": dict(RAN),
                "started_at": started_at,
                "finished_at": finished_at,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
