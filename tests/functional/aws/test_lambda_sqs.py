"""lambda_handler on SQS batches against moto_server: the events are built from messages received
from moto, in AWS's documented shape; the store is the embedded SQLite."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from apix_aws import lambda_handler
from apix_aws.transport.sqs import SqsTransport
from apix_core import App, Message, ProcessorContext
from apix_core.errors import PermanentError, TransientError
from apix_core.runtime.invoke import run_sync

from .conftest import LambdaContext, sqs_record

REGION = "us-east-1"
Event = Callable[[str], dict[str, Any]]


@pytest.fixture
def env(
    moto_endpoint: str, queue_prefix: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, str]:
    monkeypatch.setenv("APIX_TENANT_ID", "acme")
    monkeypatch.setenv("APIX_SQS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("APIX_QUEUE_URL", f"sqs://?prefix={queue_prefix}&region={REGION}")
    return {"db": f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}", "prefix": queue_prefix}


@pytest.fixture
def transport(env: dict[str, str], moto_endpoint: str) -> Iterator[SqsTransport]:
    t = SqsTransport(
        endpoint_url=moto_endpoint,
        region=REGION,
        queue_prefix=env["prefix"],
        receive_wait_seconds=0,
    )
    yield t
    run_sync(t.close())


@pytest.fixture
def app(env: dict[str, str], lambda_apps: list[object]) -> App:
    a = App("lambda-sqs", database_url=env["db"])
    calls: list[dict[str, Any]] = []

    @a.processor("orders", consumes="orders")
    async def orders(message: Message, ctx: ProcessorContext) -> None:
        calls.append(message.payload)
        if message.payload.get("fail") == "retry":
            raise TransientError("downstream busy")
        if message.payload.get("fail") == "permanent":
            raise PermanentError("order is invalid")

    a.calls = calls  # type: ignore[attr-defined]
    lambda_apps.append(a)
    return a


def _client(transport: SqsTransport) -> Any:
    return run_sync(transport._get_client())


def _send_and_receive(
    transport: SqsTransport, queue: str, bodies: list[dict[str, Any]], visibility: int = 30
) -> tuple[str, list[dict[str, Any]]]:
    """Send the bodies to moto, receive them back; returns the queue ARN and the messages."""
    client = _client(transport)
    url = run_sync(transport.queue_url(queue))
    for body in bodies:
        client.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    got: list[dict[str, Any]] = []
    while len(got) < len(bodies):
        got += client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            VisibilityTimeout=visibility,
        ).get("Messages", [])
    arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return arn["QueueArn"], got


def _event(arn: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The SQS event Lambda would deliver for these received messages."""
    return {"Records": [sqs_record(m, arn) for m in messages]}


def test_success_and_redelivery_is_duplicate(
    app: App, transport: SqsTransport, lambda_context: Any
) -> None:
    # GIVEN two messages received from a queue with a DLQ
    run_sync(transport.ensure_queue("orders"))
    arn, messages = _send_and_receive(transport, "orders", [{"n": 1}, {"n": 2}])
    event = _event(arn, messages)
    handler = lambda_handler(app, "orders")
    # WHEN the batch is handled, then the same records are delivered again
    first = handler(event, lambda_context)
    second = handler(copy.deepcopy(event), lambda_context)
    # THEN no record is reported, and each was processed once
    assert first == {"batchItemFailures": []}
    assert second == {"batchItemFailures": []}
    assert sorted(c["n"] for c in app.calls) == [1, 2]  # type: ignore[attr-defined]


def test_retryable_failure_is_reported_and_delayed(
    app: App, transport: SqsTransport, lambda_context: Any
) -> None:
    # GIVEN a message whose processing fails retryably, received with visibility 0 (so only
    # apix's ChangeMessageVisibility can hide it)
    run_sync(transport.ensure_queue("orders"))
    arn, messages = _send_and_receive(
        transport, "orders", [{"n": 1, "fail": "retry"}], visibility=0
    )
    # WHEN the handler runs
    response = lambda_handler(app, "orders")(_event(arn, messages), lambda_context)
    # THEN it is reported, and invisible for its backoff delay
    assert response == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    url = run_sync(transport.queue_url("orders"))
    again = _client(transport).receive_message(QueueUrl=url, WaitTimeSeconds=0)
    assert again.get("Messages", []) == []


