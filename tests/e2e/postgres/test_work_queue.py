"""Several worker processes share one PostgreSQL queue (FOR UPDATE SKIP LOCKED): effects once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from apix_core import Message
from apix_core.store.database import Database
from apix_core.transport.base import OutgoingMessage
from apix_core.transport.local import LocalTransport

WORKER = Path(__file__).parents[1] / "workers" / "queue_worker.py"
MESSAGES = 10_000
TENANTS = ("acme", "globex")


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_four_workers_process_ten_thousand_messages_exactly_once(
    backend: str, db: Database, admin_db: Database, database_url: str, record_property
) -> None:
    if backend != "postgres":
        pytest.skip("a queue shared by worker processes is the PostgreSQL (SKIP LOCKED) case")
    # GIVEN 10,000 messages of two tenants on the first queue of a two-stage pipeline
    transport = LocalTransport(db)
    batch: list[OutgoingMessage] = []
    for i in range(MESSAGES):
        tenant = TENANTS[i % 2]
        msg = Message(message_id=f"m-{i}", tenant_id=tenant, payload={"id": i})
        batch.append(OutgoingMessage(msg.message_id, msg.to_json(), 0.0, {"tenant_id": tenant}))
        if len(batch) == 1000:
            await transport.send_batch("in", batch)
            batch = []

    # WHEN four worker processes run the pipeline until the queues drain
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), database_url, "480"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    stats = []
    for p in procs:
        out, err = p.communicate(timeout=540)
        assert p.returncode == 0, err[-3000:]
        stats.append(json.loads(out.strip().splitlines()[-1]))

    # THEN every message had its effect exactly once (read by the superuser: every tenant)
    async with admin_db.transaction(maintenance=True, write=False) as conn:

        async def scalar(sql: str) -> int:
            return int((await conn.execute(sa.text(sql))).scalar() or 0)

        entities = await scalar("SELECT count(*) FROM apix_entities")
        distinct = await scalar("SELECT count(DISTINCT external_id) FROM apix_entities")
        not_v1 = await scalar("SELECT count(*) FROM apix_entities WHERE version <> 1")
        versions = await scalar("SELECT count(*) FROM apix_entity_versions")
        transitions = await scalar("SELECT count(*) FROM apix_state_transitions")
        idem = {
            r.processor: r.n
            for r in await conn.execute(
                sa.text("SELECT processor, count(*) AS n FROM apix_idempotency GROUP BY 1")
            )
        }
        unsent = await scalar("SELECT count(*) FROM apix_outbox WHERE sent_at IS NULL")
        outbox_rows = await scalar("SELECT count(*) FROM apix_outbox")
        dead = await scalar("SELECT count(*) FROM apix_dead_letters")
        queued = await scalar("SELECT count(*) FROM apix_queue_messages")
    assert (entities, distinct, not_v1, versions) == (MESSAGES, MESSAGES, 0, MESSAGES)
    assert transitions == MESSAGES
    assert idem == {"ingest": MESSAGES, "store": MESSAGES}
    # The queues live in the store's database: outputs were enqueued in the processing
    # transaction itself, so no outbox row was needed.
    assert (outbox_rows, unsent) == (0, 0)
    assert (dead, queued) == (0, 0)
    assert sum(s["dead_lettered"] for s in stats) == 0
    # Every worker took part (the queue really was shared).
    assert all(s["completed"] > 0 for s in stats)
    assert sum(s["completed"] for s in stats) == 2 * MESSAGES
    # AND no message was delivered twice: idempotency would hide a double delivery (the second
    # claim finds the first and reports DUPLICATE), so the queue itself must not hand a message
    # to two workers (SKIP LOCKED), and nothing was redelivered after a visibility timeout.
    assert sum(s["duplicates"] for s in stats) == 0
    assert sum(s["retried"] for s in stats) == 0
    for stage in ("ingest", "store"):
        assert sum(s["ran"].get(stage, 0) for s in stats) == MESSAGES

    # The measured throughput (both stages, from the first worker's start to the last one's
    # end, process start-up included) goes into the test report (junit-xml property).
    elapsed = max(s["finished_at"] for s in stats) - min(s["started_at"] for s in stats)
    throughput = 2 * MESSAGES / elapsed
    record_property("throughput_msg_s", round(throughput, 1))
    print(
        f"shared queue: {2 * MESSAGES} messages through 2 stages in {elapsed:.2f}s "
        f"({throughput:.0f} msg/s, 4 workers)"
    )
