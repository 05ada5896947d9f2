"""A three-stage pipeline run as a real process that can SIGKILL itself at a chosen point.

Used by ``tests/e2e/test_exactly_once.py``. Stages: ``ingest`` (raw → mid), ``enrich`` (mid →
done, two outputs per input) and ``sink`` (done). Every stage records an entity whose content
carries a per-run nonce, so a second *effect* of one message would show up as a second entity
version; every body run is appended to a run log (``O_APPEND``), so re-runs are visible too.

Environment:

* ``APIX_DATABASE_URL`` / ``APIX_QUEUE_URL`` / ``APIX_VISIBILITY_TIMEOUT`` / ``APIX_BATCH_SIZE``:
  read by the app as usual.
* ``APIX_TEST_RUN_LOG``: file that gets one line ``<stage> <key>`` per processor body run.
* ``APIX_TEST_CRASH_AT``: where to ``SIGKILL`` this process (all on the ``enrich`` stage):
  ``none``, ``process`` (inside the processor body), ``after_commit`` (transaction committed,
  nothing dispatched), ``mid_dispatch`` (half of a batch of outgoing messages sent),
  ``before_mark_sent`` (all sent, outbox rows not marked sent), ``before_ack`` (done, input not
  acknowledged). With ``APIX_TEST_SHARED_DB=1`` the app keeps its queues in the store's database
  (``APIX_QUEUE_URL`` must equal ``APIX_DATABASE_URL``) and enqueues outputs in the processing
  transaction, so only ``process`` and ``before_ack`` apply.
* ``APIX_TEST_CRASH_AFTER``: how many events at that point pass before the kill (default 0).

Prints one JSON line of per-queue stats when it drains.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import Sequence

from apix_core import App, Message, ProcessorContext
from apix_core.outbox import Dispatcher, OutboxRow
from apix_core.runtime import LocalRunner
from apix_core.store.database import Database
from apix_core.transport.base import OutgoingMessage, ReceivedMessage
from apix_core.transport.local import LocalTransport

CRASH_AT = os.environ.get("APIX_TEST_CRASH_AT", "none")
CRASH_AFTER = int(os.environ.get("APIX_TEST_CRASH_AFTER", "0"))
RUN_LOG = os.environ["APIX_TEST_RUN_LOG"]
TENANT = "acme"

_events: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Count an event at ``name``; die (a real SIGKILL, no cleanup) when it is the armed one."""
    if name != CRASH_AT:
        return
    _events[name] = _events.get(name, 0) + 1
    if _events[name] > CRASH_AFTER:
        os.kill(os.getpid(), signal.SIGKILL)


def log_run(stage: str, key: str) -> None:
    # O_APPEND + one write per line: the line survives the SIGKILL that may follow it.
    fd = os.open(RUN_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{stage} {key}\n".encode())
    finally:
        os.close(fd)


class CrashingTransport(LocalTransport):
    """The real local transport, with kill points around sending and acknowledging."""

    async def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        if queue == "done" and CRASH_AT == "mid_dispatch" and len(messages) >= 2:
            half = len(messages) // 2
            await super().send_batch(queue, messages[:half])
            crash_point("mid_dispatch")
            await super().send_batch(queue, messages[half:])
            return
        await super().send_batch(queue, messages)

    async def ack(self, queue: str, messages: Sequence[ReceivedMessage]) -> None:
        if queue == "mid" and messages:
            crash_point("before_ack")
        await super().ack(queue, messages)


class CrashingDispatcher(Dispatcher):
    """The real dispatcher of the ``enrich`` handler, with kill points around it."""

    async def dispatch(self, rows: Sequence[OutboxRow]) -> None:
        if rows:
            crash_point("after_commit")
        await super().dispatch(rows)

    async def mark_sent(self, rows: Sequence[OutboxRow]) -> None:
        if rows:
            crash_point("before_mark_sent")
        await super().mark_sent(rows)


def build_app(transport: LocalTransport | None) -> App:
    app = App("crashy", tenant_id=TENANT, transport=transport)

    @app.processor("ingest", consumes="raw", produces=["mid"])
    async def ingest(message: Message, ctx: ProcessorContext) -> dict:
        key = str(message.payload["id"])
        log_run("ingest", key)
        ctx.persist_entity(key, "order", "shop", {"id": key, "nonce": uuid.uuid4().hex})
        return {"id": key}

    @app.processor("enrich", consumes="mid", produces=["done"])
    def enrich(message: Message, ctx: ProcessorContext) -> None:
        # A sync body: it runs in a worker thread, and the kill comes from that thread.
        key = str(message.payload["id"])
        log_run("enrich", key)
        crash_point("process")
        ctx.persist_entity(key, "enriched", "shop", {"id": key, "nonce": uuid.uuid4().hex})
        ctx.send("done", {"id": key, "part": 0})
        ctx.send("done", {"id": key, "part": 1})

    @app.processor("sink", consumes="done")
    async def sink(message: Message, ctx: ProcessorContext) -> None:
        key = f"{message.payload['id']}-{message.payload['part']}"
        log_run("sink", key)
        ctx.persist_entity(key, "seen", "sink", {"key": key, "nonce": uuid.uuid4().hex})

    return app


async def main() -> None:
    if os.environ.get("APIX_TEST_SHARED_DB") == "1":
        # Queues in the store's database: the app builds its transport on the store's
        # connection pool (so outputs are enqueued in the processing transaction); give that
        # transport the kill points.
        app = build_app(None)
        await app.start()
        assert isinstance(app.transport, LocalTransport)
        app.transport.__class__ = CrashingTransport
        transport: LocalTransport = app.transport
    else:
        queue_db = Database(os.environ["APIX_QUEUE_URL"])
        await queue_db.upgrade()
        transport = CrashingTransport(
            queue_db,
            visibility_timeout=float(os.environ.get("APIX_VISIBILITY_TIMEOUT", "1")),
            owns_database=True,
        )
        app = build_app(transport)
        await app.start()
    try:
        assert app.store is not None
        app.handler("enrich").dispatcher = CrashingDispatcher(transport, app.store)
        stats = await LocalRunner(app, max_seconds=90).run()
        print(
            json.dumps(
                {
                    q: {
                        "completed": s.completed,
                        "duplicates": s.duplicates,
                        "retried": s.retried,
                        "dead_lettered": s.dead_lettered,
                    }
                    for q, s in stats.queues.items()
                }
            ),
            flush=True,
        )
    finally:
        await app.close()
        await transport.close()


if __name__ == "__main__":
    asyncio.run(main())
