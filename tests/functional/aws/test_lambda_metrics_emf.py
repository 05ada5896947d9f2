"""``APIX_METRICS=emf`` on Lambda: the handler writes one CloudWatch Embedded Metric Format line
per SQS batch on stdout, in the structure AWS documents; validated field by field."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from apix_aws import lambda_handler
from apix_aws.transport.sqs import SqsTransport
from apix_core import App, Message, ProcessorContext
from apix_core.runtime.invoke import run_sync

from .conftest import LambdaContext

REGION = "us-east-1"


@pytest.fixture
def app(
    moto_endpoint: str,
    queue_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    lambda_apps: list[object],
) -> Iterator[App]:
    monkeypatch.setenv("APIX_TENANT_ID", "acme")
    monkeypatch.setenv("APIX_SQS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("APIX_QUEUE_URL", f"sqs://?prefix={queue_prefix}&region={REGION}")
    monkeypatch.setenv("APIX_METRICS", "emf")
    monkeypatch.setenv("APIX_METRICS_NAMESPACE", "acme/orders")
    transport = SqsTransport(endpoint_url=moto_endpoint, region=REGION, queue_prefix=queue_prefix)
    run_sync(transport.ensure_queue("orders"))  # and its DLQ, for the malformed record
    run_sync(transport.close())
    a = App("lambda-emf", database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}")

    @a.processor("orders", consumes="orders")
    async def orders(message: Message, ctx: ProcessorContext) -> None:
        return None

    lambda_apps.append(a)
    yield a


def _emf_lines(out: str) -> list[dict[str, Any]]:
    docs = []
    for line in out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "_aws" in doc:
            docs.append(doc)
    return docs


def _validate_emf(doc: dict[str, Any]) -> None:
    """The EMF specification's rules: a root ``_aws`` with an integer millisecond ``Timestamp``
    and ``CloudWatchMetrics`` directives; each directive's dimension names and metric names
    are root members, dimension values strings, metric values numbers, at most 30 dimensions
    per set and 100 metrics per directive, units from CloudWatch's list."""
    aws = doc["_aws"]
    assert isinstance(aws["Timestamp"], int) and aws["Timestamp"] > 1_600_000_000_000
    for directive in aws["CloudWatchMetrics"]:
        assert isinstance(directive["Namespace"], str) and 0 < len(directive["Namespace"]) <= 255
        for dimension_set in directive["Dimensions"]:
            assert 0 < len(dimension_set) <= 30
            for name in dimension_set:
                assert isinstance(doc[name], str) and doc[name]
        assert 0 < len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            assert set(metric) <= {"Name", "Unit", "StorageResolution"}
            assert metric["Unit"] in {"Count", "Milliseconds"}
            value = doc[metric["Name"]]
            assert isinstance(value, int | float) and not isinstance(value, bool)


def test_each_sqs_batch_writes_one_emf_line(
    app: App,
    load_event: Callable[[str], dict[str, Any]],
    lambda_context: LambdaContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN the SQS event AWS documents: an apix envelope, a foreign JSON body, a plain text body
    event = load_event("aws_sqs_batch")
    handler = lambda_handler(app, "orders")
    capsys.readouterr()

    # WHEN the handler gets the batch, then the same batch again (a redelivery)
    handler(event, lambda_context)
    handler(event, LambdaContext())
    docs = _emf_lines(capsys.readouterr().out)

    # THEN one valid EMF document per batch, under the namespace and dimensions configured
    assert len(docs) == 2
    for doc in docs:
        _validate_emf(doc)
        [directive] = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "acme/orders"
        assert directive["Dimensions"] == [["Processor", "Queue"]]
        assert (doc["Processor"], doc["Queue"]) == ("orders", "orders")
        names = {m["Name"] for m in directive["Metrics"]}
        assert names == {
            "Completed",
            "Duplicates",
            "Retried",
            "DeadLettered",
            "BatchDuration",
            "MessageDuration",
        }
        assert doc["BatchDuration"] >= doc["MessageDuration"] > 0
    # AND the counts are the batch's outcomes: the plain text body is dead-lettered; the
    # redelivery's two good records are duplicates (skipped by exactly-once)
    first, second = docs
    assert (first["Completed"], first["Duplicates"], first["DeadLettered"]) == (2, 0, 1)
    assert (second["Completed"], second["Duplicates"], second["DeadLettered"]) == (0, 2, 1)
    assert first["Retried"] == second["Retried"] == 0
