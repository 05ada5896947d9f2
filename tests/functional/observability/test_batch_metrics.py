"""apix's per-batch metrics through the OpenTelemetry metrics API (a real SDK provider with an
in-memory reader) and the CloudWatch EMF line, recorded once per batch by every trigger."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from apix_core import App, Message, ProcessorContext
from apix_core.errors import PermanentError
from apix_core.testing import TestApp


def _app() -> App:
    app = App("metrics-test", tenant_id="acme")

    @app.processor("orders", consumes="orders")
    async def orders(message: Message, ctx: ProcessorContext) -> None:
        if message.payload.get("fail") == "permanent":
            raise PermanentError("order is invalid")
        if message.payload.get("fail") == "bug":
            raise RuntimeError("a bug: redelivered until max_attempts")

    return app


async def test_a_batch_records_its_outcomes_and_duration(
    metric_points: Callable[[], dict[str, list[Any]]], tmp_path: Path
) -> None:
    # GIVEN a processor whose batch has a success, a permanent failure and a bug
    async with TestApp(_app()) as t:
        # WHEN one batch is delivered, then the success is delivered again (a duplicate)
        first = await t.deliver_many(
            "orders",
            [{"n": 1}, {"fail": "permanent"}, {"fail": "bug"}],
            message_ids=["m-ok", "m-perm", "m-bug"],
        )
        again = await t.deliver("orders", {"n": 1}, message_id="m-ok")

    # THEN apix.messages counts each outcome once, by processor, queue and outcome
    assert [o.kind.value for o in first] == ["completed", "dead_letter", "retry"]
    assert again.kind.value == "duplicate"
    points = metric_points()
    counts = {
        (p.attributes["processor"], p.attributes["queue"], p.attributes["outcome"]): p.value
        for p in points["apix.messages"]
    }
    assert counts == {
        ("orders", "orders", "completed"): 1,
        ("orders", "orders", "dead_letter"): 1,
        ("orders", "orders", "retry"): 1,
        ("orders", "orders", "duplicate"): 1,
    }
    # AND apix.batch.duration has one value per batch (two batches), in milliseconds
    [hist] = points["apix.batch.duration"]
    assert dict(hist.attributes) == {"processor": "orders", "queue": "orders"}
    assert hist.count == 2
    assert 0 < hist.sum < 60_000


async def test_http_requests_are_counted_under_their_processor(
    metric_points: Callable[[], dict[str, list[Any]]],
) -> None:
    # GIVEN an HTTP processor
    app = App("metrics-http", tenant_id="acme")

    @app.processor("create", route="POST /orders")
    async def create(message: Message, ctx: ProcessorContext) -> None:
        return None

    async with TestApp(app) as t:
        # WHEN a request is handled
        response = await t.request("POST", "/orders", json={"id": 1})

    # THEN its message is counted as completed under the processor's name
    assert response.status_code < 300
    [point] = metric_points()["apix.messages"]
    assert point.attributes["processor"] == "create"
    assert point.attributes["outcome"] == "completed"
    assert point.value == 1


async def test_emf_line_per_batch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN APIX_METRICS=emf with a namespace of the user's choosing
    monkeypatch.setenv("APIX_METRICS", "emf")
    monkeypatch.setenv("APIX_METRICS_NAMESPACE", "acme/orders")
    async with TestApp(_app()) as t:
        capsys.readouterr()
        # WHEN two batches are processed
        await t.deliver_many("orders", [{"n": 1}, {"n": 2}, {"fail": "permanent"}])
        await t.deliver("orders", {"n": 3})
        out = capsys.readouterr().out

    # THEN one EMF line each, in the namespace, with every outcome's count
    docs = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    assert len(docs) == 2
    for doc in docs:
        [directive] = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "acme/orders"
    assert [(d["Completed"], d["DeadLettered"], d["Retried"], d["Duplicates"]) for d in docs] == [
        (2, 1, 0, 0),
        (1, 0, 0, 0),
    ]


async def test_unknown_metrics_setting_warns_and_processing_goes_on(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a misspelt APIX_METRICS
    monkeypatch.setenv("APIX_METRICS", "cloudwatch")
    async with TestApp(_app()) as t:
        capsys.readouterr()
        # WHEN a batch is processed
        with caplog.at_level(logging.WARNING, logger="apix.metrics"):
            outcome = await t.deliver("orders", {"n": 1})
        out = capsys.readouterr().out

    # THEN the batch completes, no metric line is written, and the warning says what to write
    assert outcome.kind.value == "completed"
    assert '"_aws"' not in out
    assert any("write 'emf'" in r.getMessage() for r in caplog.records)
