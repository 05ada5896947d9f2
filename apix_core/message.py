"""The message that flows between processors, and its versioned JSON envelope."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Any

import pydantic
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from apix_core.constants import (
    ENVELOPE_KEY,
    ENVELOPE_VERSION,
    MAX_INPUT_BYTES,
    MAX_JSON_DEPTH,
    MAX_MESSAGE_ID_CHARS,
)
from apix_core.errors import (
    EnvelopeError,
    InputTooLargeError,
    InvalidMessageIdError,
    InvalidTenantError,
    JsonTooDeepError,
    MalformedMessageError,
    MissingTenantError,
    OutputSerializationError,
    PayloadValidationError,
    UnsupportedEnvelopeVersionError,
)
from apix_core.tenancy import TENANT_ID_PATTERN

SUPPORTED_ENVELOPE_VERSIONS = frozenset({ENVELOPE_VERSION})
#: A message id: 1-255 characters, no NUL or other control characters (it keys the idempotency
#: table; PostgreSQL text cannot hold NUL). Unpaired surrogates are refused too (not UTF-8).
MESSAGE_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"


_ENVELOPE_TEXT = f'"{ENVELOPE_KEY}"'
_ENVELOPE_BYTES = _ENVELOPE_TEXT.encode()


def json_too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` (parsed JSON: dicts and lists) nests deeper than ``limit``; a top-level
    object is depth 1. Iterative: a 10,000-deep value costs no recursion."""
    if not isinstance(value, dict | list | tuple):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list | tuple):
                stack.append((child, depth + 1))
    return False


def check_json_input(
    data: str | bytes | bytearray, what: str = "body", limit: int | None = None
) -> None:
    """Refuse a body over :data:`~apix_core.constants.MAX_INPUT_BYTES` before parsing it."""
    if limit is None:
        limit = MAX_INPUT_BYTES
    if len(data) > limit:
        raise InputTooLargeError(f"{what} of {len(data)} bytes exceeds the {limit}-byte limit")


def check_json_depth(value: Any, what: str = "body") -> None:
    """:class:`JsonTooDeepError` when ``value`` nests deeper than ``MAX_JSON_DEPTH``."""
    if json_too_deep(value):
        raise JsonTooDeepError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")


def json_default(value: Any) -> Any:
    """The JSON form of a value ``json`` cannot write itself — apix's one rule, as pydantic's.

    * ``datetime``/``date``/``time`` → ISO 8601 (``isoformat()``);
    * ``Decimal`` → a number when that is exact (an integer, or a float that reads back as the
      same decimal: ``9.50`` → ``9.5``), else a string (no digit is lost);
    * ``UUID`` → its string; enums → their value; pydantic models → ``model_dump(mode="json")``;
      dataclasses → a dict of their fields;
    * ``bytes`` → UTF-8 text (as pydantic); invalid UTF-8 is an error;
    * sets → sorted lists (unsortable: an error, as there is no stable order);
    * other types pydantic knows (``timedelta``, ``Path``, IP addresses...) as pydantic does.

    Anything else raises ``TypeError``. The result may itself need this hook (nested values).
    """
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise TypeError("bytes that are not UTF-8 have no JSON form") from None
    if isinstance(value, set | frozenset):
        try:
            return sorted(value)
        except TypeError:
            raise TypeError("a set of values that cannot be sorted has no stable order") from None
    try:
        return pydantic_core.to_jsonable_python(value)
    except pydantic_core.PydanticSerializationError:
        raise TypeError(f"{type(value).__name__} has no JSON form") from None


def compact_encoder(*, sort_keys: bool = False, ensure_ascii: bool = True) -> Callable[[Any], str]:
    """A compact JSON encoder built once; non-JSON values go through :func:`json_default`.

    ``json.dumps`` with non-default arguments builds a ``JSONEncoder`` per call, and
    ``JSONEncoder.encode`` builds its C encoder per call: about a microsecond each time, on
    every message. Plain JSON data never reaches the ``default`` hook, so its text is exactly
    ``json.dumps``'s. A value with no JSON form raises :class:`OutputSerializationError` naming
    its path. Circular structures raise ``RecursionError`` (no reference tracking).
    """
    encoder = json.encoder
    c_make_encoder = getattr(encoder, "c_make_encoder", None)  # private to the json package
    encode_plain: Callable[[Any], str]
    if c_make_encoder is None:  # no C accelerator (PyPy...): the standard way
        encode_plain = json.JSONEncoder(
            separators=(",", ":"),
            default=json_default,
            ensure_ascii=ensure_ascii,
            sort_keys=sort_keys,
        ).encode
    else:
        make = c_make_encoder(
            None,
            json_default,
            encoder.encode_basestring_ascii if ensure_ascii else encoder.encode_basestring,
            None,
            ":",
            ",",
            sort_keys,
            False,
            True,
        )

        def encode_c(value: Any) -> str:
            return "".join(make(value, 0))

        encode_plain = encode_c

    def encode(value: Any) -> str:
        try:
            return encode_plain(value)
        except (TypeError, ValueError) as exc:
            raise unserializable(value, exc) from None

    return encode


