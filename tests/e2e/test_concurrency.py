"""Concurrent duplicate deliveries: one wins, the other waits or is released, never both run.

Two real processes (``workers/duplicate_worker.py``) handle the same message ids at the same
moment; the processor sleeps so the two transactions truly overlap. On SQLite the winner holds
the database write lock; on PostgreSQL the loser's idempotency insert blocks on the winner's row.
Runs are counted in an ``O_APPEND`` file, so they are durable and visible across processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from apix_core import App, OutcomeKind
from apix_core.store.models import entities, entity_versions

WORKER = Path(__file__).parent / "workers" / "duplicate_worker.py"
TENANT = "acme"
LOSER_KINDS = {OutcomeKind.DUPLICATE.value, OutcomeKind.RETRY.value}


def worker_env(
    database_url: str, queue_url: str, run_log: Path, ids: list[str], sleep: float
) -> dict[str, str]:
    return {
        **os.environ,
        "APIX_DATABASE_URL": database_url,
        "APIX_QUEUE_URL": queue_url,
        "APIX_LOG_LEVEL": "WARNING",
        "APIX_TEST_MESSAGE_IDS": json.dumps(ids),
        "APIX_TEST_RUN_LOG": str(run_log),
        "APIX_TEST_SLEEP": str(sleep),
    }


def run_together(envs: list[dict[str, str]], tmp_path: Path) -> list[list[dict[str, Any]]]:
    """Start one worker per env, release them at once, return each one's outcomes."""
    go = tmp_path / "go"
    procs = []
    for i, env in enumerate(envs):
        ready = tmp_path / f"ready-{i}"
        env = {**env, "APIX_TEST_READY": str(ready), "APIX_TEST_GO": str(go)}
        procs.append(
            (
                ready,
                subprocess.Popen(
                    [sys.executable, str(WORKER)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    try:
        # A liveness bound only (process start-up), not a timing assertion.
        give_up = time.monotonic() + 120
        while not all(ready.exists() for ready, _ in procs):
            for _, p in procs:
                assert p.poll() is None, p.communicate()[1][-3000:]
            assert time.monotonic() < give_up, "workers did not start"
            time.sleep(0.01)
        go.touch()
        results = []
        for _, p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def run_alone(env: dict[str, str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, str(WORKER)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def runs(run_log: Path) -> Counter[str]:
    lines = run_log.read_text().splitlines() if run_log.exists() else []
    return Counter(line.split(" ", 1)[0] for line in lines)


async def versions(app: App) -> dict[str, int]:
    assert app.store is not None
    stmt = (
        sa.select(entities.c.external_id, sa.func.count(entity_versions.c.version))
        .join(entity_versions, entity_versions.c.entity_id == entities.c.id)
        .where(entities.c.tenant_id == TENANT)
        .group_by(entities.c.external_id)
    )
    async with app.store.db.transaction(tenant_id=TENANT, write=False) as conn:
        return {k: int(v) for k, v in (await conn.execute(stmt)).all()}


async def schema_ready(make_app) -> App:
    """Migrate once up front so the two workers do not race on creating the schema."""
    app: App = make_app("dups", tenant_id=TENANT)
    await app.start()
    return app


@pytest.mark.slow
async def test_two_processes_same_message_run_the_processor_once(
    make_app, database_url: str, queue_url: str, tmp_path: Path
) -> None:
    # GIVEN two worker processes holding a delivery of the same message id
    app = await schema_ready(make_app)
    run_log = tmp_path / "runs.log"
    env = worker_env(database_url, queue_url, run_log, ["order-1"], sleep=0.5)

    # WHEN both handle it at the same moment (the processor takes 0.5 s)
    first, second = run_together([env, env], tmp_path)

    # THEN the body ran once; one delivery completed, the other is a duplicate or a retry
    kinds = sorted([first[0]["kind"], second[0]["kind"]])
    assert OutcomeKind.COMPLETED.value in kinds, kinds
    kinds.remove(OutcomeKind.COMPLETED.value)
    assert kinds[0] in LOSER_KINDS, kinds
    assert runs(run_log) == {"order-1": 1}
    assert await versions(app) == {"order-1": 1}

    # WHEN the loser's delivery comes back (a released one is redelivered)
    again = run_alone(env)

    # THEN it is a duplicate and the body still ran once
    assert [o["kind"] for o in again] == [OutcomeKind.DUPLICATE.value]
    assert runs(run_log) == {"order-1": 1}
    assert await versions(app) == {"order-1": 1}


@pytest.mark.slow
async def test_overlapping_batches_run_each_message_once(
    make_app, database_url: str, queue_url: str, tmp_path: Path
) -> None:
    # GIVEN two workers whose batches share two of their four messages, in opposite orders
    # (on PostgreSQL the two claims can deadlock; the loser must be released, not run)
    app = await schema_ready(make_app)
    run_log = tmp_path / "runs.log"
    ids = [f"order-{i}" for i in range(6)]
    env_a = worker_env(database_url, queue_url, run_log, ids[:4], sleep=0.1)
    env_b = worker_env(database_url, queue_url, run_log, ids[2:][::-1], sleep=0.1)

    # WHEN both handle their batch at the same moment
    outcomes_a, outcomes_b = run_together([env_a, env_b], tmp_path)

    # THEN each message completed in exactly one worker, and its body ran exactly once
    completed = Counter(
        o["message_id"] for o in outcomes_a + outcomes_b if o["kind"] == OutcomeKind.COMPLETED.value
    )
    assert all(n == 1 for n in completed.values()), completed
    assert all(o["kind"] in LOSER_KINDS | {"completed"} for o in outcomes_a + outcomes_b)
    ran = runs(run_log)
    assert all(n == 1 for n in ran.values()), ran
    assert set(ran) == set(completed)

    # WHEN every released delivery is redelivered
    retried = [o["message_id"] for o in outcomes_a + outcomes_b if o["kind"] == "retry"]
    if retried:
        run_alone(worker_env(database_url, queue_url, run_log, retried, sleep=0.0))

    # THEN every message ran exactly once in total and has exactly one entity version
    assert runs(run_log) == dict.fromkeys(ids, 1)
    assert await versions(app) == dict.fromkeys(ids, 1)
