"""A Lambda handler module's cold start stays lean: importing it (apix_aws + an app with one
SQS processor that sends nothing) and handling its first SQS batch on an already-migrated store
(SQLite, and PostgreSQL under ``APIX_TEST_BACKENDS=postgres``) loads no CLI library, HTTP
client, AWS SDK or OpenTelemetry SDK, no Alembic, and not SQLAlchemy's ORM (which its asyncio
package would import with ``AsyncSession``). The first batch loads no SQLAlchemy at all (its
claim and commit run on the driver's connection: sqlite3, asyncpg), yet records its effect."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from lambda_probe import CONTEXT, handler_env, run_probe, sqs_event, write_handler

#: Never on the path of a handler whose processor sends nothing.
NEVER = ("typer", "rich", "click", "httpx", "boto3", "botocore", "opentelemetry.sdk", "azure")
#: Not on the import (they load when the app starts, on the first invocation).
NOT_ON_IMPORT = (*NEVER, "sqlalchemy", "aiosqlite", "asyncpg", "alembic", "tenacity")
#: Not on the first batch either: claiming ids and committing needs no SQLAlchemy (nor the
#: tables built with it); SQLAlchemy joins a transaction only when a statement needs it.
NOT_ON_BATCH = (*NEVER, "alembic", "sqlalchemy", "apix_core.store.models")

PROBE = (
    """
import json, sys, time
def loaded(names):
    return sorted(m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names))
import lambda_function
after_import = loaded({not_on_import!r})
"""
    + CONTEXT
    + """
response = lambda_function.handler(json.loads(sys.argv[1]), Context())
print(json.dumps({{"import": after_import, "batch": loaded({not_on_batch!r}),
                  "response": response}}))
"""
)


@pytest.mark.slow
def test_handler_import_and_first_batch_stay_lean(tmp_path: Path, database_url: str) -> None:
    # GIVEN a handler module and a store already migrated (as a deployment's is)
    write_handler(tmp_path, "cold-start")
    url = database_url
    env = handler_env(tmp_path, url)
    migrate = "import asyncio; from apix_core.store.database import Database as D; d = D(%r)"
    migrate += "; asyncio.run(d.upgrade()); asyncio.run(d.dispose())"
    subprocess.run([sys.executable, "-c", migrate % url], env=env, check=True, timeout=120)
    event = json.dumps(sqs_event(10))
    not_on_batch = NOT_ON_BATCH
    if url.startswith("sqlite"):
        # SQLite: on the writer's sqlite3 connection (no aiosqlite), no PostgreSQL driver.
        not_on_batch += ("aiosqlite", "asyncpg")
    probe = PROBE.format(not_on_import=NOT_ON_IMPORT, not_on_batch=not_on_batch)

    # WHEN a fresh interpreter imports it and handles its first batch of 10 records
    found, _ = run_probe(tmp_path, probe, event, env=env)

    # THEN the batch succeeded, and nothing heavy was loaded by the import nor by the batch
    assert found["response"] == {"batchItemFailures": []}
    assert found["import"] == []
    assert found["batch"] == []
    if url.startswith("sqlite"):
        # ... and the effect is recorded: one idempotency row per record, none twice when
        # Lambda delivers the same batch again to another fresh interpreter
        run_probe(tmp_path, probe, event, env=env)
        path = url.split(":///", 1)[1]
        with sqlite3.connect(path) as conn:
            ids = [r[0] for r in conn.execute("SELECT message_id FROM apix_idempotency")]
        # (foreign bodies: their ids derive from the SQS message ids)
        assert len(ids) == len(set(ids)) == 10