def unserializable(value: Any, exc: Exception, root: str = "") -> OutputSerializationError:
    """The error for ``value`` that failed to encode: the path of the first culprit in it."""
    found = _find_unserializable(value, root)
    path, reason = found if found is not None else (root, str(exc))
    return OutputSerializationError.at(path, reason)


def _find_unserializable(value: Any, path: str) -> tuple[str, str] | None:
    """Walk ``value`` (only after a failure) to the first value with no JSON form."""
    if value is None or isinstance(value, str | int | float):
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if key is not None and not isinstance(key, str | int | float):
                return path, f"key {key!r} is a {type(key).__name__}, not a string"
            found = _find_unserializable(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _find_unserializable(item, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    try:
        converted = json_default(value)
    except TypeError as exc:
        return path, f"{type(value).__name__}: {exc}"
    return _find_unserializable(converted, path)


#: Compact JSON, ASCII only; non-JSON values by :func:`json_default`.
dump_json = compact_encoder()


def derive_message_id(
    tenant_id: str,
    transport_message_id: str | None,
    body: str | bytes | bytearray | dict[str, Any],
) -> str:
    """The id of a message whose body carries none (a foreign body, or an envelope without one).

    A redelivery must get the same id, or exactly-once fails: the transport's message id
    (SQS ``messageId``, Storage Queue ``id``, Service Bus ``message_id``, the local queue's id —
    all stable across redeliveries) when there is one, else a SHA-256 of the body. The tenant is
    part of the derivation, so two tenants' deliveries never share an id.
    """
    from apix_core.hashing import deterministic_id  # hashing imports this module

    # Untrusted attributes may be anything: the tenant is validated after this, its text form
    # is enough here.
    tenant_id = str(tenant_id)
    if transport_message_id:
        return deterministic_id("transport", tenant_id, str(transport_message_id))
    if isinstance(body, dict):
        raw = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    elif isinstance(body, str):
        raw = body.encode("utf-8", "surrogatepass")
    else:
        raw = bytes(body)
    return deterministic_id("body", tenant_id, hashlib.sha256(raw).hexdigest())


class MessageType(StrEnum):
    """What triggered the message."""

    ENTITY = "entity"
    TIMER = "timer"
    QUEUE = "queue"
    HTTP = "http"

    @classmethod
    def _missing_(cls, value: object) -> MessageType | None:
        # The seeds write "QUEUE"; the values are lower case. Only misses get here, so the
        # usual envelope pays nothing (a field validator would run for every message).
        if isinstance(value, str):
            low = value.lower()
            for member in cls:
                if member.value == low:
                    return member
        return None


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

    message_id: str = Field(
        default_factory=_new_id,
        min_length=1,
        max_length=MAX_MESSAGE_ID_CHARS,
        pattern=MESSAGE_ID_PATTERN,
    )
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

        Raises only :class:`~apix_core.exceptions.EnvelopeError` subclasses: too large
        (:data:`~apix_core.constants.MAX_INPUT_BYTES`) and too deeply nested
        (:data:`~apix_core.constants.MAX_JSON_DEPTH`) bodies included.
        """
        # ``type(...) is str`` first: a queue body is text, and ``isinstance`` of a union costs
        # more than the rest of this prologue.
        if type(data) is str or isinstance(data, str):
            if len(data) > MAX_INPUT_BYTES:
                check_json_input(data)
            envelope_text = _ENVELOPE_TEXT in data
        elif isinstance(data, bytes | bytearray):
            if len(data) > MAX_INPUT_BYTES:
                check_json_input(data)
            envelope_text = _ENVELOPE_BYTES in data
        elif isinstance(data, dict):
            envelope_text = False
        else:
            raise MalformedMessageError(f"body must be str or bytes, not {type(data).__name__}")
        if envelope_text:
            # Fast path: a well-formed current envelope parses and validates in one pass. A body
            # without the key's text is no envelope (foreign): it skips a parse that would fail.
            try:
                fast = _validate_envelope_json(data)  # type: ignore[arg-type]
            except (pydantic.ValidationError, ValueError, TypeError, RecursionError):
                pass
            else:
                return _from_fast(fast, data, transport_message_id, attempt)  # type: ignore[arg-type]
        obj = _decode(data)
        check_json_depth(obj)
        if ENVELOPE_KEY not in obj:
            return cls._from_foreign(obj, data, default_tenant, transport_message_id, attempt)
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
        if not fields.get("message_id") and isinstance(fields["tenant_id"], str):
            fields["message_id"] = derive_message_id(
                fields["tenant_id"], transport_message_id, data
            )
        fields["attempt"] = attempt
        return _validate(fields)

    @classmethod
    def _from_foreign(
        cls,
        obj: dict[str, Any],
        data: str | bytes | bytearray | dict[str, Any],
        default_tenant: str | None,
        transport_message_id: str | None,
        attempt: int,
    ) -> Message:
        if not default_tenant:
            raise MissingTenantError(
                "foreign message has no tenant: set the 'tenant_id' message attribute "
                "or APIX_TENANT_ID"
            )
        fields: dict[str, Any] = {
            "tenant_id": default_tenant,
            "payload": obj,
            "attempt": attempt,
            "message_id": derive_message_id(default_tenant, transport_message_id, data),
        }
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


def _from_fast(
    fast: Message, data: str | bytes | bytearray, transport_message_id: str | None, attempt: int
) -> Message:
    """The plain :class:`Message` of a validated ``_EnvelopeV1`` (equal to one built any other
    way): the two classes share their layout, so swapping the class and dropping the version is
    cheap. Plain ``__dict__`` writes: validated assignment costs more than the parse."""
    fields = fast.__dict__
    fields_set = fast.__pydantic_fields_set__
    if "message_id" not in fields_set:
        # The default factory drew a random id: derive a stable one instead.
        fields["message_id"] = derive_message_id(fields["tenant_id"], transport_message_id, data)
    if not fields["correlation_id"]:
        # Message.model_post_init's default, here: _EnvelopeV1 skips the per-message callback.
        fields["correlation_id"] = fields["message_id"]
    del fields[ENVELOPE_KEY]
    fields["attempt"] = attempt
    fields_set.discard(ENVELOPE_KEY)
    fields_set.add("attempt")
    object.__setattr__(fast, "__class__", Message)
    # Cheap pre-check (C-speed counts): nesting past the limit needs more brackets. A body
    # without arrays skips one count (``in`` is a memchr, a count walks every character).
    if type(data) is str or isinstance(data, str):
        opens = data.count("{") + data.count("[") if "[" in data else data.count("{")
    else:
        opens = data.count(b"{") + data.count(b"[")
    if opens > MAX_JSON_DEPTH:
        check_json_depth(fields["payload"], "payload")
        check_json_depth(fields["metadata"], "metadata")
    return fast


class _EnvelopeV1(Message):
    """The fast path's parser of envelope JSON (``{"apix": 1, ...}``); yields ``Message``s.

    The version is a *strict* int, like the slow path's ``type(version) is int`` check: a lax
    ``Literal[1]`` would take ``true`` and ``1.0``.
    """

    apix: StrictInt = Field(ge=ENVELOPE_VERSION, le=ENVELOPE_VERSION, exclude=True, repr=False)

    #: pydantic calls no post-init hook when it is BaseModel's: _from_fast sets the default
    #: correlation id instead (a Python callback per envelope costs more than the dict check).
    model_post_init = BaseModel.model_post_init  # type: ignore[pydantic-field]


#: ``_EnvelopeV1.model_validate_json`` without its Python frame (the same validator call with
#: pydantic's defaults): a fraction of a microsecond per envelope.
_validate_envelope_json: Callable[[str | bytes | bytearray], Message] = (
    _EnvelopeV1.__pydantic_validator__.validate_json
)

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
    except RecursionError:
        raise JsonTooDeepError(f"body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as exc:
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
        if any(e["loc"] and e["loc"][0] == "message_id" for e in errors):
            raise InvalidMessageIdError(
                f"invalid message id: {summary} (1-{MAX_MESSAGE_ID_CHARS} characters, "
                "no control characters)"
            ) from None
        if any(e["loc"] and e["loc"][0] == "payload" for e in errors):
            raise PayloadValidationError(f"invalid payload: {summary}") from None
        tenant_errors = [e for e in errors if e["loc"] and e["loc"][0] == "tenant_id"]
        if tenant_errors:
            if all(e["type"] in ("missing", "string_too_short") for e in tenant_errors):
                raise MissingTenantError(f"missing tenant: {summary}") from None
            raise InvalidTenantError(f"invalid tenant: {summary}") from None
        raise EnvelopeError(f"invalid envelope: {summary}") from None
    except RecursionError:
        raise JsonTooDeepError(f"message nests deeper than {MAX_JSON_DEPTH} levels") from None


def build_message(**fields: Any) -> Message:
    """A :class:`Message` from caller values, raising apix's typed errors only (the public
    entry points' constructor): :class:`InvalidTenantError`, :class:`InvalidMessageIdError`,
    :class:`PayloadValidationError`, :class:`JsonTooDeepError`..."""
    for name in ("payload", "metadata"):
        value = fields.get(name)
        if value is not None and not isinstance(value, dict):
            raise PayloadValidationError(f"{name} must be a dict, not {type(value).__name__}")
        check_json_depth(value, name)
    return _validate(fields)
