"""The envelope fast path's model has no post-init hook: the correlation id defaults the same."""

from __future__ import annotations

import json

import pytest

from apix_core.message import Message


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"message_id": "m-1"}, "m-1"),  # no correlation id: the message id
        ({"message_id": "m-1", "correlation_id": ""}, "m-1"),  # empty: the message id
        ({"message_id": "m-1", "correlation_id": "c-9"}, "c-9"),  # given: kept
    ],
)
def test_correlation_id_defaults_to_message_id(fields: dict[str, str], expected: str) -> None:
    # GIVEN a current envelope, with or without a correlation id
    body = json.dumps({"apix": 1, "tenant_id": "acme", "payload": {"n": 1}, **fields})
    # WHEN it is parsed (the fast path) and built directly (Message's own post-init)
    parsed = Message.create_from_queue_data(body, transport_message_id="sqs-1")
    built = Message(tenant_id="acme", payload={"n": 1}, created_at=parsed.created_at, **fields)
    # THEN both carry the same correlation id, and are equal plain Messages
    assert parsed.correlation_id == expected == built.correlation_id
    assert type(parsed) is Message and parsed == built


def test_derived_message_id_is_also_the_correlation_id() -> None:
    # GIVEN an envelope without a message id (another producer's, apix-shaped)
    body = json.dumps({"apix": 1, "tenant_id": "acme", "payload": {}})
    # WHEN it is parsed twice from the same transport id
    first = Message.create_from_queue_data(body, transport_message_id="sqs-1")
    again = Message.create_from_queue_data(body, transport_message_id="sqs-1")
    # THEN the derived id is stable and the correlation id follows it
    assert first.message_id == again.message_id
    assert first.correlation_id == first.message_id
