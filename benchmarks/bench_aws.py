"""AWS Lambda: cold start as a user feels it, and per-record overhead, vs Powertools.

**Cold start.** Each sample is a fresh interpreter that imports a handler module and hands it
its first SQS batch of 10 records (AWS's event shape, new message ids each time), with
exactly-once effect; the figure is the wall-clock time of the whole process. Contenders,
alternated round by round (medians of ``ROUNDS``):

* apix: ``apix_aws.lambda_handler`` on an app with one SQS processor that sends nothing, its
  store on SQLite, then on PostgreSQL (schema migrated beforehand, as a deployment does);
* Powertools: ``BatchProcessor`` + ``process_partial_response`` with an
  ``idempotent_function`` record handler on ``CachePersistenceLayer`` (Redis, 127.0.0.1:6379).

Goal: apix ≤ 1.0× Powertools. ``python -X importtime`` of the apix handler module lists where
its import time goes (printed with ``--importtime``).

**Per-record overhead.** The same handlers, warm, over batches of 10 records (apix envelopes:
what one apix stage sends the next) with a no-op processor and persistence off (apix) / no
idempotency and a ``json.loads`` of the body (Powertools), alternated run by run. Goal ≤ 2×
Powertools.

    python benchmarks/bench_aws.py [--importtime] [--baseline DIR] [--warm-only]

``--baseline DIR`` adds the apix contenders once more with ``DIR`` (a checkout of the code to
compare with, e.g. a worktree of main) first on their ``PYTHONPATH``, alternated in the same
rounds: before/after ratios from one run. For the per-record overhead, each round is then one
fresh process per checkout (alternated), each timing apix and Powertools over the same batches
(``--warm-only`` skips the cold starts).

Needs ``aws-lambda-powertools`` and ``redis`` (the nox ``bench`` session installs them), Redis
on 127.0.0.1:6379 and, for the PostgreSQL contender, PostgreSQL on ``APIX_BENCH_PG_URL``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``; a database ``apix_bench_aws`` is
created in it). A contender whose service is down is skipped with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import Result, sqs_record

ROUNDS = 9
BATCH = 10
WARM_BATCHES = 300
WARM_ROUNDS = 11
#: With ``--baseline``: processes per checkout, alternated, each ``WARM_CHILD_ROUNDS`` pairs.
WARM_PROCESSES = 7
WARM_CHILD_ROUNDS = 5
PG_URL_ENV = "APIX_BENCH_PG_URL"
PG_DB = "apix_bench_aws"

APIX_HANDLER = """
from apix_aws import lambda_handler
from apix_core import App, Message, ProcessorContext

app = App("cold-start", tenant_id="bench")


@app.processor("orders", consumes="orders")
async def orders(message: Message, ctx: ProcessorContext) -> None:
    return None


handler = lambda_handler(app, "orders")
"""

POWERTOOLS_HANDLER = """
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.persistence.cache import CachePersistenceLayer

processor = BatchProcessor(event_type=EventType.SQS)
persistence = CachePersistenceLayer(host="127.0.0.1", port=6379, ssl=False)
config = IdempotencyConfig(event_key_jmespath="messageId")


@idempotent_function(data_keyword_argument="record", config=config, persistence_store=persistence)
def record_handler(record: SQSRecord) -> None:
    return None


def handler(event, context):
    config.register_lambda_context(context)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
"""

#: One cold start: import the handler module, handle one batch (the event is read first).
INVOKE = """
import json, sys, time
event = json.load(open(sys.argv[1]))

class Context:
    function_name = "bench"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    memory_limit_in_mb = 512
    aws_request_id = "bench"
    log_group_name = log_stream_name = "bench"
    _end = time.monotonic() + 30
    def get_remaining_time_in_millis(self):
        return int((self._end - time.monotonic()) * 1000)

