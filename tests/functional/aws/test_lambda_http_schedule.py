"""lambda_handler on API Gateway (1.0, 2.0, Function URL), EventBridge and stream events, with
the embedded SQLite store."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from apix_aws import lambda_handler
from apix_aws.errors import UnsupportedEventError
from apix_core import App, Message, ProcessorContext
from apix_core.errors import TransientError

Event = Callable[[str], dict[str, Any]]


@pytest.fixture
def app(tmp_path: Path, lambda_apps: list[object], monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.setenv("APIX_TENANT_ID", "acme")
    a = App(
        "lambda",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}",
        queue_url=f"sqlite+aiosqlite:///{tmp_path / 'queues.db'}",
    )
    seen: list[dict[str, Any]] = []
    tenants: list[str] = []

    @a.processor("orders", route="POST /orders/{tenant}")
    async def orders(message: Message, ctx: ProcessorContext) -> None:
        tenants.append(message.tenant_id)
        seen.append(message.payload)

    @a.processor("tick", schedule="*/5 * * * *")
    async def tick(message: Message, ctx: ProcessorContext) -> None:
        seen.append(message.payload)

    @a.processor("ingest", consumes="ingest")
    async def ingest(message: Message, ctx: ProcessorContext) -> None:
        if message.payload.get("fail") == "retry":
            raise TransientError("downstream busy")
        seen.append(message.payload)

    a.seen = seen  # type: ignore[attr-defined]
    a.tenants = tenants  # type: ignore[attr-defined]
    lambda_apps.append(a)
    return a


def test_rest_v1_post_is_accepted(app: App, load_event: Event, lambda_context: Any) -> None:
    # GIVEN a REST API (payload 1.0) POST to a route of the processor
    event = load_event("aws_apigw_rest_v1")
    handler = lambda_handler(app, "orders")
    # WHEN the handler runs
    response = handler(event, lambda_context)
    # THEN it answers with the proxy-integration shape and the message id (200: processed
    # in the request)
    assert response is not None
    assert response["statusCode"] == 200, response
    assert response["isBase64Encoded"] is False
    assert json.loads(response["body"])["message_id"]


def test_http_v2_post_base64_and_errors(app: App, load_event: Event, lambda_context: Any) -> None:
    handler = lambda_handler(app, "orders")
    # GIVEN an HTTP API (payload 2.0) POST whose body is base64-encoded
    event = load_event("aws_apigw_http_v2")
    event["body"] = base64.b64encode(b'{"order_id": "A-9"}').decode()
    event["isBase64Encoded"] = True
    # WHEN / THEN it is processed
    ok = handler(event, lambda_context)
    assert ok is not None and ok["statusCode"] in (200, 202), ok
    assert json.loads(ok["body"])["message_id"]
    assert {"order_id": "A-9"} in app.seen  # type: ignore[attr-defined]
    # GIVEN invalid JSON THEN 400
    bad = load_event("aws_apigw_http_v2") | {"body": "{not json", "isBase64Encoded": False}
    answer = handler(bad, lambda_context)
    assert answer is not None and answer["statusCode"] == 400
    assert "Traceback" not in answer["body"]
    # GIVEN a body marked base64 that is not THEN 400
    garbled = load_event("aws_apigw_http_v2") | {"body": "%%%", "isBase64Encoded": True}
    answer = handler(garbled, lambda_context)
    assert answer is not None and answer["statusCode"] == 400
    # GIVEN an unknown route THEN 404
    lost = load_event("aws_apigw_http_v2") | {"rawPath": "/nowhere"}
    answer = handler(lost, lambda_context)
    assert answer is not None and answer["statusCode"] == 404


def test_tenant_from_jwt_claim(
    app: App, load_event: Event, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN APIX_TENANT_CLAIM names a claim and a client header claiming another tenant
    monkeypatch.setenv("APIX_TENANT_CLAIM", "custom:tenant")
    event = load_event("aws_apigw_http_v2")
    event["headers"]["x-tenant-id"] = "intruder"
    event["requestContext"]["authorizer"] = {"jwt": {"claims": {"custom:tenant": "globex"}}}
    # WHEN the handler runs
    response = lambda_handler(app, "orders")(event, lambda_context)
    # THEN the message belongs to the claim's tenant
    assert response is not None and response["statusCode"] in (200, 202), response
    assert app.tenants == ["globex"]  # type: ignore[attr-defined]


def test_schedule_twice_is_a_duplicate(app: App, load_event: Event, lambda_context: Any) -> None:
    # GIVEN a scheduled-rule event for a schedule processor, and the Scheduler's event
    handler = lambda_handler(app, "tick")
    event = load_event("aws_eventbridge_scheduled")
    # WHEN the same event is delivered twice
    first = handler(event, lambda_context)
    second = handler(event, lambda_context)
    # THEN the second run is a duplicate of the first (same tick, same id)
    assert first is not None and second is not None
    assert first["outcome"] == "completed"
    assert second["outcome"] == "duplicate"
    assert first["message_id"] == second["message_id"]
    scheduler = handler(load_event("aws_scheduler_event"), lambda_context)
    assert scheduler is not None and scheduler["outcome"] == "completed"


def test_custom_eventbridge_event(app: App, load_event: Event, lambda_context: Any) -> None:
    # GIVEN a custom EventBridge event for a queue processor
    handler = lambda_handler(app, "ingest")
    event = load_event("aws_eventbridge_custom")
    # WHEN delivered twice THEN its detail is processed once
    first = handler(event, lambda_context)
    assert first is not None and first["outcome"] == "completed"
    again = handler(event, lambda_context)
    assert again is not None and again["outcome"] == "duplicate"
    assert app.seen.count(event["detail"]) == 1  # type: ignore[attr-defined]


def test_kinesis_failure_reports_its_sequence_number(
    app: App, load_event: Event, lambda_context: Any
) -> None:
    # GIVEN a Kinesis batch whose second record fails retryably
    event = load_event("aws_kinesis_batch")
    records = event["Records"]
    assert len(records) >= 2
    records[1]["kinesis"]["data"] = base64.b64encode(b'{"fail": "retry"}').decode()
    # WHEN the handler runs
    response = lambda_handler(app, "ingest")(event, lambda_context)
    # THEN exactly that sequence number is reported (Lambda retries from it)
    assert response == {
        "batchItemFailures": [{"itemIdentifier": records[1]["kinesis"]["sequenceNumber"]}]
    }


def test_dynamodb_stream_batch(app: App, load_event: Event, lambda_context: Any) -> None:
    # GIVEN a DynamoDB Streams batch
    event = load_event("aws_dynamodb_stream_batch")
    handler = lambda_handler(app, "ingest")
    # WHEN processed twice THEN no failure, and the images arrived as plain JSON, once
    assert handler(event, lambda_context) == {"batchItemFailures": []}
    processed = len(app.seen)  # type: ignore[attr-defined]
    assert processed == len(event["Records"])
    assert handler(event, lambda_context) == {"batchItemFailures": []}
    assert len(app.seen) == processed  # type: ignore[attr-defined]
    assert {
        "pk": "acme#C-1",
        "tenant_id": "acme",
        "name": "Ada",
        "tier": "gold",
        "credit": 100,
    } in (
        app.seen  # type: ignore[attr-defined]
    )


def test_unsupported_events_raise_a_typed_error(
    app: App, load_event: Event, lambda_context: Any
) -> None:
    # GIVEN an HTTP event to a queue processor, and an event of no known shape
    # WHEN / THEN UnsupportedEventError (code UNSUPPORTED_EVENT) is raised
    with pytest.raises(UnsupportedEventError) as caught:
        lambda_handler(app, "ingest")(load_event("aws_apigw_http_v2"), lambda_context)
    assert caught.value.code == "UNSUPPORTED_EVENT"
    with pytest.raises(UnsupportedEventError):
        lambda_handler(app, "orders")({"hello": "world"}, lambda_context)
    with pytest.raises(UnsupportedEventError):
        lambda_handler(app, "orders")(load_event("aws_eventbridge_scheduled"), lambda_context)


def test_stream_permanent_failure_is_skipped_not_reported(
    app: App, load_event: Event, lambda_context: Any
) -> None:
    # GIVEN a Kinesis batch whose first record is no JSON object and whose data is not base64
    event = load_event("aws_kinesis_batch")
    records = event["Records"]
    records[0]["kinesis"]["data"] = base64.b64encode(b"[1, 2").decode()
    records[1]["kinesis"]["data"] = "%%% not base64"
    # WHEN the handler runs
    response = lambda_handler(app, "ingest")(event, lambda_context)
    # THEN nothing is reported (a non-retryable record must not hold the shard)
    assert response == {"batchItemFailures": []}


def test_function_url_post(app: App, load_event: Event, lambda_context: Any) -> None:
    # GIVEN a Function URL event (payload 2.0) for a route of the processor, tenant by default
    event = load_event("aws_function_url") | {"rawPath": "/orders/acme"}
    # WHEN the handler runs THEN it is processed for the default tenant
    response = lambda_handler(app, "orders")(event, lambda_context)
    assert response is not None and response["statusCode"] == 200, response
    assert app.tenants == ["acme"]  # type: ignore[attr-defined]
