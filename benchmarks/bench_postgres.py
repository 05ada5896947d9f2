"""PostgreSQL benchmark: the exactly-once store path, batched vs one transaction per message,
and the local queue shared by 1, 2 and 4 worker processes.

Run: ``python benchmarks/bench_postgres.py`` (PostgreSQL at ``APIX_BENCH_PG_URL``, default
``postgresql://postgres@127.0.0.1:5432/postgres``; a scratch database is created and dropped).
Options: ``--messages N`` (store path, per mode), ``--queue-messages N``, ``--concurrency C``.

Store path: ``app.handler("ingest").handle_batch(deliveries)`` with deliveries built in memory;
each message claims its idempotency row, writes an entity (+ version + state transition) and an
outbox row in the transaction, then the output is dispatched to the local queue and marked sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from apix_core import App, Message, ProcessorContext
from apix_core.transport.base import OutgoingMessage, ReceivedMessage

ADMIN_URL = os.environ.get("APIX_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


# -- scratch database ---------------------------------------------------------------------------
def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_dsn(ADMIN_URL))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database() -> tuple[str, str]:
    name = f"apix_bench_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rpartition("/")[0]
    return name, f"{base}/{name}"


async def drop_database(name: str) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- store path ---------------------------------------------------------------------------------
def store_app(url: str) -> App:
    app = App("bench", database_url=url, queue_url=url, auto_migrate=True, tenant_id="acme")

    @app.processor("ingest", consumes="in", produces=["out"])
    async def ingest(message: Message, ctx: ProcessorContext) -> dict:
        ctx.persist_entity(str(message.payload["id"]), "item", "bench", message.payload)
        return {"id": message.payload["id"]}

    return app


def deliveries(prefix: str, count: int) -> list[ReceivedMessage]:
    out = []
    for i in range(count):
        tenant = "acme" if i % 2 else "globex"
        msg = Message(message_id=f"{prefix}-{i}", tenant_id=tenant, payload={"id": f"{prefix}{i}"})
        out.append(
            ReceivedMessage(
                queue="in",
                message_id=msg.message_id,
                body=msg.to_json(),
                receive_count=1,
                attributes={"tenant_id": tenant},
            )
        )
    return out


async def run_store_path(url: str, count: int, batch: int, concurrency: int, label: str) -> float:
    """Messages per second through handle_batch with ``batch`` messages per call."""
    app = store_app(url)
    await app.start()
    handler = app.handler("ingest")
    items = deliveries(label, count)
    # One tenant per batch: the handler opens one transaction per tenant group.
    by_tenant: dict[str, list[ReceivedMessage]] = {}
    for d in items:
        by_tenant.setdefault(d.attributes["tenant_id"], []).append(d)
    chunks = [
        group[i : i + batch] for group in by_tenant.values() for i in range(0, len(group), batch)
    ]
    await handler.handle_batch(deliveries(f"warm-{label}", batch))  # warm the pool and caches
    queue: asyncio.Queue[list[ReceivedMessage]] = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)
    done = 0

    async def lane() -> None:
        nonlocal done
        while not queue.empty():
            chunk = queue.get_nowait()
            outcomes = await handler.handle_batch(chunk)
            assert all(o.kind.value == "completed" for o in outcomes), outcomes[0]
            done += len(chunk)

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await app.close()
    assert done == count
    return count / elapsed


# -- shared queue with worker processes --------------------------------------------------------
def queue_app(url: str) -> App:
    app = App("shared", database_url=url, queue_url=url, auto_migrate=False, batch_size=50)

    @app.processor("ingest", consumes="in", produces=["mid"])
    async def ingest(message: Message, ctx: ProcessorContext) -> dict:
        return {"id": message.payload["id"]}

    @app.processor("store", consumes="mid")
    async def store(message: Message, ctx: ProcessorContext) -> None:
        ctx.persist_entity(str(message.payload["id"]), "item", "bench", message.payload)

    return app


async def worker_main(url: str, go_file: str) -> None:
    from apix_core.runtime import LocalRunner

    app = queue_app(url)
    await app.start()
    assert app.store is not None
    async with app.store.db.connect():
        pass
    Path(go_file + ".ready-" + str(os.getpid())).touch()
    while not Path(go_file).exists():
        await asyncio.sleep(0.005)
    stats = await LocalRunner(app, fire_schedules=False, max_seconds=600).run()
    await app.close()
    print(json.dumps({"completed": stats.completed, "dead": stats.dead_lettered}))


async def enqueue(url: str, count: int) -> None:
    app = queue_app(url)
    await app.start()
    assert app.transport is not None
    batch = []
    for i in range(count):
        msg = Message(message_id=f"q-{i}", tenant_id="acme", payload={"id": i})
        batch.append(OutgoingMessage(msg.message_id, msg.to_json(), 0.0, {"tenant_id": "acme"}))
        if len(batch) == 1000:
            await app.transport.send_batch("in", batch)
            batch = []
    if batch:
        await app.transport.send_batch("in", batch)
    await app.close()


def run_queue(url: str, workers: int, count: int) -> float:
    """Messages per second (each through both stages) with ``workers`` processes."""
    asyncio.run(enqueue(url, count))
    with tempfile.TemporaryDirectory() as tmp:
        go = str(Path(tmp) / "go")
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", url, go],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(workers)
        ]
        while len(list(Path(tmp).glob("go.ready-*"))) < workers:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(procs[0].communicate()[1][-2000:])
            time.sleep(0.01)
        start = time.perf_counter()
        Path(go).touch()
        completed = 0
        for p in procs:
            out, err = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(err[-2000:])
            result = json.loads(out.strip().splitlines()[-1])
            assert result["dead"] == 0
            completed += result["completed"]
        elapsed = time.perf_counter() - start
    assert completed == 2 * count, completed
    # The drain check needs two quiet polls (~0.5 s) before a worker exits; not throughput.
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--queue-messages", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--skip-queue", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("URL", "GO_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker_main(*args.worker))
        return

    # One pooled connection per lane (a warm function would use one or two).
    os.environ.setdefault("APIX_DB_POOL_SIZE", str(args.concurrency))
    print(f"PostgreSQL: {ADMIN_URL.rpartition('@')[2]}   cpus: {os.cpu_count()}")
    print(f"store path: {args.messages} messages per mode, {args.concurrency} concurrent lanes")
    results: dict[str, float] = {}
    for label, batch in (("batched (10/tx)", 10), ("1 message/tx", 1)):
        name, url = asyncio.run(create_database())
        try:
            results[label] = asyncio.run(
                run_store_path(url, args.messages, batch, args.concurrency, f"b{batch}")
            )
        finally:
            asyncio.run(drop_database(name))
    batched, single = results["batched (10/tx)"], results["1 message/tx"]
    print()
    print(f"{'mode':<20}{'msg/s':>10}")
    for label, rate in results.items():
        print(f"{label:<20}{rate:>10,.0f}")
    print(f"{'ratio':<20}{batched / single:>10.1f}x   (goal: >=10,000 msg/s batched, >=5x)")

    if args.skip_queue:
        return
    print()
    print(f"shared local queue: {args.queue_messages} messages x 2 stages, worker processes")
    print(f"{'workers':<20}{'msg/s':>10}{'speedup':>10}")
    base = None
    for workers in (1, 2, 4):
        name, url = asyncio.run(create_database())
        try:
            asyncio.run(_migrate(url))
            rate = run_queue(url, workers, args.queue_messages)
        finally:
            asyncio.run(drop_database(name))
        base = base or rate
        print(f"{workers:<20}{rate:>10,.0f}{rate / base:>9.1f}x")


async def _migrate(url: str) -> None:
    from apix_core.store.database import Database

    db = Database(url)
    await db.upgrade()
    await db.dispose()


if __name__ == "__main__":
    main()
