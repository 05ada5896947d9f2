"""A Lambda handler module's cold start stays lean: importing it (apix_aws + an app with one
SQS processor that sends nothing) and handling its first SQS batch on an already-migrated store
(SQLite, and PostgreSQL under ``APIX_TEST_BACKENDS=postgres``) loads no CLI library, HTTP
client, AWS SDK or OpenTelemetry SDK, no Alembic, and not SQLAlchemy's ORM (which its asyncio
package would import with ``AsyncSession``). The first batch loads no SQLAlchemy at all (its
claim and commit run on the driver's connection: sqlite3, asyncpg), yet records its effect."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

HANDLER = """
from apix_aws import lambda_handler
from apix_core import App, Message, ProcessorContext

app = App("cold-start", tenant_id="acme")


@app.processor("orders", consumes="orders")
async def orders(message: Message, ctx: ProcessorContext) -> None:
    return None


handler = lambda_handler(app, "orders")
"""

#: Never on the path of a handler whose processor sends nothing.
NEVER = ("typer", "rich", "click", "httpx", "boto3", "botocore", "opentelemetry.sdk", "azure")
#: Not on the import (they load when the app starts, on the first invocation).
NOT_ON_IMPORT = (*NEVER, "sqlalchemy", "aiosqlite", "asyncpg", "alembic", "tenacity")
#: Not on the first batch either: claiming ids and committing needs no SQLAlchemy (nor the
#: tables built with it); SQLAlchemy joins a transaction only when a statement needs it.
NOT_ON_BATCH = (*NEVER, "alembic", "sqlalchemy", "apix_core.store.models")

PROBE = """
import json, sys, time
def loaded(names):
    return sorted(m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names))
import lambda_function
after_import = loaded({not_on_import!r})

class Context:
    aws_request_id = "probe"
    function_name = "probe"
    def get_remaining_time_in_millis(self):
        return 30_000

response = lambda_function.handler(json.loads(sys.argv[1]), Context())
print(json.dumps({{"import": after_import, "batch": loaded({not_on_batch!r}),
                  "response": response}}))
"""


def _record(n: int) -> dict[str, object]:
    now = str(int(time.time() * 1000))
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": "AQEB" + uuid.uuid4().hex,
        "body": json.dumps({"n": n}),
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": now,
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": now,
        },
        "messageAttributes": {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:orders",
        "awsRegion": "us-east-1",
    }


@pytest.mark.slow
def test_handler_import_and_first_batch_stay_lean(tmp_path: Path, database_url: str) -> None:
    # GIVEN a handler module and a store already migrated (as a deployment's is)
    (tmp_path / "lambda_function.py").write_text(textwrap.dedent(HANDLER))
    url = database_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIX_")}
    env |= {
        "PYTHONPATH": str(tmp_path),
        "APIX_DATABASE_URL": url,
        "APIX_QUEUE_URL": "sqs://?region=us-east-1",
        "AWS_REGION": "us-east-1",
    }
    migrate = "import asyncio; from apix_core.store.database import Database as D; d = D(%r)"
    migrate += "; asyncio.run(d.upgrade()); asyncio.run(d.dispose())"
    subprocess.run([sys.executable, "-c", migrate % url], env=env, check=True, timeout=120)
    event = {"Records": [_record(n) for n in range(10)]}
    not_on_batch = NOT_ON_BATCH
    if url.startswith("sqlite"):
        # SQLite: on the writer's sqlite3 connection (no aiosqlite), no PostgreSQL driver.
        not_on_batch += ("aiosqlite", "asyncpg")
    probe = PROBE.format(not_on_import=NOT_ON_IMPORT, not_on_batch=not_on_batch)

    # WHEN a fresh interpreter imports it and handles its first batch of 10 records
    proc = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(event)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )

    # THEN the batch succeeded, and nothing heavy was loaded by the import nor by the batch
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["response"] == {"batchItemFailures": []}
    assert found["import"] == []
    assert found["batch"] == []
    if url.startswith("sqlite"):
        # ... and the effect is recorded: one idempotency row per record, none twice when
        # Lambda delivers the same batch again to another fresh interpreter
        again = subprocess.run(
            [sys.executable, "-c", probe, json.dumps(event)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
        assert again.returncode == 0, again.stderr
        path = url.split(":///", 1)[1]
        with sqlite3.connect(path) as conn:
            ids = [r[0] for r in conn.execute("SELECT message_id FROM apix_idempotency")]
        # (foreign bodies: their ids derive from the SQS message ids)
        assert len(ids) == len(set(ids)) == len(event["Records"])
