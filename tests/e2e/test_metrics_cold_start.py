"""apix's metrics cost a cold start nothing: a Lambda handler module handling its first SQS
batch imports no OpenTelemetry (not even the API) when no meter provider is installed, with or
without the EMF output; with an SDK provider installed globally, the same batch is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lambda_probe import CONTEXT, handler_env, run_probe, sqs_event, write_handler

PROBE = (
    """
import json, sys
if sys.argv[2] == "sdk":
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
import lambda_function
"""
    + CONTEXT
    + """
response = lambda_function.handler(json.loads(sys.argv[1]), Context())
recorded = {}
if sys.argv[2] == "sdk":
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                recorded[m.name] = [
                    [dict(p.attributes), getattr(p, "value", None), getattr(p, "count", None)]
                    for p in m.data.data_points
                ]
otel = sorted(m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry."))
print(json.dumps({"otel": otel, "response": response, "recorded": recorded}))
"""
)


def _run(tmp_path: Path, mode: str, metrics: str | None) -> tuple[dict[str, object], str]:
    write_handler(tmp_path, "metrics-cold-start")
    env = handler_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}")
    if metrics:
        env["APIX_METRICS"] = metrics
    return run_probe(tmp_path, PROBE, json.dumps(sqs_event(3)), mode, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("metrics", [None, "emf"])
def test_cold_start_without_a_meter_provider_imports_no_opentelemetry(
    tmp_path: Path, metrics: str | None
) -> None:
    # GIVEN a handler module and no OpenTelemetry provider (APIX_METRICS unset, then emf)
    # WHEN a fresh interpreter imports it and handles its first SQS batch
    found, out = _run(tmp_path, "none", metrics)

    # THEN the batch succeeded without importing any OpenTelemetry module
    assert found["response"] == {"batchItemFailures": []}
    assert found["otel"] == []
    # AND with emf, the batch's EMF line is on stdout (and nothing otherwise)
    emf = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    if metrics == "emf":
        [doc] = emf
        assert doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "apix"
        assert doc["Completed"] == 3
    else:
        assert emf == []


@pytest.mark.slow
def test_global_sdk_meter_provider_receives_the_batch(tmp_path: Path) -> None:
    # GIVEN an SDK meter provider installed globally before the handler module is imported
    # WHEN the first SQS batch of 3 records is handled
    found, _ = _run(tmp_path, "sdk", None)

    # THEN the provider got the batch's outcomes and one batch duration
    assert found["response"] == {"batchItemFailures": []}
    recorded = found["recorded"]
    assert isinstance(recorded, dict)
    assert recorded["apix.messages"] == [
        [{"processor": "orders", "queue": "orders", "outcome": "completed"}, 3, None]
    ]
    [[attrs, _, count]] = recorded["apix.batch.duration"]
    assert (attrs, count) == ({"processor": "orders", "queue": "orders"}, 1)
