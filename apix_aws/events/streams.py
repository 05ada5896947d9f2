"""Kinesis Data Streams and DynamoDB Streams batches → deliveries with deterministic ids
(stream ARN + sequence number), and the partial response by sequence number."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apix_aws.errors import MalformedEventError
from apix_core.hashing import deterministic_id
from apix_core.transport.base import ReceivedMessage

STREAM_SOURCES = ("aws:kinesis", "aws:dynamodb")


@dataclass(frozen=True, slots=True)
class StreamRecord:
    delivery: ReceivedMessage
    sequence_number: str
    #: Lambda checkpoints per shard: the first failure of each is reported.
    shard: str


def is_stream(event: Mapping[str, Any]) -> bool:
    records = event.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and isinstance(records[0], Mapping)
        and records[0].get("eventSource") in STREAM_SOURCES
    )


def parse_record(queue: str, record: object) -> StreamRecord:
    """One record; :class:`MalformedEventError` if it lacks what AWS always sends."""
    if not isinstance(record, Mapping):
        raise MalformedEventError(f"stream record is a {type(record).__name__}, not an object")
    arn = record.get("eventSourceARN")
    arn = arn if isinstance(arn, str) else ""
    if record.get("eventSource") == "aws:kinesis":
        data = record.get("kinesis")
        if not isinstance(data, Mapping):
            raise MalformedEventError("Kinesis record without 'kinesis'")
        seq = data.get("sequenceNumber")
        raw = data.get("data")
        if not isinstance(seq, str) or not seq or not isinstance(raw, str):
            raise MalformedEventError("Kinesis record without sequenceNumber or data")
        try:
            body: str | bytes = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedEventError(f"Kinesis record {seq}: data is not base64") from None
        shard = record_shard(record)
    else:
        data = record.get("dynamodb")
        if not isinstance(data, Mapping):
            raise MalformedEventError("DynamoDB stream record without 'dynamodb'")
        seq = data.get("SequenceNumber")
        if not isinstance(seq, str) or not seq:
            raise MalformedEventError("DynamoDB stream record without SequenceNumber")
        image = data.get("NewImage")
        if not isinstance(image, Mapping):
            image = data.get("Keys")  # REMOVE events carry no new image
        body = json.dumps(unmarshal_image(image if isinstance(image, Mapping) else {}))
        shard = arn  # a batch comes from one shard of the table's stream
    return StreamRecord(
        ReceivedMessage(queue=queue, message_id=deterministic_id("stream", arn, seq), body=body),
        seq,
        shard,
    )


def record_shard(record: object) -> str:
    """The shard a record came from (Lambda checkpoints per shard): a Kinesis record's
    ``eventID`` prefix, else its stream ARN ("" for a record that is not an object)."""
    if not isinstance(record, Mapping):
        return ""
    arn = record.get("eventSourceARN")
    arn = arn if isinstance(arn, str) else ""
    event_id = record.get("eventID")
    if record.get("eventSource") == "aws:kinesis" and isinstance(event_id, str):
        return event_id.split(":", 1)[0]
    return arn


def unusable_delivery(queue: str, record: object) -> ReceivedMessage:
    """A delivery for a record :func:`parse_record` refused, to dead-letter it: the whole
    record as JSON (its data may not even be base64), and an id from the stream ARN and
    sequence number when it has them (the same record redelivered keeps its id), else from
    the record itself."""
    body = json.dumps(record, default=repr, separators=(",", ":"))
    raw = record if isinstance(record, Mapping) else {}
    arn = raw.get("eventSourceARN")
    data = raw.get("kinesis") or raw.get("dynamodb")
    seq = None
    if isinstance(data, Mapping):
        seq = data.get("sequenceNumber") or data.get("SequenceNumber")
    if isinstance(arn, str) and isinstance(seq, str) and seq:
        message_id = deterministic_id("stream-unusable-record", arn, seq)
    else:
        message_id = deterministic_id("stream-unusable-record", body)
    return ReceivedMessage(queue=queue, message_id=message_id, body=body)


def unmarshal_image(image: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB image (``{"name": {"S": "Ada"}}``) as plain JSON values."""
    return {str(k): _value(v) for k, v in image.items()}


def _value(typed: object) -> Any:
    if not isinstance(typed, Mapping) or len(typed) != 1:
        raise MalformedEventError("DynamoDB attribute value is not a one-key typed object")
    ((kind, value),) = typed.items()
    if kind in ("S", "B", "BOOL"):
        return value
    if kind == "NULL":
        return None
    if kind == "N":
        return _number(value)
    if kind in ("SS", "BS"):
        return list(value)
    if kind == "NS":
        return [_number(v) for v in value]
    if kind == "L":
        return [_value(v) for v in value]
    if kind == "M":
        return unmarshal_image(value)
    raise MalformedEventError(f"unknown DynamoDB attribute type {str(kind)[:10]!r}")


def _number(text: object) -> int | float:
    s = str(text)
    try:
        return int(s)
    except ValueError:
        try:
            return float(s)
        except ValueError:
            raise MalformedEventError(f"DynamoDB number {s[:40]!r} is not a number") from None
