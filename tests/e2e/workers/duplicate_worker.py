"""A worker process that handles a given list of deliveries, started in step with another.

Used by ``tests/e2e/test_concurrency.py`` to have two real processes handle the same message
ids at the same time (what two Lambda invocations do when SQS delivers a message twice).

Environment:

* ``APIX_DATABASE_URL`` / ``APIX_QUEUE_URL``: the test's database.
* ``APIX_TEST_MESSAGE_IDS``: JSON list of message ids, handled as one batch, in that order.
* ``APIX_TEST_RUN_LOG``: one line ``<message id> <pid>`` is appended per processor body run.
* ``APIX_TEST_SLEEP``: seconds the processor body sleeps (so the two runs overlap).
* ``APIX_TEST_READY`` / ``APIX_TEST_GO``: the worker creates READY once started, then waits for
  GO to exist before handling, so both processes begin together.

Prints one JSON line: ``[{"message_id": ..., "kind": ..., "error": ..., "elapsed": ...}, ...]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from apix_core import App, Message, ProcessorContext
from apix_core.transport.base import ReceivedMessage

TENANT = "acme"
RUN_LOG = os.environ["APIX_TEST_RUN_LOG"]
SLEEP = float(os.environ.get("APIX_TEST_SLEEP", "0.5"))
CREATED = datetime(2024, 1, 1, tzinfo=UTC)


def build_app() -> App:
    app = App("dups", tenant_id=TENANT)

    @app.processor("slow", consumes="in")
    def slow(message: Message, ctx: ProcessorContext) -> None:
        key = message.payload["key"]
        fd = os.open(RUN_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{key} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
        time.sleep(SLEEP)
        ctx.persist_entity(key, "thing", "dups", {"key": key, "pid": os.getpid()})

    return app


def delivery(message_id: str) -> ReceivedMessage:
    body = Message(
        message_id=message_id, tenant_id=TENANT, payload={"key": message_id}, created_at=CREATED
    ).to_json()
    return ReceivedMessage(
        queue="in", message_id=message_id, body=body, attributes={"tenant_id": TENANT}
    )


async def main() -> None:
    ids = json.loads(os.environ["APIX_TEST_MESSAGE_IDS"])
    app = build_app()
    await app.start()
    try:
        deliveries = [delivery(mid) for mid in ids]
        ready, go = os.environ.get("APIX_TEST_READY"), os.environ.get("APIX_TEST_GO")
        if ready and go:
            Path(ready).touch()
            while not Path(go).exists():
                await asyncio.sleep(0.002)
        started = time.monotonic()
        outcomes = await app.process("in", deliveries)
        elapsed = round(time.monotonic() - started, 3)
        print(
            json.dumps(
                [
                    {
                        "message_id": o.delivery.message_id,
                        "kind": o.kind.value,
                        "error": o.error.code if o.error else None,
                        # Informative only (shows the loser waited): never asserted.
                        "elapsed": elapsed,
                    }
                    for o in outcomes
                ]
            ),
            flush=True,
        )
    finally:
        await app.close()


if __name__ == "__main__":
    asyncio.run(main())
