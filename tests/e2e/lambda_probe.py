"""A Lambda handler module probed in a fresh interpreter, for the cold-start tests: the module
(apix_aws + an app with one SQS processor that sends nothing), SQS events shaped as AWS
documents them, and the subprocess that imports the module and handles a batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

HANDLER = """
from apix_aws import lambda_handler
from apix_core import App, Message, ProcessorContext

app = App({name!r}, tenant_id="acme")


@app.processor("orders", consumes="orders")
async def orders(message: Message, ctx: ProcessorContext) -> None:
    return None


handler = lambda_handler(app, "orders")
"""

#: The context object Lambda passes to a handler (the fields apix reads), for a probe's code.
CONTEXT = """
class Context:
    aws_request_id = "probe"
    function_name = "probe"
    def get_remaining_time_in_millis(self):
        return 30_000
"""


def write_handler(directory: Path, app_name: str) -> None:
    """``lambda_function.py`` in ``directory``: what a probe imports."""
    (directory / "lambda_function.py").write_text(HANDLER.format(name=app_name))


def sqs_record(n: int) -> dict[str, object]:
    """One record of an SQS event as Lambda delivers it, with the body ``{"n": n}``."""
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


def sqs_event(records: int) -> dict[str, object]:
    """An SQS event of ``records`` records (bodies ``{"n": 0}``, ``{"n": 1}``...)."""
    return {"Records": [sqs_record(n) for n in range(records)]}


def handler_env(directory: Path, database_url: str) -> dict[str, str]:
    """The environment of a fresh interpreter running the handler in ``directory``: none of
    the developer's ``APIX_*`` settings nor an OpenTelemetry meter provider from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APIX_", "OTEL_PYTHON_METER"))}
    env |= {
        "PYTHONPATH": str(directory),
        "APIX_DATABASE_URL": database_url,
        "APIX_QUEUE_URL": "sqs://?region=us-east-1",
        "AWS_REGION": "us-east-1",
    }
    return env


def run_probe(
    directory: Path, probe: str, *args: str, env: dict[str, str]
) -> tuple[dict[str, object], str]:
    """Run ``probe`` (Python source) in a fresh interpreter in ``directory``; its last line of
    output is JSON. Returns that, parsed, and the output before it."""
    proc = subprocess.run(
        [sys.executable, "-c", probe, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=directory,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    found = json.loads(lines[-1])
    assert isinstance(found, dict), lines[-1]
    return found, "\n".join(lines[:-1])
