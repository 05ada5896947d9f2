"""Smoke tests of an installed apix-core wheel, one per extra (run by ``nox -s package``).

The package session copies this file into a temporary folder outside the repository and runs
it there with the interpreter of a fresh virtual environment that has only the wheel (and one
extra) installed, so nothing is imported from the source tree. Usage::

    python package_smoke.py aws|azure|postgres

Each check fails with a non-zero exit and a message saying what is wrong.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

HERE = Path.cwd()

APP = """
from apix_core import App, Message, ProcessorContext

app = App("smoke", tenant_id="acme")
seen = []


@app.processor("orders", consumes="orders")
async def orders(message: Message, ctx: ProcessorContext) -> None:
    seen.append(message.payload["order_id"])
    ctx.persist_entity(message.payload["order_id"], "order", "smoke", message.payload)


@app.processor("hook", route="POST /hooks")
async def hook(message: Message, ctx: ProcessorContext) -> None:
    seen.append("hook")


@app.processor("tick", schedule="0 * * * *")
async def tick(message: Message, ctx: ProcessorContext) -> None:
    pass
"""


def fail(message: str) -> None:
    print(f"package smoke: FAILED: {message}", file=sys.stderr)
    raise SystemExit(1)


def check_not_from_source(module: str) -> None:
    """The package must come from the virtual environment, never from a checkout."""
    if os.environ.get("APIX_SMOKE_FROM_SOURCE") == "true":  # iterating on this script
        return
    imported = __import__(module)
    location = Path(imported.__file__).resolve()
    if "site-packages" not in location.parts:
        fail(f"{module} was imported from {location}, not from the installed wheel")


def write_app(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "smoke_app.py"
    path.write_text(textwrap.dedent(APP), encoding="utf-8")
    return path


def sqs_event(body: dict[str, object], message_id: str) -> dict[str, object]:
    """One SQS record, shaped as AWS documents the Lambda event."""
    now = str(int(time.time() * 1000))
    return {
        "Records": [
            {
                "messageId": message_id,
                "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
                "body": json.dumps(body),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": now,
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": now,
                },
                "messageAttributes": {
                    "tenant_id": {
                        "stringValue": "acme",
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": "String",
                    }
                },
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:orders",
                "awsRegion": "us-east-1",
            }
        ]
    }


class LambdaContext:
    """The context fields a Python Lambda handler receives that apix reads."""

    function_name = "smoke-orders"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"

    def __init__(self) -> None:
        self._deadline = time.monotonic() + 60

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def smoke_aws() -> None:
    """A Lambda handler invoked in-process with an SQS event, on a local SQLite store; the
    same event again is a duplicate (exactly-once effect), and the SAM template is written."""
    import boto3  # the [aws] extra

    check_not_from_source("apix_aws")
    os.environ["APIX_DATABASE_URL"] = f"sqlite+aiosqlite:///{HERE / 'aws.db'}"
    os.environ["APIX_QUEUE_URL"] = f"sqlite+aiosqlite:///{HERE / 'aws-queues.db'}"
    sys.path.insert(0, str(write_app(HERE / "aws").parent))
    import smoke_app

    from apix_aws import lambda_handler

    handler = lambda_handler(smoke_app.app, "orders")
    event = sqs_event({"order_id": "A-1", "total": 12.5}, str(uuid.uuid4()))
    for _ in range(2):
        response = handler(event, LambdaContext())
        if response != {"batchItemFailures": []}:
            fail(f"SQS batch answered {response}")
    if smoke_app.seen != ["A-1"]:
        fail(f"the processor ran {smoke_app.seen} for one message delivered twice")
    out = HERE / "aws" / "template.yaml"
    run(["apix", "deploy", "aws", str(HERE / "aws" / "smoke_app.py"), "--out", str(out)])
    if "AWS::CloudWatch::Dashboard" not in out.read_text(encoding="utf-8"):
        fail("apix deploy aws wrote no dashboard")
    print(f"aws: SQS event handled once of twice, template written (boto3 {boto3.__version__})")


def smoke_azure() -> None:
    """``apix deploy azure`` writes function_app.py; a fresh interpreter imports it with the real
    ``azure.functions`` and calls its HTTP and queue functions with real binding objects."""
    check_not_from_source("apix_azure")
    project = HERE / "azure"
    write_app(project)
    run(["apix", "deploy", "azure", str(project / "smoke_app.py"), "--out", str(project)])
    probe = textwrap.dedent(
        """
        import asyncio, json, sys
        from datetime import UTC, datetime
        import azure.functions as func
        from azure.functions.queue import QueueMessage  # the worker's, with dequeue_count
        import function_app
        import smoke_app

        apps = [v for v in vars(function_app).values() if isinstance(v, func.FunctionApp)]
        assert len(apps) == 1, apps
        functions = {f.get_function_name(): f.get_user_function() for f in apps[0].get_functions()}
        assert sorted(functions) == ["hook", "orders", "tick"], sorted(functions)
        request = func.HttpRequest(
            method="POST", url="http://localhost/api/hooks", headers={"content-type":
            "application/json"}, body=json.dumps({"event": "ping"}).encode(),
        )
        response = asyncio.run(functions["hook"](request))
        assert 200 <= response.status_code < 300, (response.status_code, response.get_body())
        body = json.dumps({"order_id": "B-7", "total": 3})
        now = datetime.now(UTC)
        queued = QueueMessage(
            id="m-1", body=body.encode(), dequeue_count=1, pop_receipt="r",
            insertion_time=now, expiration_time=now, time_next_visible=now,
        )
        asyncio.run(functions["orders"](queued))
        assert smoke_app.seen == ["hook", "B-7"], smoke_app.seen
        print(response.status_code)
        """
    )
    env = {
        **os.environ,
        "APIX_DATABASE_URL": f"sqlite+aiosqlite:///{HERE / 'azure.db'}",
        "APIX_QUEUE_URL": f"sqlite+aiosqlite:///{HERE / 'azure-queues.db'}",
        "APIX_TENANT_ID": "acme",
    }
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=project, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        fail(f"function_app.py: {proc.stderr.strip()[-2000:]}")
    print(f"azure: function_app.py imported, HTTP {proc.stdout.strip()} and a queue message")


def smoke_postgres() -> None:
    """The orders demo migrates a fresh PostgreSQL database on 127.0.0.1:5432 and processes."""
    import asyncpg

    check_not_from_source("apix_core")
    admin = os.environ.get("APIX_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"apix_package_{uuid.uuid4().hex[:10]}"

    async def admin_sql(sql: str) -> None:
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin_sql(f'CREATE DATABASE "{name}"'))
    try:
        url = admin.rpartition("/")[0].replace("postgresql://", "postgresql+asyncpg://")
        env = {"APIX_DATABASE_URL": f"{url}/{name}"}
        # As a user does on PostgreSQL: migrate, then run (the embedded default auto-migrates).
        run(["apix", "db", "upgrade"], cwd=HERE / "orders", env=env)
        run(["apix", "run", "app.py"], cwd=HERE / "orders", env=env)
        revision = asyncio.run(_revision(f"{admin.rpartition('/')[0]}/{name}"))
        if not revision:
            fail("the demo ran but the database has no alembic revision")
        print(f"postgres: migrated to {revision} and processed the demo")
    finally:
        asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _revision(dsn: str) -> str | None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        value: str | None = await conn.fetchval("SELECT version_num FROM alembic_version")
        return value
    finally:
        await conn.close()


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bin_dir / cmd[0]), *cmd[1:]],
        cwd=cwd or HERE,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        fail(f"{' '.join(cmd)} exited {proc.returncode}: {(proc.stderr or proc.stdout)[-2000:]}")


SMOKES = {"aws": smoke_aws, "azure": smoke_azure, "postgres": smoke_postgres}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in SMOKES:
        raise SystemExit(f"usage: package_smoke.py {'|'.join(SMOKES)}")
    SMOKES[sys.argv[1]]()