import {module} as m
response = m.handler(event, Context())
assert response == {{"batchItemFailures": []}}, response
"""


def _bodies() -> list[str]:
    return [
        json.dumps({"order_id": i, "qty": i % 7, "sku": f"SKU-{i}"}, separators=(",", ":"))
        for i in range(BATCH)
    ]


def _event() -> dict[str, Any]:
    # Foreign JSON bodies with a tenant attribute: what another producer's SQS messages are.
    return {"Records": [sqs_record(b) for b in _bodies()]}


def _envelope_event() -> dict[str, Any]:
    """apix envelopes (what one apix stage sends the next), new message ids."""
    from apix_core import Message

    return {
        "Records": [
            sqs_record(Message(tenant_id="bench", payload=json.loads(b)).to_json())
            for b in _bodies()
        ]
    }


def _up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _pg_url() -> str | None:
    base = os.environ.get(PG_URL_ENV, "postgresql://postgres@127.0.0.1:5432/postgres")
    if not _up("127.0.0.1", 5432):
        return None
    try:
        import asyncpg
    except ImportError:
        return None

    async def create() -> None:
        conn = await asyncpg.connect(base)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", PG_DB):
                await conn.execute(f'CREATE DATABASE "{PG_DB}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return base.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + PG_DB


def _migrate(url: str) -> None:
    from apix_core.store.database import Database

    async def go() -> None:
        db = Database(url)
        await db.upgrade()
        await db.dispose()

    asyncio.run(go())


class ColdStart:
    """The contenders' handler modules and environments in a temporary directory."""

    def __init__(self, workdir: Path, baseline: Path | None = None) -> None:
        self.workdir = workdir
        (workdir / "apix_handler.py").write_text(APIX_HANDLER)
        (workdir / "powertools_handler.py").write_text(POWERTOOLS_HANDLER)
        base = {k: v for k, v in os.environ.items() if not k.startswith("APIX_")}
        inherited = os.environ.get("PYTHONPATH")
        base |= {
            "PYTHONPATH": os.pathsep.join([str(workdir), *([inherited] if inherited else [])]),
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "POWERTOOLS_SERVICE_NAME": "bench",
        }
        sqlite_url = f"sqlite+aiosqlite:///{workdir / 'apix.db'}"
        _migrate(sqlite_url)
        apix_env = base | {
            "APIX_QUEUE_URL": "sqs://?region=us-east-1",
            "APIX_LOG_LEVEL": "WARNING",
        }
        self.contenders: dict[str, tuple[str, dict[str, str]]] = {
            "apix, SQLite": ("apix_handler", apix_env | {"APIX_DATABASE_URL": sqlite_url}),
        }
        self.notes: list[str] = []
        pg = _pg_url()
        if pg:
            _migrate(pg)
            self.contenders["apix, PostgreSQL"] = (
                "apix_handler",
                apix_env | {"APIX_DATABASE_URL": pg, "APIX_AUTO_MIGRATE": "false"},
            )
        else:
            self.notes.append("PostgreSQL not reachable: its contender skipped")
        if baseline is not None:
            for name, (module, env) in list(self.contenders.items()):
                path = os.pathsep.join([str(workdir), str(baseline)])
                self.contenders[f"baseline {name}"] = (module, env | {"PYTHONPATH": path})
        if _up("127.0.0.1", 6379):
            self.contenders["Powertools, Redis"] = ("powertools_handler", base)
        else:
            self.notes.append("Redis not reachable: Powertools skipped")

    def once(self, name: str) -> float:
        module, env = self.contenders[name]
        event_file = self.workdir / f"event-{uuid.uuid4().hex}.json"
        event_file.write_text(json.dumps(_event()))
        code = INVOKE.format(module=module)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", code, str(event_file)], check=True, env=env, cwd=self.workdir
        )
        elapsed = time.perf_counter() - start
        event_file.unlink()
        return elapsed

    def importtime(self, name: str, top: int = 15) -> list[tuple[str, int]]:
        """The largest top-level imports (cumulative µs, ``python -X importtime``) of one cold
        start of contender ``name``: the handler module's import and its first batch's."""
        module, env = self.contenders[name]
        event_file = self.workdir / f"event-{uuid.uuid4().hex}.json"
        event_file.write_text(json.dumps(_event()))
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", INVOKE.format(module=module), event_file],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.workdir,
            check=True,
        )
        event_file.unlink()
        rows: list[tuple[str, int]] = []
        for line in proc.stderr.splitlines():
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            parts = line[len("import time:") :].split("|")
            if not parts[2].startswith("  "):  # top level: what the process itself imported
                rows.append((parts[2].strip(), int(parts[1])))
        rows.sort(key=lambda r: r[1], reverse=True)
        return rows[:top]


