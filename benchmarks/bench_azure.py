"""The Azure adapter against the AWS adapter, side by side in one run.

Per-message overhead: a Storage-Queue-triggered generated function (no-op processor,
persistence off) awaited with real ``azure.functions`` QueueMessage objects, against
``apix_aws.lambda_handler`` called with SQS events of 10 records as AWS documents them; both on
the long-lived loop of ``run_sync``, 10 messages per step, alternated round by round. Goal:
Azure ≤ 2× AWS per message.

Import time of a generated ``function_app.py`` with one queue function, in a fresh interpreter
each sample (median of 9 alternated rounds), split into ``import azure.functions`` alone (not
ours to cut) and apix's share (the rest); against the AWS handler module (``handler =
lambda_handler(app, "noop")``) minus the bare interpreter. Goal: apix's share ≤ the AWS
handler module's import.

    python benchmarks/bench_azure.py
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import Result, spread, sqs_record

BATCH = 10
STEPS = 300
ROUNDS = 15
IMPORT_ROUNDS = 9
#: Azurite's documented development account: nothing connects (the processor sends nothing).
STORAGE = "UseDevelopmentStorage=true"

APP_MODULE = """
from typing import Any

from apix_core import App, Message

app = App("bench-azure", tenant_id="bench")


@app.processor("noop", consumes="bench.in", enable_persistence=False)
async def noop(message: Message, ctx: Any) -> None:
    return None
"""
FUNCTION_APP = """
from apix_azure import function_app
from benchapp import app as pipeline

app = function_app(pipeline)
"""
AWS_HANDLER = """
from apix_aws import lambda_handler
from benchapp import app

handler = lambda_handler(app, "noop")
"""


def _bodies() -> list[str]:
    from apix_core import Message

    return [
        Message(
            tenant_id="bench", payload={"order_id": i, "qty": i % 7, "sku": f"SKU-{i}"}
        ).to_json()
        for i in range(BATCH)
    ]


def _load_app() -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(APP_MODULE, "benchapp.py", "exec"), namespace)
    return namespace["app"]


def azure_runner() -> Callable[[], float]:
    """One timing run of the generated queue function (µs per message)."""
    from azure.functions.queue import QueueMessage

    from apix_azure import function_app
    from apix_core.runtime.invoke import run_sync

    os.environ.setdefault("AzureWebJobsStorage", STORAGE)
    fapp = function_app(_load_app())
    [fn] = [f.get_user_function() for f in fapp.get_functions()]
    now = datetime.now(UTC)
    messages = [
        QueueMessage(  # what the worker hands the function: decoded body, dequeue count
            id=f"m-{i}",
            body=body.encode(),
            dequeue_count=1,
            pop_receipt="r",
            insertion_time=now,
            expiration_time=now,
            time_next_visible=now,
        )
        for i, body in enumerate(_bodies())
    ]

    async def step() -> None:
        for m in messages:
            await fn(m)

    def one_run() -> float:
        start = time.perf_counter()
        for _ in range(STEPS):
            run_sync(step())
        return (time.perf_counter() - start) / (STEPS * BATCH) * 1e6

    return one_run


def aws_runner() -> Callable[[], float]:
    """One timing run of the Lambda handler on SQS events (µs per record)."""
    from apix_aws import lambda_handler

    handler = lambda_handler(_load_app(), "noop")
    event = {"Records": [sqs_record(b) for b in _bodies()]}

    def one_run() -> float:
        start = time.perf_counter()
        for _ in range(STEPS):
            response = handler(event, None)
        assert response == {"batchItemFailures": []}, response
        return (time.perf_counter() - start) / (STEPS * BATCH) * 1e6

    return one_run


def measure_overhead() -> tuple[list[float], list[float]]:
    azure, aws = azure_runner(), aws_runner()
    azure(), aws()  # warm-up: start the apps, fill caches
    az_samples: list[float] = []
    aws_samples: list[float] = []
    for _ in range(ROUNDS):
        gc.collect()
        az_samples.append(azure())
        gc.collect()
        aws_samples.append(aws())
    return az_samples, aws_samples


def _time(code: str, cwd: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=cwd, env=env)
    return time.perf_counter() - start


IMPORTS = {
    "python -c pass": "pass",
    "import azure.functions": "import azure.functions",
    "import function_app (generated)": "import function_app",
    "import aws_handler": "import aws_handler",
}


def measure_imports() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="apix-bench-azure-") as tmp:
        root = Path(tmp)
        (root / "benchapp.py").write_text(APP_MODULE)
        (root / "function_app.py").write_text(FUNCTION_APP)
        (root / "aws_handler.py").write_text(AWS_HANDLER)
        env = {**os.environ, "PYTHONPATH": tmp, "AzureWebJobsStorage": STORAGE}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for code in IMPORTS.values():  # compile the .pyc files once, outside the samples
            _time(code, tmp, env)
        samples: dict[str, list[float]] = {name: [] for name in IMPORTS}
        for _ in range(IMPORT_ROUNDS):
            for name, code in IMPORTS.items():
                samples[name].append(_time(code, tmp, env))
    return {name: statistics.median(v) * 1000 for name, v in samples.items()}


def run() -> list[Result]:
    az_samples, aws_samples = measure_overhead()
    az_us, aws_us = min(az_samples), min(aws_samples)
    paired = statistics.median(a / w for a, w in zip(az_samples, aws_samples, strict=True))
    med = measure_imports()
    share = med["import function_app (generated)"] - med["import azure.functions"]
    aws_import = med["import aws_handler"] - med["python -c pass"]
    return [
        Result(
            "azure: queue function, no-op, persistence off", az_us, "µs/msg", "", spread(az_samples)
        ),
        Result(
            "azure: AWS lambda_handler, SQS record, same app",
            aws_us,
            "µs/msg",
            "(reference)",
            spread(aws_samples),
        ),
        Result(
            "azure: overhead ratio Azure / AWS",
            az_us / aws_us,
            "×",
            "≤ 2",
            f"median of pairs {paired:.2f}",
        ),
        *(Result(f"azure import: {k}", v, "ms", "", "median") for k, v in med.items()),
        Result("azure import: apix share (function_app − azure.functions)", share, "ms"),
        Result(
            "azure import: AWS handler module (− python -c pass)", aws_import, "ms", "(reference)"
        ),
        Result("azure import: apix share / AWS handler module", share / aws_import, "×", "≤ 1"),
    ]


if __name__ == "__main__":
    for r in run():
        print(r.row())