def test_permanent_failure_goes_to_the_dlq_unreported(
    app: App, transport: SqsTransport, lambda_context: Any
) -> None:
    # GIVEN a message whose processing fails for good
    run_sync(transport.ensure_queue("orders"))
    arn, messages = _send_and_receive(transport, "orders", [{"n": 7, "fail": "permanent"}])
    # WHEN the handler runs
    response = lambda_handler(app, "orders")(_event(arn, messages), lambda_context)
    # THEN it is not reported, and sits in the DLQ with its error
    assert response == {"batchItemFailures": []}
    dlq = run_sync(transport.dead_letter_queue_url("orders"))
    got = _client(transport).receive_message(
        QueueUrl=dlq, MessageAttributeNames=["All"], WaitTimeSeconds=0
    )["Messages"]
    assert json.loads(got[0]["Body"]) == {"n": 7, "fail": "permanent"}
    assert got[0]["MessageAttributes"]["apix_error_code"]["StringValue"] == "VALIDATION_ERROR"


def test_fifo_group_stops_at_its_first_failure(
    app: App, transport: SqsTransport, load_event: Event, lambda_context: Any
) -> None:
    # GIVEN a FIFO batch: group "a" fails at its first record, group "b" succeeds
    event = load_event("aws_sqs_fifo_batch")
    template = event["Records"][0]
    records = []
    for i, (group, body) in enumerate(
        [("a", {"n": 1, "fail": "retry"}), ("b", {"n": 2}), ("a", {"n": 3}), ("b", {"n": 4})]
    ):
        r = copy.deepcopy(template)
        r["messageId"] = f"m{i}"
        r["body"] = json.dumps(body)
        r["messageAttributes"] = {}
        r["attributes"]["MessageGroupId"] = group
        records.append(r)
    event["Records"] = records
    # WHEN the handler runs
    response = lambda_handler(app, "orders")(event, lambda_context)
    # THEN group a's failed record and its later record are reported; group b went on
    assert response == {"batchItemFailures": [{"itemIdentifier": "m0"}, {"itemIdentifier": "m2"}]}
    assert {c["n"] for c in app.calls} == {1, 2, 4}  # type: ignore[attr-defined]


def test_garbage_records_never_raise(
    app: App, transport: SqsTransport, load_event: Event, lambda_context: Any
) -> None:
    # GIVEN a batch with records missing fields of the event itself, and a body that is no JSON
    run_sync(transport.ensure_queue("orders"))
    arn, messages = _send_and_receive(transport, "orders", [{"n": 1}])
    event = _event(arn, messages)
    good = event["Records"][0]
    no_id = {k: v for k, v in good.items() if k != "messageId"}
    no_body = {k: v for k, v in good.items() if k != "body"} | {"messageId": "no-body"}
    text = good | {"messageId": "text", "body": "not json at all"}
    event["Records"] += [no_id, no_body, text, "garbage", {"eventSource": "aws:sqs"}]
    # WHEN the handler runs
    response = lambda_handler(app, "orders")(event, lambda_context)
    # THEN it answers (no exception), reporting only ids of the batch
    assert response is not None
    known = {r.get("messageId") for r in event["Records"] if isinstance(r, dict)}
    assert {f["itemIdentifier"] for f in response["batchItemFailures"]} <= known - {None}
    assert {"n": 1} in app.calls  # type: ignore[attr-defined]


def test_sqs_batch_to_a_processor_without_queue_is_reported_not_raised(
    app: App, load_event: Event, lambda_context: Any
) -> None:
    # GIVEN an HTTP-only processor WHEN an SQS batch reaches it
    @app.processor("hook", route="POST /hook")
    async def hook(message: Message, ctx: ProcessorContext) -> None:
        return None

    event = load_event("aws_sqs_batch")
    response = lambda_handler(app, "hook")(event, lambda_context)
    # THEN every record is reported (the queue's redrive policy takes over), nothing raised
    assert response == {
        "batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]
    }