def measure_cold(
    workdir: Path, baseline: Path | None = None
) -> tuple[dict[str, list[float]], list[str]]:
    bench = ColdStart(workdir, baseline)
    for name in bench.contenders:  # warm the OS caches once
        bench.once(name)
    samples: dict[str, list[float]] = {name: [] for name in bench.contenders}
    for _ in range(ROUNDS):
        for name in bench.contenders:
            samples[name].append(bench.once(name))
    return samples, bench.notes


# -- per-record overhead (warm) -------------------------------------------------------------


class _Context:
    function_name = "bench"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    memory_limit_in_mb = 512
    aws_request_id = "bench"
    log_group_name = log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def _apix_warm() -> Any:
    from apix_aws import lambda_handler
    from apix_core import App, Message, ProcessorContext

    app = App("overhead", tenant_id="bench")

    @app.processor("noop", consumes="orders", enable_persistence=False)
    async def noop(message: Message, ctx: ProcessorContext) -> None:
        return None

    return lambda_handler(app, "noop"), app


def _powertools_warm() -> Any:
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )

    processor = BatchProcessor(event_type=EventType.SQS)

    def record_handler(record: Any) -> None:
        json.loads(record.body)  # the least a handler does with a body (apix parses it too)

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    return handler


def measure_overhead(rounds: int = WARM_ROUNDS) -> tuple[list[float], list[float]]:
    apix, app = _apix_warm()
    powertools = _powertools_warm()
    context = _Context()
    events = [_envelope_event() for _ in range(WARM_BATCHES)]

    def timed(handler: Any) -> float:
        gc.collect()
        start = time.perf_counter()
        for event in events:
            response = handler(event, context)
        elapsed = time.perf_counter() - start
        assert response == {"batchItemFailures": []}, response
        return elapsed / (WARM_BATCHES * BATCH) * 1e6

    timed(apix), timed(powertools)  # warm-up (the app starts on the first batch)
    apix_samples, pt_samples = [], []
    for _ in range(rounds):
        apix_samples.append(timed(apix))
        pt_samples.append(timed(powertools))
    from apix_core.runtime.invoke import run_sync

    run_sync(app.close())
    return apix_samples, pt_samples


def _warm_child() -> None:
    """One process's per-record figures (``--warm-child``): its median apix and Powertools
    µs/record, and the median of their per-round ratios, as JSON on stdout."""
    apix_us, pt_us = measure_overhead(WARM_CHILD_ROUNDS)
    ratios = [a / p for a, p in zip(apix_us, pt_us, strict=True)]
    medians = [statistics.median(apix_us), statistics.median(pt_us), statistics.median(ratios)]
    print(json.dumps(medians))


