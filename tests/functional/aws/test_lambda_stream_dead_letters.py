"""Kinesis and DynamoDB Streams records the handler cannot parse: never reported (that would hold
the shard), never lost — a dead letter on the app's transport and a processing error of the
default tenant, so ``apix dlq list`` and ``apix errors`` show them. On each test backend (the
local transport keeps the dead letters)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from apix_aws import lambda_handler
from apix_aws.events.streams import unusable_delivery
from apix_core import App, Message, ProcessorContext
from apix_core.errors import TransientError
from apix_core.runtime.invoke import run_sync
from apix_core.tenancy import tenant_context
from apix_core.transport.base import DeadLetterRecord

Event = Callable[[str], dict[str, Any]]
QUEUE = "changes"


def _make_app(database_url: str, queue_url: str, lambda_apps: list[object]) -> App:
    a = App("streams", database_url=database_url, queue_url=queue_url)
    seen: list[dict[str, Any]] = []

    @a.processor("apply", consumes=QUEUE)
    async def apply(message: Message, ctx: ProcessorContext) -> None:
        if message.payload.get("fail") == "retry":
            raise TransientError("downstream busy")
        seen.append(message.payload)

    a.seen = seen  # type: ignore[attr-defined]
    lambda_apps.append(a)
    return a


@pytest.fixture
def app(
    database_url: str,
    queue_url: str,
    lambda_apps: list[object],
    monkeypatch: pytest.MonkeyPatch,
) -> App:
    monkeypatch.setenv("APIX_TENANT_ID", "acme")
    return _make_app(database_url, queue_url, lambda_apps)


def _dead_letters(app: App) -> dict[str, DeadLetterRecord]:
    transport: Any = app.transport
    return {d.message_id: d for d in run_sync(transport.list_dead_letters(QUEUE))}


def _errors(app: App, tenant: str = "acme") -> list[tuple[str, str, bool]]:
    async def read() -> list[tuple[str, str, bool]]:
        assert app.store is not None
        with tenant_context(tenant):
            rows = await app.store.errors.list(processor="apply")
        return sorted((e.message_id, e.error_code, e.final) for e in rows)

    return run_sync(read())


def _kinesis_record(template: dict[str, Any], seq: str, data: str) -> dict[str, Any]:
    record = copy.deepcopy(template)
    record["kinesis"]["sequenceNumber"] = seq
    record["kinesis"]["data"] = data
    record["eventID"] = f"{record['eventID'].split(':', 1)[0]}:{seq}"
    return record


def _b64(payload: object) -> str:
    return base64.b64encode(json.dumps(payload).encode()).decode()


def test_kinesis_record_whose_data_is_not_base64_is_dead_lettered_and_recorded(
    app: App, load_event: Event, lambda_context: Any
) -> None:
    # GIVEN a Kinesis batch whose first record's data is not base64
    event = load_event("aws_kinesis_batch")
    bad = event["Records"][0]
    bad["kinesis"]["data"] = "%%% not base64"
    # WHEN the handler runs
    response = lambda_handler(app, "apply")(event, lambda_context)
    # THEN nothing is reported, the good record is processed
    assert response == {"batchItemFailures": []}
    assert len(app.seen) == 1  # type: ignore[attr-defined]
    # AND the bad record is a dead letter holding the whole record, with its error
    message_id = unusable_delivery(QUEUE, bad).message_id
    dead = _dead_letters(app)
    assert list(dead) == [message_id]
    letter = dead[message_id]
    assert letter.error_code == "MALFORMED_EVENT"
    assert letter.error_category == "validation"
    assert "not base64" in letter.error_message
    assert letter.processor == "apply"
    assert letter.tenant_id == "acme"
    assert json.loads(letter.body) == bad
    # AND a final processing error of the default tenant (apix errors)
    assert _errors(app) == [(message_id, "MALFORMED_EVENT", True)]


def test_dynamodb_records_missing_fields_or_of_unknown_types_are_dead_lettered(
    app: App, load_event: Event, lambda_context: Any
) -> None:
    # GIVEN a DynamoDB Streams batch: one record without SequenceNumber, one whose image has
    # an attribute of no DynamoDB type, one record that is not an object
    event = load_event("aws_dynamodb_stream_batch")
    records = event["Records"]
    del records[0]["dynamodb"]["SequenceNumber"]
    records[1]["dynamodb"]["NewImage"]["credit"] = {"Q": "250"}
    records.append("not a record")
    # WHEN the handler runs
    response = lambda_handler(app, "apply")(event, lambda_context)
    # THEN nothing is reported, the REMOVE record is processed
    assert response == {"batchItemFailures": []}
    assert app.seen == [{"pk": "acme#C-1"}]  # type: ignore[attr-defined]
    # AND the three others are dead letters and processing errors, one each
    ids = [unusable_delivery(QUEUE, r).message_id for r in (records[0], records[1], records[3])]
    assert len(set(ids)) == 3
    dead = _dead_letters(app)
    assert set(dead) == set(ids)
    assert {d.error_code for d in dead.values()} == {"MALFORMED_EVENT"}
    assert "SequenceNumber" in dead[ids[0]].error_message
    assert "unknown DynamoDB attribute type" in dead[ids[1]].error_message
    assert dead[ids[2]].body == '"not a record"'
    assert _errors(app) == sorted((i, "MALFORMED_EVENT", True) for i in ids)


def test_unusable_record_after_a_reported_one_waits_for_the_shards_retry(
    app: App, load_event: Event, lambda_context: Any
) -> None:
    # GIVEN one shard's batch: unusable, retryable failure, unusable
    event = load_event("aws_kinesis_batch")
    template = event["Records"][0]
    seq = "4965600000000000000000000000000000000000000000000000000"
    before = _kinesis_record(template, f"{seq}1", "%")
    failing = _kinesis_record(template, f"{seq}2", _b64({"fail": "retry"}))
    after = _kinesis_record(template, f"{seq}3", "%")
    event["Records"] = [before, failing, after]
    handler = lambda_handler(app, "apply")
    # WHEN the handler runs
    response = handler(event, lambda_context)
    # THEN the failing record is reported (Lambda retries the shard from it)
    assert response == {
        "batchItemFailures": [{"itemIdentifier": failing["kinesis"]["sequenceNumber"]}]
    }
    # AND only the unusable record before it is kept now: the one after comes back with the
    # retry, and is kept then, once
    first = unusable_delivery(QUEUE, before).message_id
    assert list(_dead_letters(app)) == [first]
    # WHEN Lambda retries the shard from the reported record and it succeeds this time
    failing["kinesis"]["data"] = _b64({"ok": True})
    event["Records"] = [failing, after]
    assert handler(event, lambda_context) == {"batchItemFailures": []}
    # THEN the later unusable record is kept too, and each once
    second = unusable_delivery(QUEUE, after).message_id
    assert sorted(_dead_letters(app)) == sorted([first, second])
    malformed = [e for e in _errors(app) if e[1] == "MALFORMED_EVENT"]
    assert malformed == sorted((i, "MALFORMED_EVENT", True) for i in (first, second))


def test_without_a_default_tenant_the_dead_letter_still_keeps_it(
    database_url: str,
    queue_url: str,
    lambda_apps: list[object],
    load_event: Event,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN no default tenant, and a Kinesis record without a sequence number
    monkeypatch.delenv("APIX_TENANT_ID", raising=False)
    app = _make_app(database_url, queue_url, lambda_apps)
    event = load_event("aws_kinesis_batch")
    bad = event["Records"][1]
    del bad["kinesis"]["sequenceNumber"]
    # WHEN the handler runs
    response = lambda_handler(app, "apply")(event, lambda_context)
    # THEN it is not reported, and kept as a dead letter without a tenant (no tenant's error
    # list can hold it)
    assert response == {"batchItemFailures": []}
    [letter] = _dead_letters(app).values()
    assert letter.message_id == unusable_delivery(QUEUE, bad).message_id
    assert letter.error_code == "MALFORMED_EVENT"
    assert letter.tenant_id is None
    assert _errors(app) == []


def test_a_record_failing_for_good_after_a_reported_one_is_dead_lettered_once(
    app: App, load_event: Event, lambda_context: Any
) -> None:
    # GIVEN one shard's batch: no JSON object, a retryable failure, no JSON object
    event = load_event("aws_kinesis_batch")
    template = event["Records"][0]
    seq = "4965600000000000000000000000000000000000000000000000000"
    before = _kinesis_record(template, f"{seq}1", base64.b64encode(b"[1, 2").decode())
    failing = _kinesis_record(template, f"{seq}2", _b64({"fail": "retry"}))
    after = _kinesis_record(template, f"{seq}3", base64.b64encode(b"[3, 4").decode())
    event["Records"] = [before, failing, after]
    handler = lambda_handler(app, "apply")
    # WHEN the handler runs
    response = handler(event, lambda_context)
    # THEN the retryable failure is reported, and only the record before it is a dead letter
    assert response == {
        "batchItemFailures": [{"itemIdentifier": failing["kinesis"]["sequenceNumber"]}]
    }
    assert len(_dead_letters(app)) == 1
    # WHEN Lambda retries the shard from the reported record and it succeeds this time
    failing["kinesis"]["data"] = _b64({"ok": True})
    event["Records"] = [failing, after]
    assert handler(event, lambda_context) == {"batchItemFailures": []}
    # THEN the later record is a dead letter too: two in all, each once
    dead = _dead_letters(app).values()
    assert len(dead) == 2
    assert {d.body for d in dead} == {"[1, 2", "[3, 4"}
