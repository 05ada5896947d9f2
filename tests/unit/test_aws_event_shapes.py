"""tests/events/aws_*.json: Lambda events in the shapes AWS documents, for the Lambda adapter's
tests. These checks keep them honest (consistent hashes, decodable bodies, the fields a handler
dispatches on), so a later edit cannot quietly break a shape."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from apix_core.message import Message

pytestmark = pytest.mark.aws

EVENTS = Path(__file__).parent.parent / "events"
SQS_RECORD_KEYS = {
    "messageId",
    "receiptHandle",
    "body",
    "attributes",
    "messageAttributes",
    "md5OfBody",
    "eventSource",
    "eventSourceARN",
    "awsRegion",
}


def load(name: str) -> Any:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def test_every_aws_fixture_is_checked_here() -> None:
    names = {p.name for p in EVENTS.glob("aws_*.json")}
    assert names == {
        "aws_sqs_batch.json",
        "aws_sqs_fifo_batch.json",
        "aws_apigw_rest_v1.json",
        "aws_apigw_http_v2.json",
        "aws_function_url.json",
        "aws_eventbridge_scheduled.json",
        "aws_scheduler_event.json",
        "aws_eventbridge_custom.json",
        "aws_kinesis_batch.json",
        "aws_dynamodb_stream_batch.json",
    }


@pytest.mark.parametrize("name", ["aws_sqs_batch.json", "aws_sqs_fifo_batch.json"])
def test_sqs_records(name: str) -> None:
    records = load(name)["Records"]
    fifo = name == "aws_sqs_fifo_batch.json"
    for r in records:
        assert r.keys() >= SQS_RECORD_KEYS
        assert r["eventSource"] == "aws:sqs"
        assert r["eventSourceARN"].startswith("arn:aws:sqs:")
        assert r["eventSourceARN"].endswith(".fifo") is fifo
        assert r["md5OfBody"] == hashlib.md5(r["body"].encode()).hexdigest()
        assert int(r["attributes"]["ApproximateReceiveCount"]) >= 1
        for attribute in r["messageAttributes"].values():
            assert attribute["dataType"] == "String" and "stringValue" in attribute
        if fifo:
            assert {"MessageGroupId", "MessageDeduplicationId", "SequenceNumber"} <= set(
                r["attributes"]
            )
    assert len({r["messageId"] for r in records}) == len(records)


def test_sqs_batch_holds_an_envelope_a_foreign_json_and_a_plain_text_body() -> None:
    envelope, foreign, plain = load("aws_sqs_batch.json")["Records"]
    message = Message.create_from_queue_data(envelope["body"])
    assert message.message_id == envelope["messageAttributes"]["apix_message_id"]["stringValue"]
    assert message.tenant_id == "acme"
    assert "apix" not in json.loads(foreign["body"])
    assert foreign["messageAttributes"]["tenant_id"]["stringValue"] == "globex"
    with pytest.raises(ValueError):
        json.loads(plain["body"])
    assert plain["messageAttributes"] == {} and "md5OfMessageAttributes" not in plain


def test_api_gateway_rest_payload_1_0() -> None:
    event = load("aws_apigw_rest_v1.json")
    assert "version" not in event  # REST APIs send no version field
    assert event["httpMethod"] == "POST" and event["path"] == "/orders/acme"
    assert event["multiValueQueryStringParameters"]["tag"] == ["a", "b"]
    assert event["requestContext"]["resourcePath"] == event["resource"]
    assert event["isBase64Encoded"] is False and json.loads(event["body"])["order_id"]


@pytest.mark.parametrize("name", ["aws_apigw_http_v2.json", "aws_function_url.json"])
def test_payload_2_0(name: str) -> None:
    event = load(name)
    assert event["version"] == "2.0"
    assert {"routeKey", "rawPath", "rawQueryString", "headers", "requestContext"} <= event.keys()
    assert "multiValueHeaders" not in event and "httpMethod" not in event
    http = event["requestContext"]["http"]
    assert http["method"] == "POST" and http["path"] == event["rawPath"]
    assert all(k == k.lower() for k in event["headers"])  # 2.0 lower-cases header names
    body = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"].encode()
    assert json.loads(body)["order_id"]
    assert int(event["headers"]["content-length"]) == len(body)


def test_http_api_carries_cookies_and_a_base64_body() -> None:
    event = load("aws_apigw_http_v2.json")
    assert event["cookies"] == ["session=8f14e45fceea167a", "theme=dark"]
    assert "cookie" not in event["headers"]
    assert event["isBase64Encoded"] is True
    assert json.loads(base64.b64decode(event["body"]))["note"] == "crème brûlée ×2"


def test_function_url_event() -> None:
    event = load("aws_function_url.json")
    assert event["routeKey"] == "$default"
    assert event["requestContext"]["domainName"].endswith(".on.aws")


@pytest.mark.parametrize(
    ("name", "source", "detail_type"),
    [
        ("aws_eventbridge_scheduled.json", "aws.events", "Scheduled Event"),
        ("aws_scheduler_event.json", "aws.scheduler", "Scheduled Event"),
        ("aws_eventbridge_custom.json", "com.example.shop", "OrderPlaced"),
    ],
)
def test_eventbridge_envelopes(name: str, source: str, detail_type: str) -> None:
    event = load(name)
    assert event["version"] == "0"
    assert (event["source"], event["detail-type"]) == (source, detail_type)
    assert {"id", "account", "time", "region", "resources", "detail"} <= event.keys()
    assert event["resources"][0].startswith("arn:aws:")


def test_kinesis_records() -> None:
    records = load("aws_kinesis_batch.json")["Records"]
    for r in records:
        assert (r["eventSource"], r["eventName"]) == ("aws:kinesis", "aws:kinesis:record")
        assert r["eventID"] == f"shardId-000000000000:{r['kinesis']['sequenceNumber']}"
        json.loads(base64.b64decode(r["kinesis"]["data"]))
    sequence = [int(r["kinesis"]["sequenceNumber"]) for r in records]
    assert sequence == sorted(sequence)
    envelope = Message.create_from_queue_data(base64.b64decode(records[0]["kinesis"]["data"]))
    assert envelope.tenant_id == "acme"


def test_dynamodb_stream_records() -> None:
    records = load("aws_dynamodb_stream_batch.json")["Records"]
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    for r in records:
        assert r["eventSource"] == "aws:dynamodb"
        assert "/stream/" in r["eventSourceARN"]
        change = r["dynamodb"]
        assert {"Keys", "SequenceNumber", "SizeBytes", "StreamViewType"} <= change.keys()
    assert "OldImage" not in records[0]["dynamodb"] and "NewImage" not in records[2]["dynamodb"]