def measure_overhead_against(baseline: Path) -> list[Result]:
    """Per-record overhead of this checkout and of ``baseline``, a fresh process each, alternated
    (``WARM_PROCESSES`` of each): each process times apix and Powertools side by side."""
    here = Path(__file__).resolve().parent.parent
    checkouts = {"apix": here, "baseline apix": baseline}
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIX_")}
    figures: dict[str, list[list[float]]] = {name: [] for name in checkouts}
    for _ in range(WARM_PROCESSES):
        for name, path in checkouts.items():
            # A fresh cwd per process: its app's local state (.apix/) is its own.
            with tempfile.TemporaryDirectory(prefix="apix-bench-aws-warm-") as tmp:
                proc = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--warm-child"],
                    env=env | {"PYTHONPATH": str(path)},
                    cwd=tmp,
                    capture_output=True,
                    text=True,
                )
            if proc.returncode:
                raise RuntimeError(f"{name} process failed:\n{proc.stderr[-2000:]}")
            figures[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out: list[Result] = []
    for name, rows in figures.items():
        a = statistics.median(r[0] for r in rows)
        p = statistics.median(r[1] for r in rows)
        ratio = statistics.median(r[2] for r in rows)
        out += [
            Result(f"aws overhead: {name}, SQS batch of 10, no-op", a, "µs/rec", "", ""),
            Result(f"aws overhead: Powertools, in the {name} processes", p, "µs/rec", "", ""),
            Result(
                f"aws overhead ratio {name} / Powertools",
                ratio,
                "×",
                "≤ 2" if name == "apix" else "",
                f"median of {WARM_PROCESSES} processes' paired medians",
            ),
        ]
    # Each against Powertools in its own processes: robust to a machine whose load changes.
    now = statistics.median(r[2] for r in figures["apix"])
    before = statistics.median(r[2] for r in figures["baseline apix"])
    raw = statistics.median(r[0] for r in figures["apix"]) / statistics.median(
        r[0] for r in figures["baseline apix"]
    )
    out.append(
        Result(
            "aws overhead ratio apix / baseline (each vs Powertools)",
            now / before,
            "×",
            "",
            f"raw µs/rec ratio {raw:.2f}",
        )
    )
    return out


def run(
    importtime: bool = False, baseline: Path | None = None, warm_only: bool = False
) -> list[Result]:
    if warm_only and baseline is not None:
        return measure_overhead_against(baseline)
    out: list[Result] = []
    if warm_only:
        return out + _overhead_results()
    with tempfile.TemporaryDirectory(prefix="apix-bench-aws-") as tmp:
        samples, notes = measure_cold(Path(tmp), baseline)
        med = {name: statistics.median(v) * 1000 for name, v in samples.items()}
        for name, value in med.items():
            spread = f"min {min(samples[name]) * 1000:.0f}, max {max(samples[name]) * 1000:.0f}"
            out.append(
                Result(f"aws cold start: {name} (median of {ROUNDS})", value, "ms", "", spread)
            )
        pt = med.get("Powertools, Redis")
        apix_names = [n for n in med if n.startswith(("apix", "baseline apix"))]
        for name in apix_names:
            if pt and name in med:
                paired = statistics.median(
                    a / p for a, p in zip(samples[name], samples["Powertools, Redis"], strict=True)
                )
                out.append(
                    Result(
                        f"aws cold start ratio {name} / Powertools",
                        med[name] / pt,
                        "×",
                        "≤ 1.0",
                        f"median of rounds {paired:.2f}",
                    )
                )
        for name in ("apix, SQLite", "apix, PostgreSQL"):
            if f"baseline {name}" in med and name in med:
                paired = statistics.median(
                    a / b for a, b in zip(samples[name], samples[f"baseline {name}"], strict=True)
                )
                out.append(
                    Result(
                        f"aws cold start ratio {name} / baseline",
                        med[name] / med[f"baseline {name}"],
                        "×",
                        "",
                        f"median of rounds {paired:.2f}",
                    )
                )
        for note in notes:
            out.append(Result(f"aws cold start: {note}", 0, "", ""))
        if importtime:
            bench = ColdStart(Path(tmp), baseline)
            for contender in bench.contenders:
                if "apix" in contender:
                    print(f"  -X importtime, top level, {contender}:")
                    for module, us in bench.importtime(contender):
                        print(f"    {us / 1000:8.1f} ms  {module}")
    if baseline is not None:
        return out + measure_overhead_against(baseline)
    return out + _overhead_results()


def _overhead_results() -> list[Result]:
    apix_us, pt_us = measure_overhead()
    a, p = statistics.median(apix_us), statistics.median(pt_us)
    paired = statistics.median(x / y for x, y in zip(apix_us, pt_us, strict=True))
    return [
        Result("aws overhead: apix lambda_handler, SQS batch of 10, no-op", a, "µs/rec", "", ""),
        Result("aws overhead: Powertools BatchProcessor, same batches", p, "µs/rec", "", ""),
        Result(
            "aws overhead ratio apix / Powertools",
            a / p,
            "×",
            "≤ 2",
            f"median of pairs {paired:.2f}",
        ),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--importtime", action="store_true", help="print the top imports")
    parser.add_argument("--baseline", type=Path, help="code to compare with (on PYTHONPATH)")
    parser.add_argument("--warm-only", action="store_true", help="per-record overhead only")
    parser.add_argument("--warm-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warm_child:
        _warm_child()
        sys.exit(0)
    for r in run(args.importtime, args.baseline, args.warm_only):
        print(r.row(), flush=True)
