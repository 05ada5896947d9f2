"""SQS batch records → :class:`~apix_core.transport.base.ReceivedMessage`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apix_aws.errors import MalformedEventError
from apix_core.transport.base import ReceivedMessage

#: The message attribute carrying apix's own message id (set by ``SqsTransport.send``).
MESSAGE_ID_ATTRIBUTE = "apix_message_id"
GROUP_ATTRIBUTE = "group_id"

_log = logging.getLogger("apix.aws")


@dataclass(slots=True)  # not frozen: a frozen __init__ costs several µs a record
class SqsRecord:
    """One usable record: its delivery, the ``messageId`` Lambda knows it by, its FIFO group."""

    delivery: ReceivedMessage
    item_id: str
    group: str | None


def is_sqs(event: Mapping[str, Any]) -> bool:
    records = event.get("Records")
    if (type(records) is not list and not isinstance(records, list)) or not records:
        return False
    first = records[0]
    # ``type(...) is dict`` first: the ABC check of ``Mapping`` costs µs (and events are JSON).
    return (type(first) is dict or isinstance(first, Mapping)) and first.get(
        "eventSource"
    ) == "aws:sqs"


def is_fifo(event: Mapping[str, Any]) -> bool:
    for record in event.get("Records") or ():
        if type(record) is dict or isinstance(record, Mapping):
            arn = record.get("eventSourceARN")
            if isinstance(arn, str):
                return arn.endswith(".fifo")
    return False


def parse_record(queue: str, record: object) -> SqsRecord:
    """The delivery of one record, with the ``messageId`` and FIFO group it is reported by;
    :class:`MalformedEventError` as :func:`parse_delivery`."""
    delivery = parse_delivery(queue, record)
    return record_of(record, delivery)  # type: ignore[arg-type]  # parse_delivery checked it


def record_of(record: Mapping[str, Any], delivery: ReceivedMessage) -> SqsRecord:
    """The :class:`SqsRecord` of a record :func:`parse_delivery` accepted (the slow paths:
    settling failures, FIFO order)."""
    system = record.get("attributes")
    group = system.get("MessageGroupId") if isinstance(system, Mapping) else None
    return SqsRecord(
        delivery, record["messageId"], group if isinstance(group, str) and group else None
    )


def records_of(raw: Sequence[object], deliveries: Sequence[ReceivedMessage]) -> list[SqsRecord]:
    """:func:`record_of` for each accepted record (``raw``: the accepted ones, in order)."""
    return [record_of(r, d) for r, d in zip(raw, deliveries, strict=True)]  # type: ignore[arg-type]


def parse_delivery(queue: str, record: object) -> ReceivedMessage:
    """The delivery of one record; :class:`MalformedEventError` when it has no ``messageId``
    (it then cannot be reported: an unknown ``itemIdentifier`` fails the whole batch). The
    warm path: no object but the delivery (see :func:`parse_record` for the rest)."""
    # ``type(...) is ...`` first: Lambda's events are plain JSON (dicts and strs), and the ABC
    # checks cost more than the rest of a well-formed record.
    if type(record) is not dict and not isinstance(record, Mapping):
        raise MalformedEventError(f"SQS record is a {type(record).__name__}, not an object")
    get = record.get
    item_id = get("messageId")
    if (type(item_id) is not str and not isinstance(item_id, str)) or not item_id:
        raise MalformedEventError("SQS record without a messageId")
    body = get("body")
    if type(body) is not str and not isinstance(body, str):
        # Kept as a delivery: the core rejects the empty body as a malformed message and
        # dead-letters it, so the record is accounted for.
        _log.warning(
            "SQS record without a body",
            extra={"message_id": item_id, "error_code": MalformedEventError.code},
        )
        body = ""
    system = get("attributes")
    if type(system) is not dict and not isinstance(system, Mapping):
        system = {}
    raw_attributes = get("messageAttributes")
    attributes = _string_attributes(raw_attributes) if raw_attributes else {}
    message_id = attributes.pop(MESSAGE_ID_ATTRIBUTE, None) or item_id
    group = system.get("MessageGroupId")
    if group is not None and isinstance(group, str) and group:
        attributes.setdefault(GROUP_ATTRIBUTE, group)
    receipt = get("receiptHandle")
    count = system.get("ApproximateReceiveCount")
    sent = system.get("SentTimestamp")
    return ReceivedMessage(  # positional: keywords cost a little more per record
        queue,
        message_id,
        body,
        receipt if type(receipt) is str or isinstance(receipt, str) else "",
        1 if count == "1" else _count(count),  # "1": almost every delivery
        attributes,
        # AWS's form (epoch ms digits) inline: a call less per record.
        int(sent) / 1000
        if type(sent) is str and sent.isascii() and sent.isdigit()
        else _timestamp(sent),
    )


def unusable_delivery(queue: str, record: object) -> ReceivedMessage:
    """A delivery for a record :func:`parse_record` refused, to dead-letter it: its body (or
    the whole record as JSON), its receipt handle when it has one, a deterministic id."""
    import json

    from apix_core.hashing import deterministic_id

    raw = record if isinstance(record, Mapping) else {}
    body = raw.get("body")
    if not isinstance(body, str):
        body = json.dumps(record, default=repr, separators=(",", ":"))
    receipt = raw.get("receiptHandle")
    return ReceivedMessage(
        queue=queue,
        message_id=deterministic_id("sqs-unusable-record", body, str(receipt)),
        body=body,
        receipt=receipt if isinstance(receipt, str) else "",
        attributes=_string_attributes(raw.get("messageAttributes")),
    )


def _string_attributes(raw: object) -> dict[str, str]:
    if type(raw) is not dict and not isinstance(raw, Mapping):
        return {}
    out: dict[str, str] = {}
    for name, value in raw.items():
        if type(value) is dict or isinstance(value, Mapping):
            text = value.get("stringValue")
            # Binary attributes have no apix meaning.
            if (type(text) is str or isinstance(text, str)) and isinstance(name, str):
                out[name] = text
    return out


def _count(value: object) -> int:
    if type(value) is str and value.isascii() and value.isdigit():  # AWS's form: "1"
        count = int(value)
        return count if 1 <= count < 2**31 else 1
    try:
        count = int(str(value))
    except ValueError:
        return 1
    return count if 1 <= count < 2**31 else 1


def _timestamp(value: object) -> float | None:
    if type(value) is str and value.isascii() and value.isdigit():  # AWS's form: epoch ms
        return int(value) / 1000
    try:
        return int(str(value)) / 1000
    except ValueError:
        return None
