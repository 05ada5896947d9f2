"""PostgreSQL benchmark: the exactly-once store path, batched vs one transaction per message,
and the local queue shared by 1, 2 and 4 worker processes.

Run: ``python benchmarks/bench_postgres.py`` (PostgreSQL at ``APIX_BENCH_PG_URL``, default
``postgresql://postgres@127.0.0.1:5432/postgres``; a scratch database is created and dropped).
Options: ``--messages N`` (store path, per mode), ``--queue-messages N``, ``--concurrency C``
(store path: transactions in flight in all, split over the worker processes).

Store path: ``app.handler("ingest").handle_batch(deliveries)`` with deliveries built in memory;
each message claims its idempotency row, writes an entity (+ version + state transition) and its
outgoing message in the transaction. With the queues in the store's database (the PostgreSQL
default) the outgoing message is a queue row written in that transaction (the queue table is the
outbox); the "separate outbox" contender keeps its queues in another database, so each message
also pays an ``apix_outbox`` row, the dispatch after commit and the mark-sent update.

The store path runs in worker processes, each with its own App and ``--concurrency`` lanes
(concurrent ``handle_batch`` calls), started together: one process is one warm function
instance; two use the machine's two cores as two instances would. Python runs one core per
process, so one process leaves part of the second core to PostgreSQL and part idle.

The app connects as a LOGIN member of ``apix_app`` (not the owner, not a superuser), so
row-level security is enforced as in production.

Worker processes run on the event loop apix creates for a function (``run_sync``, the CLI):
uvloop when installed (``APIX_EVENT_LOOP``, see ``apix_core/runtime/loop.py``). One contender
runs the headline configuration on asyncio's own loop, side by side.
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
from typing import Any

from _common import Result

from apix_core import App, Message, ProcessorContext
from apix_core.runtime.loop import loop_name
from apix_core.runtime.loop import run as run_on_loop
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
APP_ROLE = "apix_bench_login"


async def app_role_url(url: str) -> str:
    """Migrate ``url`` as the owner; return the URL for a LOGIN member of ``apix_app``."""
    await _migrate(url)
    await _admin(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') "
        f"THEN CREATE ROLE {APP_ROLE} LOGIN IN ROLE apix_app; END IF; "
        "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    )
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{APP_ROLE}@{rest.split('@', 1)[1]}"


def store_app(url: str, queue_url: str | None = None) -> App:
    app = App(
        "bench",
        database_url=url,
        queue_url=queue_url or url,
        auto_migrate=False,
        tenant_id="acme",
    )

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


async def run_store_path(
    url: str,
    count: int,
    batch: int,
    concurrency: int,
    label: str,
    queue_url: str | None = None,
    go_file: str | None = None,
) -> tuple[float, float, float, str]:
    """Wall-clock start and end of ``count`` messages through handle_batch, ``batch`` messages
    per call on ``concurrency`` lanes, the process's CPU seconds in between, and the event
    loop's kind. With ``go_file``, the clock starts when that file appears (several processes
    start together)."""
    app = store_app(url, queue_url)
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

    if go_file is not None:
        Path(f"{go_file}.ready-{os.getpid()}").touch()
        while not Path(go_file).exists():
            await asyncio.sleep(0.001)
    start, cpu = time.time(), time.process_time()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    end, cpu = time.time(), time.process_time() - cpu
    await app.close()
    assert done == count
    return start, end, cpu, loop_name(asyncio.get_running_loop())


def run_store_processes(
    url: str,
    count: int,
    batch: int,
    concurrency: int,
    processes: int,
    label: str,
    queue_url: str | None = None,
    event_loop: str = "auto",
) -> tuple[float, float, str]:
    """Messages per second of ``processes`` worker processes (as many warm function instances)
    sharing ``count`` messages, from the first start to the last end; the client CPU µs per
    message; the event loop the workers ran on."""
    share = count // processes
    spans, _ = run_workers(
        [
            [
                "--store-worker",
                json.dumps(
                    [url, share, batch, concurrency, f"{label}p{i}", queue_url, "{go}", event_loop]
                ),
            ]
            for i in range(processes)
        ]
    )
    elapsed = max(s[1] for s in spans) - min(s[0] for s in spans)
    cpu_us = sum(s[2] for s in spans) / (share * processes) * 1e6
    return share * processes / elapsed, cpu_us, spans[0][3]


def run_workers(argvs: list[list[str]]) -> tuple[list[Any], float]:
    """Start one process of this script per argument list (``{go}`` in an argument is the
    start file's path), start them together once all are ready, and return the JSON each
    printed last, and the seconds from the start signal to the last exit."""
    with tempfile.TemporaryDirectory() as tmp:
        go = str(Path(tmp) / "go")
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, *(a.replace("{go}", go) for a in argv)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for argv in argvs
        ]
        while len(list(Path(tmp).glob("go.ready-*"))) < len(procs):
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(procs[0].communicate()[1][-2000:])
            time.sleep(0.01)
        start = time.perf_counter()
        Path(go).touch()
        results = []
        for p in procs:
            out, err = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(err[-2000:])
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results, time.perf_counter() - start


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
    results, elapsed = run_workers([["--worker", url, "{go}"] for _ in range(workers)])
    assert all(r["dead"] == 0 for r in results)
    completed = sum(r["completed"] for r in results)
    assert completed == 2 * count, completed
    # The drain check needs two quiet polls (~0.5 s) before a worker exits; not throughput.
    return count / elapsed


def _store_rate(
    batch: int,
    count: int,
    concurrency: int,
    processes: int,
    separate_outbox: bool,
    event_loop: str = "auto",
) -> tuple[float, float, str]:
    name, url = asyncio.run(create_database())
    qname, qurl = asyncio.run(create_database()) if separate_outbox else (None, None)
    try:
        app_url = asyncio.run(app_role_url(url))
        if qurl is not None:
            asyncio.run(_migrate(qurl))
        return run_store_processes(
            app_url, count, batch, concurrency, processes, f"b{batch}", qurl, event_loop
        )
    finally:
        asyncio.run(drop_database(name))
        if qname is not None:
            asyncio.run(drop_database(qname))


def run(messages: int = 8000, concurrency: int = 4, queue_messages: int = 4000) -> list[Result]:
    """The figures of ``nox -s bench``: best of three runs per contender, alternated.

    The store path keeps ``concurrency`` transactions in flight, from one worker process (a
    single function instance) or split over two (the machine's two cores, as two warm
    instances). Four in flight in all was the best setting here for both (a sweep of 1 to 8
    lanes per process): fewer leave the cores waiting on commits, more make the backends and
    the client contend for the two cores."""
    os.environ.setdefault("APIX_DB_POOL_SIZE", str(concurrency))
    contenders = {
        "b10x1": (10, messages, 1, False, "auto"),
        "b1x1": (1, messages // 4, 1, False, "auto"),
        "b10x2": (10, messages, 2, False, "auto"),
        "b1x2": (1, messages // 4, 2, False, "auto"),
        "b10x2-asyncio": (10, messages, 2, False, "asyncio"),
        "outbox": (10, messages, 1, True, "auto"),
    }
    best = dict.fromkeys(contenders, 0.0)
    cpu = dict.fromkeys(contenders, 0.0)  # client CPU µs/msg of the best run
    loops = dict.fromkeys(contenders, "")
    for _ in range(3):
        for key, (batch, count, processes, separate, event_loop) in contenders.items():
            lanes = max(1, concurrency // processes)
            rate, cpu_us, loops[key] = _store_rate(
                batch, count, lanes, processes, separate, event_loop
            )
            if rate > best[key]:
                best[key], cpu[key] = rate, cpu_us

    def note(key: str) -> str:
        processes = contenders[key][2]
        lanes = max(1, concurrency // processes)
        return (
            f"{processes} process(es) × {lanes} lanes, as apix_app (RLS on), {loops[key]}, "
            f"client CPU {cpu[key]:.0f} µs/msg"
        )

    results = [
        Result(
            "postgres: exactly-once, batches of 10/tx, 2 processes",
            best["b10x2"],
            "msg/s",
            "≥ 10,000",
            note("b10x2"),
        ),
        Result(
            "postgres: same, one message per tx, 2 processes",
            best["b1x2"],
            "msg/s",
            "(reference)",
            note("b1x2"),
        ),
        Result(
            "postgres: batching speed-up, 2 processes",
            best["b10x2"] / best["b1x2"],
            "×",
            "≥ 5",
            "",
        ),
        Result(
            "postgres: exactly-once, batches of 10/tx, 1 process",
            best["b10x1"],
            "msg/s",
            "",
            note("b10x1"),
        ),
        Result(
            "postgres: same, one message per tx, 1 process",
            best["b1x1"],
            "msg/s",
            "(reference)",
            note("b1x1"),
        ),
        Result(
            "postgres: batching speed-up, 1 process",
            best["b10x1"] / best["b1x1"],
            "×",
            "(reference)",
            "",
        ),
        Result(
            "postgres: batches of 10/tx, 2 processes, asyncio's loop",
            best["b10x2-asyncio"],
            "msg/s",
            "(reference)",
            note("b10x2-asyncio"),
        ),
        Result(
            "postgres: batches of 10, separate outbox + dispatch",
            best["outbox"],
            "msg/s",
            "",
            f"1 process × {concurrency} lanes; queues in another database",
        ),
    ]
    base = None
    for workers in (1, 2, 4):
        name, url = asyncio.run(create_database())
        try:
            asyncio.run(_migrate(url))
            rate = run_queue(url, workers, queue_messages)
        finally:
            asyncio.run(drop_database(name))
        base = base or rate
        results.append(
            Result(
                f"postgres: shared queue, 2 stages, {workers} worker process(es)",
                rate,
                "msg/s",
                "",
                f"{rate / base:.1f}× of 1 worker; {queue_messages} msgs",
            )
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=8000)
    parser.add_argument("--queue-messages", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--worker", nargs=2, metavar=("URL", "GO_FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--store-worker", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_on_loop(worker_main(*args.worker))
        return
    if args.store_worker:
        url, count, batch, lanes, label, queue_url, go, event_loop = json.loads(args.store_worker)
        span = run_on_loop(
            run_store_path(url, count, batch, lanes, label, queue_url, go), event_loop=event_loop
        )
        print(json.dumps(span))
        return
    print(f"PostgreSQL: {ADMIN_URL.rpartition('@')[2]}   cpus: {os.cpu_count()}")
    for r in run(args.messages, args.concurrency, args.queue_messages):
        print(r.row())


async def _migrate(url: str) -> None:
    from apix_core.store.database import Database

    db = Database(url)
    await db.upgrade()
    await db.dispose()


if __name__ == "__main__":
    main()
