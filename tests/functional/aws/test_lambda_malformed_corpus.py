"""Issue 13: a corpus of malformed records, requests and events. Each yields a typed error and
a dead-letter record (SQS: in the queue's dead-letter queue, with the error code) or an HTTP
4xx with a JSON error body; none raises out of the handler. The SQS records come from moto
(received messages, in AWS's documented event shape), then spoiled as each case says."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from apix_aws import lambda_handler
from apix_aws.events.sqs import unusable_delivery
from apix_aws.transport.sqs import SqsTransport
from apix_core import App, Message, ProcessorContext
from apix_core.runtime.invoke import run_sync

REGION = "us-east-1"
Event = Callable[[str], dict[str, Any]]
TENANT = {"tenant_id": {"DataType": "String", "StringValue": "acme"}}

# -- SQS: (case, body sent to moto, tenant attribute?, spoil the record, expected error code) --
Spoil = Callable[[dict[str, Any]], Any]


def _keep(r: dict[str, Any]) -> Any:
    return r


def _without(key: str) -> Spoil:
    return lambda r: {k: v for k, v in r.items() if k != key}


def _with(key: str, value: Any) -> Spoil:
    return lambda r: r | {key: value}


def _envelope(**fields: Any) -> str:
    return json.dumps({"apix": 1, "tenant_id": "acme", "payload": {"n": 1}} | fields)


FOREIGN = '{"order": "A-1"}'
SQS_CASES: list[tuple[str, str, bool, Spoil, str]] = [
    ("text body", "not json at all", True, _keep, "MALFORMED_MESSAGE"),
    ("truncated JSON", '{"order": 1', True, _keep, "MALFORMED_MESSAGE"),
    ("JSON array", "[1, 2, 3]", True, _keep, "MALFORMED_MESSAGE"),
    ("JSON string", '"a string"', True, _keep, "MALFORMED_MESSAGE"),
    ("JSON null", "null", True, _keep, "MALFORMED_MESSAGE"),
    ("JSON number", "42", True, _keep, "MALFORMED_MESSAGE"),
    ("base64 body", base64.b64encode(FOREIGN.encode()).decode(), True, _keep, "MALFORMED_MESSAGE"),
    ("envelope v99", _envelope(apix=99), True, _keep, "UNSUPPORTED_ENVELOPE_VERSION"),
    ('envelope "1"', _envelope(apix="1"), True, _keep, "UNSUPPORTED_ENVELOPE_VERSION"),
    ("payload array", _envelope(payload=[1, 2]), True, _keep, "INVALID_PAYLOAD"),
    ("bad created_at", _envelope(created_at="yesterday"), True, _keep, "INVALID_ENVELOPE"),
    ("unknown type", _envelope(type="BOGUS"), True, _keep, "INVALID_ENVELOPE"),
    ("bad tenant", _envelope(tenant_id="../evil"), True, _keep, "INVALID_TENANT"),
    ("long id", _envelope(message_id="x" * 300), True, _keep, "INVALID_MESSAGE_ID"),
    ("control id", _envelope(message_id="a\u0001b"), True, _keep, "INVALID_MESSAGE_ID"),
    ("envelope, no tenant", _envelope(tenant_id=None), False, _keep, "MISSING_TENANT"),
    ("foreign, no tenant", FOREIGN, False, _keep, "MISSING_TENANT"),
    ("deep arrays", '{"a":' + "[" * 100 + "]" * 100 + "}", True, _keep, "JSON_TOO_DEEP"),
    ("deep payload", '{"a":' * 80 + "1" + "}" * 80, True, _keep, "JSON_TOO_DEEP"),
    ("no body", FOREIGN, True, _without("body"), "MALFORMED_MESSAGE"),
    ("body is a number", FOREIGN, True, _with("body", 12345), "MALFORMED_MESSAGE"),
    ("body is an object", FOREIGN, True, _with("body", {"order": 1}), "MALFORMED_MESSAGE"),
    ("attributes list", FOREIGN, True, _with("messageAttributes", [1]), "MISSING_TENANT"),
    (
        "bad receive count",
        "garbage",
        True,
        _with("attributes", {"ApproximateReceiveCount": "many"}),
        "MALFORMED_MESSAGE",
    ),
    ("no messageId", FOREIGN, True, _without("messageId"), "MALFORMED_EVENT"),
    ("messageId number", FOREIGN, True, _with("messageId", 12345), "MALFORMED_EVENT"),
    ("empty messageId", FOREIGN, True, _with("messageId", ""), "MALFORMED_EVENT"),
]


@pytest.fixture
def sqs_app(
    moto_endpoint: str,
    queue_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    lambda_apps: list[object],
) -> App:
    # No APIX_TENANT_ID: a message must bring its tenant.
    monkeypatch.setenv("APIX_SQS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("APIX_QUEUE_URL", f"sqs://?prefix={queue_prefix}&region={REGION}")
    app = App("corpus", database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}")
    seen: list[Any] = []

    @app.processor("take", consumes="corpus")
    async def take(message: Message, ctx: ProcessorContext) -> None:
        seen.append(message.payload)

    app.seen = seen  # type: ignore[attr-defined]
    lambda_apps.append(app)
    return app


def test_malformed_sqs_records_are_dead_lettered_with_their_error(
    sqs_app: App, sqs: SqsTransport, lambda_context: Any
) -> None:
    # GIVEN one good message and every malformed case, received from moto, then spoiled
    run_sync(sqs.ensure_queue("corpus"))
    client = run_sync(sqs._get_client())
    url = run_sync(sqs.queue_url("corpus"))
    arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    cases = [("good", _envelope(), True, _keep, ""), *SQS_CASES]
    sent: dict[str, int] = {}
    for i, (_, body, tenant, _, _) in enumerate(cases):
        attributes = TENANT | {"case": {"DataType": "String", "StringValue": str(i)}}
        if not tenant:
            attributes.pop("tenant_id")
        answer = client.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes)
        sent[answer["MessageId"]] = i
    received: dict[int, dict[str, Any]] = {}
    while len(received) < len(cases):
        for m in client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            VisibilityTimeout=60,
        ).get("Messages", []):
            received[sent[m["MessageId"]]] = m
    records = []
    for i, (_, _, _, spoil, _) in enumerate(cases):
        m = received[i]
        record = {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m["Attributes"],
            "messageAttributes": {
                k: {"stringValue": v["StringValue"], "dataType": v["DataType"]}
                for k, v in m.get("MessageAttributes", {}).items()
            },
            "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": arn,
            "awsRegion": REGION,
        }
        records.append(spoil(record))
    event = {"Records": copy.deepcopy(records)}

    # WHEN the batch is handled
    response = lambda_handler(sqs_app, "take")(event, lambda_context)

    # THEN nothing is reported (nothing to redeliver), the good message was processed, the
    # source queue is empty and each malformed record is in the dead-letter queue with the
    # error code of its case
    assert response == {"batchItemFailures": []}
    assert sqs_app.seen == [{"n": 1}]  # type: ignore[attr-defined]
    # (Lambda deletes the unreported good record; apix deleted the dead-lettered ones)
    client.delete_message(QueueUrl=url, ReceiptHandle=records[0]["receiptHandle"])
    assert run_sync(sqs.depth("corpus")).total == 0
    dead = {r.message_id: r for r in run_sync(sqs.list_dead_letters("corpus", limit=100))}
    codes: dict[str, str] = {}
    for (name, *_), record in zip(SQS_CASES, records[1:], strict=True):
        item = record.get("messageId")
        key = item if isinstance(item, str) and item else None
        if key is None:
            key = unusable_delivery("corpus", record).message_id
        assert key in dead, name
        codes[name] = dead[key].error_code
        assert dead[key].error_message, name
    assert codes == {name: code for name, _, _, _, code in SQS_CASES}
    assert len(dead) == len(SQS_CASES)


# -- API Gateway / Function URLs: (case, fixture, change the event, expected status) ---------
HttpSpoil = Callable[[dict[str, Any]], dict[str, Any]]


def _body(text: str | bytes, b64: bool = False) -> HttpSpoil:
    def spoil(e: dict[str, Any]) -> dict[str, Any]:
        raw = text.encode() if isinstance(text, str) else text
        body = base64.b64encode(raw).decode() if b64 else raw.decode("utf-8", "replace")
        return e | {"body": body, "isBase64Encoded": b64}

    return spoil


def _header(name: str, value: str | None) -> HttpSpoil:
    def spoil(e: dict[str, Any]) -> dict[str, Any]:
        headers = {k: v for k, v in e["headers"].items() if k.lower() != name.lower()}
        if value is not None:
            headers[name] = value
        return e | {"headers": headers, "multiValueHeaders": {}}

    return spoil


def _drop(key: str) -> HttpSpoil:
    return lambda e: {k: v for k, v in e.items() if k != key}


V2, V1, URL = "aws_apigw_http_v2", "aws_apigw_rest_v1", "aws_function_url"
HTTP_CASES: list[tuple[str, str, HttpSpoil, int]] = [
    ("v2 body not JSON", V2, _body("{not json"), 400),
    (
        "v2 body marked base64 but is not",
        V2,
        lambda e: e | {"body": "%%%", "isBase64Encoded": True},
        400,
    ),
    ("v2 base64 of text", V2, _body("plain words", b64=True), 400),
    ("v2 base64 of invalid UTF-8", V2, _body(b"\xff\xfe\x00", b64=True), 400),
    ("v1 body a JSON array", V1, _body("[1, 2]"), 400),
    ("v1 body a JSON string", V1, _body('"order"'), 400),
    ("v1 no tenant header", V1, _header("X-Tenant-Id", None), 400),
    ("v1 invalid tenant header", V1, _header("X-Tenant-Id", "../evil"), 400),
    ("v2 Idempotency-Key too long", V2, _header("idempotency-key", "k" * 300), 400),
    ("v2 Idempotency-Key control char", V2, _header("idempotency-key", "a\u0007b"), 400),
    ("v2 body 10,000 deep", V2, _body("[" * 10_000 + "]" * 10_000), 400),
    ("v2 body over 16 MiB", V2, _body('{"a": "' + "x" * (16 * 1024 * 1024 + 10) + '"}'), 413),
    ("v2 without rawPath", V2, _drop("rawPath"), 400),
    ("v1 httpMethod a number", V1, lambda e: e | {"httpMethod": 7}, 400),
    (
        "v2 body not a string",
        V2,
        lambda e: e | {"body": {"order": 1}, "isBase64Encoded": False},
        400,
    ),
    ("v2 unknown route", V2, lambda e: e | {"rawPath": "/nowhere"}, 404),
    ("function URL body not JSON", URL, _body("<xml/>"), 400),
]


@pytest.fixture
def http_app(tmp_path: Path, lambda_apps: list[object]) -> App:
    app = App(
        "corpus-http",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}",
        queue_url=f"sqlite+aiosqlite:///{tmp_path / 'queues.db'}",
    )

    @app.processor("orders", route="POST /orders/{tenant}")
    async def orders(message: Message, ctx: ProcessorContext) -> None:
        return None

    @app.processor("stripe", route="POST /webhooks/stripe")
    async def stripe(message: Message, ctx: ProcessorContext) -> None:
        return None

    lambda_apps.append(app)
    return app


@pytest.mark.parametrize(
    ("name", "fixture", "spoil", "status"), HTTP_CASES, ids=[c[0] for c in HTTP_CASES]
)
def test_malformed_http_requests_get_a_4xx_json_error(
    http_app: App,
    load_event: Event,
    lambda_context: Any,
    name: str,
    fixture: str,
    spoil: HttpSpoil,
    status: int,
) -> None:
    # GIVEN a malformed request WHEN the handler runs
    processor = "stripe" if fixture == URL else "orders"
    response = lambda_handler(http_app, processor)(spoil(load_event(fixture)), lambda_context)

    # THEN a 4xx proxy response with a JSON error (code and message), no stack trace
    assert response is not None and response["statusCode"] == status, response
    error = json.loads(response["body"])
    assert isinstance(error["error"], str) and error["error"].isupper(), error
    assert error["message"]
    assert "Traceback" not in response["body"]


def test_the_corpus_has_at_least_30_cases() -> None:
    assert len(SQS_CASES) + len(HTTP_CASES) >= 30
    assert len({c[0] for c in SQS_CASES}) == len(SQS_CASES)
    assert len({c[0] for c in HTTP_CASES}) == len(HTTP_CASES)
