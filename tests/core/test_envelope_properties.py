"""Property tests of the envelope parser: it returns a Message or a documented EnvelopeError."""

from __future__ import annotations

import json
from datetime import UTC, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apix_core import EntityReference, EnvelopeError, Message, MessageType
from apix_core.exceptions import (
    MalformedMessageError,
    MissingTenantError,
    PayloadValidationError,
    UnsupportedEnvelopeVersionError,
)

DOCUMENTED = (
    MalformedMessageError,
    UnsupportedEnvelopeVersionError,
    MissingTenantError,
    PayloadValidationError,
    EnvelopeError,
)

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)

ENVELOPE_FIELDS = (
    "message_id",
    "correlation_id",
    "tenant_id",
    "type",
    "entity",
    "payload",
    "metadata",
    "attempt",
    "created_at",
    "trace_context",
)

# Envelope-shaped objects: the real field names with arbitrary values, plus random fields.
envelope_like = st.builds(
    lambda version, known, extra: {"apix": version, **extra, **known},
    st.one_of(st.just(1), json_values),
    st.dictionaries(st.sampled_from(ENVELOPE_FIELDS), json_values, max_size=len(ENVELOPE_FIELDS)),
    st.dictionaries(st.text(max_size=8), json_scalars, max_size=3),
)
default_tenants = st.none() | st.text(max_size=70)
transport_ids = st.none() | st.text(max_size=300)


def _parse(data: Any, tenant: str | None, transport_id: str | None) -> Message | None:
    """Parse; returns None for a documented error and lets anything else escape."""
    try:
        message = Message.create_from_queue_data(
            data, default_tenant=tenant, transport_message_id=transport_id
        )
    except DOCUMENTED as exc:
        assert exc.code in {cls.code for cls in DOCUMENTED}
        assert str(exc)
        return None
    assert isinstance(message, Message)
    assert message.tenant_id
    return message


@PROPS
@given(st.binary(max_size=200), default_tenants, transport_ids)
def test_arbitrary_bytes_parse_or_raise_envelope_error(
    data: bytes, tenant: str | None, transport_id: str | None
) -> None:
    # GIVEN arbitrary bytes WHEN parsed THEN a Message or a documented error, nothing else
    _parse(data, tenant, transport_id)


@PROPS
@given(st.text(max_size=200), default_tenants, transport_ids)
def test_arbitrary_text_parse_or_raise_envelope_error(
    data: str, tenant: str | None, transport_id: str | None
) -> None:
    _parse(data, tenant, transport_id)


@PROPS
@given(json_values, default_tenants, transport_ids, st.booleans())
def test_arbitrary_json_parse_or_raise_envelope_error(
    value: Any, tenant: str | None, transport_id: str | None, as_text: bool
) -> None:
    # GIVEN any JSON value, as text or (for objects) as an already-decoded dict
    data: Any = json.dumps(value) if as_text or not isinstance(value, dict) else value
    # WHEN parsed THEN a Message or a documented error; a non-object never parses
    message = _parse(data, tenant, transport_id)
    if not isinstance(value, dict):
        assert message is None


@PROPS
@given(envelope_like, default_tenants, transport_ids, st.booleans())
def test_envelope_shaped_objects_parse_or_raise_envelope_error(
    obj: dict[str, Any], tenant: str | None, transport_id: str | None, as_text: bool
) -> None:
    # GIVEN {"apix": <anything>, <envelope fields with arbitrary values>, <random fields>}
    data: Any = json.dumps(obj) if as_text else obj
    # WHEN parsed
    message = _parse(data, tenant, transport_id)
    # THEN only version 1 can ever be accepted, and the delivery's attempt is not read
    # from the body
    if message is not None:
        assert type(obj["apix"]) is int and obj["apix"] == 1
        assert message.attempt == 1


@PROPS
@given(
    json_objects,
    st.text(min_size=1, max_size=64),
    st.text(min_size=1, max_size=255),
)
def test_foreign_objects_become_the_payload(obj: dict[str, Any], tenant: str, tid: str) -> None:
    # GIVEN a JSON object that is not an envelope, with a default tenant
    obj.pop("apix", None)
    # WHEN parsed
    message = Message.create_from_queue_data(
        json.dumps(obj), default_tenant=tenant, transport_message_id=tid
    )
    # THEN the whole object is the payload and the transport id is the message id
    assert message.payload == obj
    assert message.message_id == tid
    assert message.tenant_id == tenant


small_text = st.text(min_size=1, max_size=40)
offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
entities = st.none() | st.builds(
    EntityReference,
    external_id=small_text,
    canonical_type=small_text,
    source=small_text,
    id=st.none() | small_text,
    version=st.none() | st.integers(min_value=1, max_value=10**6),
)
messages = st.builds(
    Message,
    message_id=st.text(min_size=1, max_size=40) | st.text(min_size=250, max_size=255),
    correlation_id=st.text(max_size=60),
    tenant_id=st.text(min_size=1, max_size=64),
    type=st.sampled_from(list(MessageType)),
    entity=entities,
    payload=json_objects,
    metadata=json_objects,
    attempt=st.integers(min_value=1, max_value=50),
    created_at=st.datetimes(timezones=offsets) | st.datetimes(),
    trace_context=st.dictionaries(small_text, st.text(max_size=60), max_size=3),
)


@PROPS
@given(messages, st.integers(min_value=1, max_value=50))
def test_round_trip_preserves_every_field_but_attempt(message: Message, attempt: int) -> None:
    # GIVEN any valid message WHEN serialised and parsed back (a new delivery attempt)
    parsed = Message.create_from_queue_data(message.to_json(), attempt=attempt)
    # THEN it is the same message; attempt is delivery state, so it comes from the transport
    assert parsed.attempt == attempt
    assert parsed.model_dump(exclude={"attempt"}) == message.model_dump(exclude={"attempt"})
