"""The message that flows between processors, and its versioned JSON envelope."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from apix_core.constants import ENVELOPE_KEY, ENVELOPE_VERSION
from apix_core.exceptions import (
    EnvelopeError,
    InvalidTenantError,
    MalformedMessageError,
    MissingTenantError,
    PayloadValidationError,
    UnsupportedEnvelopeVersionError,
)
from apix_core.tenancy import TENANT_ID_PATTERN

SUPPORTED_ENVELOPE_VERSIONS = frozenset({ENVELOPE_VERSION})


def compact_encoder(*, sort_keys: bool = False, ensure_ascii: bool = True) -> Callable[[Any], str]:
    """A compact JSON encoder (``str()`` of anything JSON cannot hold) built once.

    ``json.dumps`` with non-default arguments builds a ``JSONEncoder`` per call, and
    ``JSONEncoder.encode`` builds its C encoder per call: about a microsecond each time, on
    every message. Circular structures raise ``RecursionError`` (no reference tracking).
    """
    encoder = json.encoder
    c_make_encoder = getattr(encoder, "c_make_encoder", None)  # private to the json package
    if c_make_encoder is None:  # no C accelerator (PyPy...): the standard way
        return json.JSONEncoder(
            separators=(",", ":"), default=str, ensure_ascii=ensure_ascii, sort_keys=sort_keys
        ).encode
    make = c_make_encoder(
        None,
        str,
        encoder.encode_basestring_ascii if ensure_ascii else encoder.encode_basestring,
        None,
        ":",
        ",",
        sort_keys,
        False,
        True,
    )

    def encode(value: Any) -> str:
        return "".join(make(value, 0))

    return encode


#: Compact JSON with ``str`` for anything else (datetimes, decimals), ASCII only.
dump_json = compact_encoder()


class MessageType(StrEnum):
    """What triggered the message."""

    ENTITY = "entity"
    TIMER = "timer"
    QUEUE = "queue"
    HTTP = "http"


class EntityReference(BaseModel):
    """Points at an entity's metadata; the content travels in the payload, never in the store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    external_id: str
    canonical_type: str
    source: str
    id: str | None = None
    version: int | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