def test_remaining_time_stops_the_batch_and_reports_the_rest(
    app: App, transport: SqsTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a processor taking 0.4 s a message, a batch of 10, and a Lambda context with 4 s
    # left of which the handler keeps 2 s back (the default margin): 2 s of work fits
    ran: list[int] = []

    @app.processor("slow", consumes="slow")
    async def slow(message: Message, ctx: ProcessorContext) -> None:
        ran.append(message.payload["n"])
        await asyncio.sleep(0.4)

    monkeypatch.delenv("APIX_LAMBDA_DEADLINE_MARGIN_SECONDS", raising=False)
    run_sync(app.start())  # a warm container: the cold start is not what is measured here
    run_sync(transport.ensure_queue("slow"))
    arn, messages = _send_and_receive(transport, "slow", [{"n": n} for n in range(10)])
    messages.sort(key=lambda m: json.loads(m["Body"])["n"])
    event = _event(arn, messages)
    handler = lambda_handler(app, "slow")

    # WHEN the handler runs with little time left
    started = time.monotonic()
    response = handler(event, LambdaContext(remaining_ms=4000))
    elapsed = time.monotonic() - started

    # THEN it answered before the timeout, having run the first messages only, and reported
    # exactly the ones it did not run
    assert elapsed < 4.0
    assert 1 <= len(ran) < 10
    assert ran == list(range(len(ran)))
    reported = [f["itemIdentifier"] for f in response["batchItemFailures"]]
    assert reported == [m["MessageId"] for m in messages[len(ran) :]]

    # WHEN the reported records are delivered again (their visibility was set to 0) with time
    again = [m for m in messages if m["MessageId"] in reported]
    second = handler(_event(arn, again), LambdaContext(remaining_ms=60_000))

    # THEN they run now: every message ran exactly once
    assert second == {"batchItemFailures": []}
    assert sorted(ran) == list(range(10))


def test_cold_start_reads_the_output_queue_size_limit_before_the_first_send(
    app: App, transport: SqsTransport, lambda_context: Any
) -> None:
    # GIVEN a processor sending to a queue whose MaximumMessageSize is 2 KiB (not SQS's 1 MiB)
    @app.processor("relay", consumes="relay-in", produces="small-out")
    async def relay(message: Message, ctx: ProcessorContext) -> None:
        ctx.send("small-out", {"blob": "x" * 3000})

    run_sync(transport.ensure_queue("relay-in"))
    run_sync(transport.ensure_queue("small-out", max_message_bytes=2048))
    arn, messages = _send_and_receive(transport, "relay-in", [{"n": 1}])

    # WHEN the first invocation of a fresh container handles it
    response = lambda_handler(app, "relay")(_event(arn, messages), lambda_context)

    # THEN the limit was known before the send (warm-up at cold start): the oversize output
    # fails the message for good at once — dead-lettered, not reported, nothing sent
    assert response == {"batchItemFailures": []}
    [dead] = run_sync(transport.list_dead_letters("relay-in"))
    assert dead.error_code == "MESSAGE_TOO_LARGE"
    assert run_sync(transport.depth("small-out")).total == 0


def test_on_lambda_the_transport_defaults_to_sqs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lambda_apps: list[object]
) -> None:
    # GIVEN the Lambda runtime's environment without APIX_QUEUE_URL, and an app without its own
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders-fn")
    monkeypatch.setenv("APIX_QUEUE_URL", "")  # unset, and restored after the test
    app = App("on-lambda", database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}")
    lambda_apps.append(app)

    @app.processor("orders", consumes="orders")
    async def orders(message: Message, ctx: ProcessorContext) -> None:
        return None

    # WHEN its handler is built and the app starts
    lambda_handler(app, "orders")
    run_sync(app.start())

    # THEN its transport is SQS (no local queue database on the function's disk)
    assert isinstance(app.transport, SqsTransport)
    assert not (tmp_path / "queues.db").exists()
