"""Exactly-once effect under SIGKILL (DESIGN §2), with real worker processes.

A worker process (``workers/pipeline_worker.py``) runs a three-stage pipeline and kills itself
with SIGKILL at a chosen point; a second process, without the crash, drains what is left.
Every stage records an entity whose content carries a per-run nonce, so a second effect of a
message would be a second entity version; the tests require exactly one version of each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from apix_core import App
from apix_core.store.database import Database
from apix_core.store.models import (
    dead_letters,
    entities,
    entity_versions,
    idempotency,
    outbox,
    queue_messages,
)

WORKER = Path(__file__).parent / "workers" / "pipeline_worker.py"
N = 40
TENANT = "acme"


def run_worker(
    database_url: str,
    queue_url: str,
    run_log: Path,
    crash_at: str = "none",
    crash_after: int = 0,
    *,
    shared: bool = False,
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "APIX_DATABASE_URL": database_url,
        "APIX_QUEUE_URL": queue_url,
        "APIX_VISIBILITY_TIMEOUT": "1",
        "APIX_BATCH_SIZE": "10",
        "APIX_LOG_LEVEL": "WARNING",
        "APIX_TEST_RUN_LOG": str(run_log),
        "APIX_TEST_CRASH_AT": crash_at,
        "APIX_TEST_CRASH_AFTER": str(crash_after),
        "APIX_TEST_SHARED_DB": "1" if shared else "0",
    }
    return subprocess.run(
        [sys.executable, str(WORKER)], env=env, capture_output=True, text=True, timeout=180
    )


def runs_of(run_log: Path, stage: str) -> Counter[str]:
    lines = run_log.read_text().splitlines() if run_log.exists() else []
    return Counter(key for s, key in (line.split(" ", 1) for line in lines) if s == stage)


async def seed(app: App) -> None:
    await app.start()
    for i in range(N):
        await app.send("raw", {"id": i}, tenant_id=TENANT, message_id=f"order-{i}")


async def versions_per_entity(db: Database, canonical_type: str) -> dict[str, int]:
    """external_id → number of versions, for every entity of a type."""
    stmt = (
        sa.select(entities.c.external_id, sa.func.count(entity_versions.c.version))
        .join(entity_versions, entity_versions.c.entity_id == entities.c.id)
        .where(entities.c.tenant_id == TENANT, entities.c.canonical_type == canonical_type)
        .group_by(entities.c.external_id)
    )
    async with db.transaction(tenant_id=TENANT, write=False) as conn:
        return {k: int(v) for k, v in (await conn.execute(stmt)).all()}


async def count(db: Database, stmt: sa.Select) -> int:  # type: ignore[type-arg]
    async with db.transaction(tenant_id=TENANT, write=False) as conn:
        return int((await conn.execute(stmt)).scalar_one())


CRASH_POINTS = [
    # (crash point, events allowed to pass before the kill, queues in the store's database)
    ("process", 15, False),
    ("after_commit", 1, False),
    ("mid_dispatch", 1, False),
    ("before_mark_sent", 1, False),
    ("before_ack", 1, False),
    # Queues in the store's database: outputs are enqueued inside the processing transaction,
    # so there is no dispatch window; the kill points are around it.
    ("process", 15, True),
    ("before_ack", 1, True),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("crash_at", "crash_after", "shared"),
    CRASH_POINTS,
    ids=[f"{c}{'-shared-db' if shared else ''}" for c, _, shared in CRASH_POINTS],
)
async def test_sigkill_loses_nothing_and_duplicates_no_effect(
    make_app,
    database_url: str,
    queue_url: str,
    tmp_path: Path,
    crash_at: str,
    crash_after: int,
    shared: bool,
) -> None:
    # GIVEN N orders queued for a three-stage pipeline (ingest → enrich → 2 x sink)
    if shared:
        queue_url = database_url
    app: App = make_app("crashy", tenant_id=TENANT, queue_url=queue_url)
    await seed(app)
    run_log = tmp_path / "runs.log"

    # WHEN a worker is SIGKILLed at the crash point, then a fresh worker drains the queues
    crashed = run_worker(database_url, queue_url, run_log, crash_at, crash_after, shared=shared)
    assert crashed.returncode == -signal.SIGKILL, (
        f"the worker did not reach {crash_at!r}: rc={crashed.returncode}\n{crashed.stderr[-3000:]}"
    )
    recovered = run_worker(database_url, queue_url, run_log, shared=shared)
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    stats = json.loads(recovered.stdout.strip().splitlines()[-1])

    # THEN nothing is left in flight and nothing was dead-lettered
    assert app.transport is not None and app.store is not None
    qdb = app.transport.db  # type: ignore[attr-defined]
    assert await count(qdb, sa.select(sa.func.count()).select_from(queue_messages)) == 0
    assert await count(qdb, sa.select(sa.func.count()).select_from(dead_letters)) == 0

    # THEN every message had its effect exactly once at every stage (one version per entity)
    db = app.store.db
    keys = [str(i) for i in range(N)]
    parts = [f"{i}-{p}" for i in range(N) for p in (0, 1)]
    assert await versions_per_entity(db, "order") == dict.fromkeys(keys, 1)
    assert await versions_per_entity(db, "enriched") == dict.fromkeys(keys, 1)
    assert await versions_per_entity(db, "seen") == dict.fromkeys(parts, 1)
    for processor, expected in (("ingest", N), ("enrich", N), ("sink", 2 * N)):
        assert (
            await count(
                db,
                sa.select(sa.func.count())
                .select_from(idempotency)
                .where(idempotency.c.tenant_id == TENANT, idempotency.c.processor == processor),
            )
            == expected
        )

    # THEN every outbox row was sent and marked sent (with queues in the store's database,
    # outputs never needed one); the terminal stage saw every output
    expected_outbox = 0 if shared else 3 * N
    assert await count(db, sa.select(sa.func.count()).select_from(outbox)) == expected_outbox
    unsent = sa.select(sa.func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
    assert await count(db, unsent) == 0
    assert set(runs_of(run_log, "sink")) == set(parts)

    # THEN committed work was never re-run: a redelivery of it was reported as a duplicate
    enrich_runs = runs_of(run_log, "enrich")
    assert set(enrich_runs) == set(keys)
    if crash_at == "process":
        # The kill rolled back the open transaction, so the killed batch ran again.
        assert sum(enrich_runs.values()) > N
    else:
        assert sum(enrich_runs.values()) == N, enrich_runs
        assert stats["mid"]["duplicates"] >= 1, stats
    assert stats["mid"]["dead_lettered"] == 0