class Message(BaseModel):
    """A unit of work for one processor.

    ``message_id`` is the idempotency key: a redelivered message keeps it, and messages apix
    emits get ids derived from their parent, so every stage deduplicates.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    message_id: str = Field(default_factory=_new_id, min_length=1, max_length=255)
    correlation_id: str = ""
    #: 1-64 of ``[A-Za-z0-9_.:@-]``, a letter or digit first (``TENANT_ID_PATTERN``).
    tenant_id: str = Field(min_length=1, max_length=64, pattern=TENANT_ID_PATTERN)
    type: MessageType = MessageType.QUEUE
    entity: EntityReference | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    attempt: int = Field(default=1, ge=1)
    created_at: datetime = Field(default_factory=_now)
    trace_context: dict[str, str] = Field(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        if not self.correlation_id:
            self.correlation_id = self.message_id

    # -- envelope -------------------------------------------------------------------------
    def to_queue_data(self) -> dict[str, Any]:
        """The versioned envelope as a JSON-ready dict (``attempt`` is delivery state: not sent)."""
        return envelope(
            message_id=self.message_id,
            correlation_id=self.correlation_id,
            tenant_id=self.tenant_id,
            type=self.type,
            payload=self.payload,
            metadata=self.metadata,
            created_at=self.created_at,
            entity=self.entity,
            trace_context=self.trace_context,
        )

    def to_json(self) -> str:
        """The envelope as compact JSON text, ready for any queue."""
        return dump_json(self.to_queue_data())

    @classmethod
    def create_from_queue_data(
        cls,
        data: str | bytes | bytearray | dict[str, Any],
        *,
        default_tenant: str | None = None,
        transport_message_id: str | None = None,
        attempt: int = 1,
    ) -> Message:
        """Parse a queue body.

        An apix envelope (``{"apix": 1, ...}``) is validated strictly. Any other JSON object is a
        *foreign* message: it becomes the payload of a new message whose id is derived from the
        transport's message id and whose tenant is ``default_tenant`` (the ``tenant_id`` message
        attribute, or ``APIX_TENANT_ID``).

        Raises only :class:`~apix_core.exceptions.EnvelopeError` subclasses.
        """
        if not isinstance(data, dict):
            # Fast path: a well-formed current envelope parses and validates in one pass.
            try:
                fast = _EnvelopeV1.model_validate_json(data)
            except (pydantic.ValidationError, ValueError, TypeError, RecursionError):
                pass
            else:
                # Hand back a plain Message (equal to one built any other way): the two classes
                # share their layout, so swapping the class and dropping the version is cheap.
                # Plain __dict__ writes: validated assignment costs more than the parse.
                fields = fast.__dict__
                del fields[ENVELOPE_KEY]
                fields["attempt"] = attempt
                fields_set = fast.__pydantic_fields_set__
                fields_set.discard(ENVELOPE_KEY)
                fields_set.add("attempt")
                object.__setattr__(fast, "__class__", Message)
                return fast
        obj = _decode(data)
        if ENVELOPE_KEY not in obj:
            return cls._from_foreign(obj, default_tenant, transport_message_id, attempt)
        version = obj[ENVELOPE_KEY]
        if type(version) is not int or version not in SUPPORTED_ENVELOPE_VERSIONS:
            raise UnsupportedEnvelopeVersionError(
                f"envelope version {version!r} is not supported "
                f"(this apix reads {sorted(SUPPORTED_ENVELOPE_VERSIONS)})"
            )
        fields = {k: v for k, v in obj.items() if k != ENVELOPE_KEY}
        if not fields.get("tenant_id"):
            if default_tenant is None:
                raise MissingTenantError(
                    "message carries no tenant_id and no default tenant is set"
                )
            fields["tenant_id"] = default_tenant
        fields["attempt"] = attempt
        return _validate(fields)

    @classmethod
    def _from_foreign(
        cls,
        obj: dict[str, Any],
        default_tenant: str | None,
        transport_message_id: str | None,
        attempt: int,
    ) -> Message:
        if not default_tenant:
            raise MissingTenantError(
                "foreign message has no tenant: set the 'tenant_id' message attribute "
                "or APIX_TENANT_ID"
            )
        fields: dict[str, Any] = {"tenant_id": default_tenant, "payload": obj, "attempt": attempt}
        if transport_message_id:
            fields["message_id"] = transport_message_id
        return _validate(fields)

    @classmethod
    def create_entity_message(
        cls,
        *,
        external_id: str,
        canonical_type: str,
        source: str,
        tenant_id: str,
        payload: dict[str, Any] | None = None,
        entity_id: str | None = None,
        version: int | None = None,
        **kwargs: Any,
    ) -> Message:
        """A message about one entity (type ENTITY)."""
        ref = EntityReference(
            external_id=external_id,
            canonical_type=canonical_type,
            source=source,
            id=entity_id,
            version=version,
        )
        return cls(
            tenant_id=tenant_id,
            type=MessageType.ENTITY,
            entity=ref,
            payload=payload or {},
            **kwargs,
        )


class _EnvelopeV1(Message):
    """The fast path's parser of envelope JSON (``{"apix": 1, ...}``); yields ``Message``s.

    The version is a *strict* int, like the slow path's ``type(version) is int`` check: a lax
    ``Literal[1]`` would take ``true`` and ``1.0``.
    """

    apix: StrictInt = Field(ge=ENVELOPE_VERSION, le=ENVELOPE_VERSION, exclude=True, repr=False)


#: ``MessageType.value`` through the enum's descriptor costs a microsecond per envelope.
_TYPE_VALUES: dict[MessageType, str] = {t: t.value for t in MessageType}


def envelope(
    *,
    message_id: str,
    correlation_id: str,
    tenant_id: str,
    type: MessageType,
    payload: dict[str, Any],
    metadata: dict[str, Any],
    created_at: datetime,
    entity: EntityReference | None = None,
    trace_context: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The envelope dict; the handler builds outgoing messages with it without a model."""
    data: dict[str, Any] = {
        ENVELOPE_KEY: ENVELOPE_VERSION,
        "message_id": message_id,
        "correlation_id": correlation_id,
        "tenant_id": tenant_id,
        "type": _TYPE_VALUES[type],
        "payload": payload,
        "metadata": metadata,
        "created_at": created_at.isoformat(),
    }
    if entity is not None:
        data["entity"] = entity.model_dump(exclude_none=True)
    if trace_context:
        data["trace_context"] = trace_context
    return data


def _decode(data: str | bytes | bytearray | dict[str, Any]) -> dict[str, Any]:
    if isinstance(data, dict):
        return data
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedMessageError(f"body is not UTF-8 JSON: {exc}") from None
    except TypeError:
        raise MalformedMessageError(
            f"body must be str or bytes, not {type(data).__name__}"
        ) from None
    if not isinstance(obj, dict):
        raise MalformedMessageError(f"body must be a JSON object, not {type(obj).__name__}")
    return obj


def _validate(fields: dict[str, Any]) -> Message:
    try:
        return Message.model_validate(fields)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        summary = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in errors
        )
        if any(e["loc"] and e["loc"][0] == "payload" for e in errors):
            raise PayloadValidationError(f"invalid payload: {summary}") from None
        tenant_errors = [e for e in errors if e["loc"] and e["loc"][0] == "tenant_id"]
        if tenant_errors:
            if all(e["type"] in ("missing", "string_too_short") for e in tenant_errors):
                raise MissingTenantError(f"missing tenant: {summary}") from None
            raise InvalidTenantError(f"invalid tenant: {summary}") from None
        raise EnvelopeError(f"invalid envelope: {summary}") from None
    except RecursionError:
        raise MalformedMessageError("body is nested too deeply") from None
