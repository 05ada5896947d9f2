"""Property tests of the envelope parser: it returns a Message or a documented EnvelopeError."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apix_core import EntityReference, EnvelopeError, Message, MessageType
from apix_core.errors import (
    InputTooLargeError,
    InvalidMessageIdError,
    InvalidTenantError,
    JsonTooDeepError,
    MalformedMessageError,
    MissingTenantError,
    PayloadValidationError,
    UnsupportedEnvelopeVersionError,
)
from apix_core.message import derive_message_id
from apix_core.tenancy import TENANT_ID_PATTERN

DOCUMENTED = (
    MalformedMessageError,
    UnsupportedEnvelopeVersionError,
    MissingTenantError,
    InvalidTenantError,
    PayloadValidationError,
    InvalidMessageIdError,
    JsonTooDeepError,
    InputTooLargeError,
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
# Valid tenant ids (TENANT_ID_PATTERN without anchors: `$` would allow a trailing newline).
tenant_ids = st.from_regex(TENANT_ID_PATTERN.strip("^$"), fullmatch=True)
transport_ids = st.none() | st.text(max_size=300)
# Valid message ids: 1-255 characters, no control characters (MESSAGE_ID_PATTERN).
_id_chars = st.characters(blacklist_categories=("Cc", "Cs"))
message_ids = st.text(_id_chars, min_size=1, max_size=40) | st.text(
    _id_chars, min_size=250, max_size=255
)


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
@given(json_objects, tenant_ids, message_ids)
def test_foreign_objects_become_the_payload(obj: dict[str, Any], tenant: str, tid: str) -> None:
    # GIVEN a JSON object that is not an envelope, with a default tenant
    obj.pop("apix", None)
    # WHEN parsed
    message = Message.create_from_queue_data(
        json.dumps(obj), default_tenant=tenant, transport_message_id=tid
    )
    # THEN the whole object is the payload and the message id derives from the transport id
    assert message.payload == obj
    assert message.message_id == derive_message_id(tenant, tid, "")
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
    message_id=message_ids,
    correlation_id=st.text(max_size=60),
    tenant_id=tenant_ids,
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


@PROPS
@given(st.text(max_size=70), st.booleans())
def test_tenant_ids_outside_the_safe_pattern_are_refused(tenant: str, envelope: bool) -> None:
    # GIVEN any text as the tenant, in an envelope or as the default tenant of a foreign body
    body = (
        json.dumps({"apix": 1, "message_id": "m-1", "tenant_id": tenant})
        if envelope
        else json.dumps({"order": 1})
    )
    # WHEN parsed
    try:
        message = Message.create_from_queue_data(body, default_tenant=tenant)
    except MissingTenantError as exc:
        # THEN an unsafe tenant is a typed envelope error (a dead letter, never a file path)
        assert re.fullmatch(TENANT_ID_PATTERN.strip("^$"), tenant) is None
        assert isinstance(exc, EnvelopeError)
        assert exc.code == ("INVALID_TENANT" if tenant else "MISSING_TENANT")
    else:
        # AND a safe one is kept as given
        assert re.fullmatch(TENANT_ID_PATTERN.strip("^$"), tenant) is not None
        assert message.tenant_id == tenant


@pytest.mark.parametrize(
    "tenant", ["../../escaped", "a/b", "..", ".hidden", "acme\n", "acme ", "é", "a" * 65]
)
def test_path_like_tenants_are_invalid_in_every_parse_path(tenant: str) -> None:
    # GIVEN an envelope whose tenant is path-like or otherwise unsafe
    envelope = {"apix": 1, "message_id": "m-1", "tenant_id": tenant, "payload": {}}
    # WHEN the envelope is parsed as text (fast path) and as a dict (slow path), and a
    # foreign body gets the tenant from its attribute
    for data in (json.dumps(envelope), envelope):
        with pytest.raises(InvalidTenantError):
            Message.create_from_queue_data(data)
    with pytest.raises(InvalidTenantError):
        Message.create_from_queue_data('{"x": 1}', default_tenant=tenant)


VERSIONS = st.sampled_from([1, True, 1.0, "1", 2, 0, -1, None, [1], {"v": 1}])


@PROPS
@given(messages, VERSIONS, st.integers(min_value=1, max_value=50))
def test_fast_and_slow_paths_agree_on_version_and_equality(
    message: Message, version: Any, attempt: int
) -> None:
    # GIVEN a valid message's envelope with some value as the version
    data = message.to_queue_data()
    data["apix"] = version
    # WHEN parsed as JSON text (the fast path) and as a decoded dict (the slow path)
    results: list[Message | str] = []
    for body in (json.dumps(data), data):
        try:
            results.append(Message.create_from_queue_data(body, attempt=attempt))
        except UnsupportedEnvelopeVersionError as exc:
            results.append(exc.code)
    # THEN only the int 1 is a version (not true, 1.0 or "1"), on both paths alike
    if type(version) is int and version == 1:
        expected = message.model_copy(update={"attempt": attempt})
        # AND the result is a plain Message, equal to the original
        assert all(type(r) is Message for r in results)
        assert results == [expected, expected]
    else:
        assert results == ["UNSUPPORTED_ENVELOPE_VERSION"] * 2


@PROPS
@given(
    value=st.recursive(
        json_scalars | st.datetimes(timezones=st.just(UTC)),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_compact_encoders_write_what_json_dumps_writes(value: Any) -> None:
    # GIVEN any JSON-like value (datetimes included: written as ISO 8601)
    from apix_core.hashing import canonical_json
    from apix_core.message import dump_json

    def iso(v: Any) -> str:
        assert isinstance(v, datetime)
        return v.isoformat()

    # WHEN the envelope encoder and the content-hash encoder write it
    # THEN the text is json.dumps's with the same options, byte for byte
    assert dump_json(value) == json.dumps(value, separators=(",", ":"), default=iso)
    assert canonical_json(value) == json.dumps(
        value, separators=(",", ":"), default=iso, sort_keys=True, ensure_ascii=False
    )
