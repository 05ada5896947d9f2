"""apix's one error vocabulary: every typed error, its stable code, and how a failure is classified.

Every error derives from :class:`ApixError` and has a stable ``code`` (recorded with processing
errors and dead letters) and a ``retryable`` flag that drives the retry policy:

* :class:`PermanentError` (category ``validation``): the input can never succeed — not retried,
  dead-lettered at once. Bad envelopes, payloads, oversize messages, unsafe file outputs.
* :class:`TransientError` (category ``transient``): retried in-invocation with backoff, then
  redelivered; ``retry_after`` (seconds) asks for a precise redelivery delay (a 429's
  ``Retry-After``).
* anything else a processor raises is ``unexpected``: redelivered until ``max_attempts`` —
  except programming errors (:data:`PROGRAMMING_ERRORS`: ``TypeError``, ``AttributeError``,
  ``NameError``...), dead-lettered at once as ``PROCESSOR_BUG`` unless ``can_retry`` allows.

``ValidationError`` is the old name of :class:`PermanentError` (it clashed with pydantic's);
importing it still works and warns.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from apix_core.storable import clip, escape_control

if TYPE_CHECKING:
    from apix_core.processor import ProcessorInterface


class ApixError(Exception):
    """Base of every error raised by apix."""

    code: ClassVar[str] = "APIX_ERROR"
    retryable: ClassVar[bool] = False


# -- configuration and programming errors ---------------------------------------------------
class ConfigurationError(ApixError):
    """The app, a processor or the environment is configured wrongly."""

    code = "CONFIGURATION_ERROR"


class TopologyError(ConfigurationError):
    """A processor sent to a queue it did not declare in ``produces``."""

    code = "TOPOLOGY_ERROR"


class ReadOnlyRouteError(ConfigurationError):
    """A read-only HTTP route (``GET``/``HEAD``/``OPTIONS``, no ``produces``) tried to write:
    ``persist_entity``, ``transition``, ``send`` or a ``ctx.state`` change. Such a route runs
    without the processing transaction; a route that writes uses ``POST``/``PUT``/``PATCH``/
    ``DELETE`` (exactly-once with ``Idempotency-Key``) or declares ``produces=``."""

    code = "READ_ONLY_ROUTE"


class TenantRequiredError(ApixError):
    """A tenant-scoped call ran outside ``tenant_context``."""

    code = "TENANT_REQUIRED"


class ProcessorContextError(ApixError):
    """A ``ProcessorContext`` method was used where it cannot work."""

    code = "CONTEXT_ERROR"


class EntityNotFoundError(ApixError):
    """No entity with that id exists for the current tenant."""

    code = "ENTITY_NOT_FOUND"


class DeadLetterNotFoundError(ApixError):
    """No dead-letter record with that id."""

    code = "DEAD_LETTER_NOT_FOUND"


class UnsupportedOperationError(ApixError):
    """The transport (or backend) in use cannot do this (e.g. list dead letters)."""

    code = "UNSUPPORTED_OPERATION"


# -- processing errors: what steers retries --------------------------------------------------
class ProcessingError(ApixError):
    """Base for errors a processor raises on purpose to steer retries."""

    code = "PROCESSING_ERROR"
    retryable = True


class PermanentError(ProcessingError):
    """The input can never succeed: not retried, dead-lettered at once."""

    code = "VALIDATION_ERROR"
    retryable = False


class InvalidCursorError(PermanentError):
    """A page cursor or limit that the listing API did not issue or cannot use."""

    code = "INVALID_CURSOR"


class OutputSerializationError(PermanentError):
    """A value in an output (payload, metadata, entity attribute) has no JSON form.

    ``path`` names it (``payload.items[2].price``); the message is dead-lettered at once.
    """

    code = "UNSERIALIZABLE_OUTPUT"

    def __init__(self, message: str, path: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason

    @classmethod
    def at(cls, path: str, reason: str) -> OutputSerializationError:
        return cls(f"output value at {path or '<root>'} has no JSON form: {reason}", path, reason)

    def under(self, root: str) -> OutputSerializationError:
        """The same error with its path inside ``root`` (``items[2]`` → ``payload.items[2]``)."""
        sep = "" if not self.path or self.path.startswith("[") else "."
        return OutputSerializationError.at(f"{root}{sep}{self.path}", self.reason)


class TransientError(ProcessingError):
    """A temporary failure: retried with backoff in-invocation, then redelivered.

    ``retry_after`` (seconds), when given, is the redelivery delay to use instead of the
    processor's backoff (e.g. an HTTP 429's ``Retry-After``); in-invocation retries are then
    skipped, since the other side asked to wait.
    """

    code = "TRANSIENT_ERROR"
    retryable = True

    def __init__(self, *args: object, retry_after: float | None = None) -> None:
        super().__init__(*args)
        self.retry_after = retry_after


class DeadlineExceededError(TransientError):
    """The invocation's deadline (e.g. a Lambda's remaining time) came before this message was
    started: it was not run, and is left for redelivery."""

    code = "DEADLINE_EXCEEDED"


class DatabaseUnavailableError(TransientError):
    """The metadata store could not be reached within the configured timeout."""

    code = "DATABASE_UNAVAILABLE"


class TransportError(TransientError):
    """A queue transport failed to send, receive or acknowledge."""

    code = "TRANSPORT_ERROR"


class TokenRefreshError(TransientError):
    """The token endpoint failed (now, or recently: see ``failed_until``), or did not answer in
    time, or another instance's refresh held the token row longer than the lock wait."""

    code = "TOKEN_REFRESH_FAILED"


class TokenRejectedError(PermanentError, TokenRefreshError):
    """The token endpoint refused the request (HTTP 400, 401 or 403: a wrong client id or
    secret, scope or grant type): retrying cannot fix it, so it is not retried.

    Still a :class:`TokenRefreshError`, for code that catches every token failure."""

    code = "TOKEN_REJECTED"


class StateConflictError(TransientError):
    """A compare-and-set ``put`` of per-tenant state found another version than expected:
    someone wrote first."""

    code = "STATE_CONFLICT"

    def __init__(self, namespace: str, key: str, expected: int, actual: int | None) -> None:
        found = "no entry" if actual is None else f"version {actual}"
        super().__init__(f"state {namespace!r}/{key!r}: expected version {expected}, found {found}")
        self.namespace = namespace
        self.key = key
        self.expected = expected
        self.actual = actual


# -- bad input -------------------------------------------------------------------------------
class EnvelopeError(PermanentError):
    """A queue body is not a valid apix message."""

    code = "INVALID_ENVELOPE"


class MalformedMessageError(EnvelopeError):
    """The body is not UTF-8 JSON, or not a JSON object."""

    code = "MALFORMED_MESSAGE"


class UnsupportedEnvelopeVersionError(EnvelopeError):
    """The envelope version is not one this apix understands."""

    code = "UNSUPPORTED_ENVELOPE_VERSION"


class MissingTenantError(EnvelopeError):
    """The message carries no tenant and no default tenant is configured."""

    code = "MISSING_TENANT"


class InvalidTenantError(MissingTenantError, TenantRequiredError):
    """A tenant id that is not a safe identifier (see :data:`apix_core.tenancy.TENANT_ID_PATTERN`).

    A :class:`MissingTenantError` (so a message carrying one is dead-lettered as bad input) and a
    :class:`TenantRequiredError` (what ``tenant_context`` raises for an unusable tenant).
    """

    code = "INVALID_TENANT"


class JsonTooDeepError(MalformedMessageError):
    """A JSON body (queue or HTTP) nests deeper than :data:`apix_core.constants.MAX_JSON_DEPTH`."""

    code = "JSON_TOO_DEEP"


class InputTooLargeError(MalformedMessageError):
    """A body is larger than :data:`apix_core.constants.MAX_INPUT_BYTES` (any input path)."""

    code = "INPUT_TOO_LARGE"


class InvalidMessageIdError(EnvelopeError):
    """A message id that is empty, longer than 255 characters, or holds control characters,
    NUL or unpaired surrogates (no metadata store can key on it)."""

    code = "INVALID_MESSAGE_ID"


class PayloadValidationError(EnvelopeError):
    """The payload has the wrong type or fails the processor's payload model."""

    code = "INVALID_PAYLOAD"


class MessageTooLargeError(PermanentError):
    """A message exceeds the transport's size limit (counted in bytes as the transport counts)."""

    code = "MESSAGE_TOO_LARGE"

    def __init__(self, size: int, limit: int, destination: str) -> None:
        super().__init__(
            f"message of {size} bytes exceeds the {limit}-byte limit of {destination!r}"
        )
        self.size = size
        self.limit = limit
        self.destination = destination


class FileOutputError(PermanentError):
    """A file output cannot be written safely: never retried."""

    code = "INVALID_FILE_OUTPUT"


class InvalidFilePatternError(FileOutputError):
    """A ``file_pattern`` uses an unknown placeholder or is not a valid format string."""

    code = "INVALID_FILE_PATTERN"


class UnsafeFilePathError(FileOutputError):
    """A file output's path resolves outside its destination directory."""

    code = "UNSAFE_FILE_PATH"


# -- classification --------------------------------------------------------------------------
class ErrorCategory(StrEnum):
    VALIDATION = "validation"
    TRANSIENT = "transient"
    UNEXPECTED = "unexpected"


@dataclass(frozen=True)
class ErrorInfo:
    """What is recorded of a failure: stable code, category, message, whether to retry."""

    code: str
    category: ErrorCategory
    message: str
    retryable: bool
    #: Redelivery delay asked for by the failure itself (``TransientError.retry_after``).
    retry_after: float | None = None

    @classmethod
    def of(cls, exc: BaseException, processor: ProcessorInterface | None = None) -> ErrorInfo:
        return classify(exc, processor)


# asyncio.TimeoutError is TimeoutError since Python 3.11 (and importing asyncio costs ~20 ms).
_TRANSIENT_BUILTINS = (ConnectionError, TimeoutError)

#: Builtin exceptions that mean a bug in the processor's code: retrying the same input runs the
#: same bug again, so they are not retried unless the processor's ``can_retry`` says so.
#: (``UnboundLocalError`` is a ``NameError``, ``ModuleNotFoundError`` an ``ImportError``.)
#: ``KeyError``/``IndexError``/``ValueError`` are left out: they as often come from the data
#: (an external system's reply) as from the code.
PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    TypeError,
    AttributeError,
    NameError,
    AssertionError,
    ZeroDivisionError,
    ImportError,
    SyntaxError,
    NotImplementedError,
)


def is_programming_error(exc: BaseException) -> bool:
    """Whether ``exc`` is one of :data:`PROGRAMMING_ERRORS` (a bug, not a circumstance)."""
    return isinstance(exc, PROGRAMMING_ERRORS)


def _is_transient_database_error(exc: BaseException) -> bool:
    # Only a driver's or SQLAlchemy's exception can be one: the store module (and SQLAlchemy)
    # stays off the import path of apps that never touch a database error.
    module = type(exc).__module__
    if not module.startswith(("sqlalchemy", "asyncpg", "sqlite3", "aiosqlite")):
        return False
    from apix_core.store.errors import is_transient_store_error

    return is_transient_store_error(exc)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a passing failure of an infrastructure (database, network), not the
    data's: apix errors by their ``retryable`` flag, driver errors by what they mean."""
    if isinstance(exc, ApixError):
        return exc.retryable
    if isinstance(exc, OSError | TimeoutError):
        return True
    return _is_transient_database_error(exc)


def classify(exc: BaseException, processor: ProcessorInterface | None = None) -> ErrorInfo:
    """The :class:`ErrorInfo` of a failure; ``processor.can_retry`` may veto retries of
    exceptions that are not apix's own."""
    message = redact_error_message(exc)
    if isinstance(exc, ApixError):
        if isinstance(exc, ConfigurationError):
            return ErrorInfo(exc.code, ErrorCategory.UNEXPECTED, message, retryable=False)
        if not exc.retryable:
            return ErrorInfo(exc.code, ErrorCategory.VALIDATION, message, retryable=False)
        retry_after = getattr(exc, "retry_after", None)
        return ErrorInfo(exc.code, ErrorCategory.TRANSIENT, message, True, retry_after)
    bug = isinstance(exc, PROGRAMMING_ERRORS)
    retryable = not bug
    if processor is not None and isinstance(exc, Exception):
        # The default ``can_retry`` refuses programming errors; an override decides.
        retryable = bool(processor.can_retry(exc))
    if isinstance(exc, _TRANSIENT_BUILTINS) or _is_transient_database_error(exc):
        return ErrorInfo("TRANSIENT_ERROR", ErrorCategory.TRANSIENT, message, retryable)
    if bug and not retryable:
        return ErrorInfo("PROCESSOR_BUG", ErrorCategory.UNEXPECTED, message, retryable=False)
    return ErrorInfo(
        "UNEXPECTED_ERROR" if retryable else "NON_RETRYABLE_ERROR",
        ErrorCategory.UNEXPECTED,
        message,
        retryable,
    )


# -- what of an error message may be stored ---------------------------------------------------
#: Longest error message kept in the metadata store (processing errors, dead letters).
MAX_STORED_ERROR_CHARS = 2000
#: The mark left where a value was removed from an error message.
REMOVED = "***"

_PYDANTIC_INPUT = re.compile(r"input_value=.*?(?=, input_type=|\]|$)", re.DOTALL | re.MULTILINE)
_QUOTED = re.compile(r"'(?:\\.|[^'\\])*'" r'|"(?:\\.|[^"\\])*"', re.DOTALL)
# 12-19 digits, optionally grouped by spaces or dashes: card numbers, account numbers.
_DIGIT_RUN = re.compile(r"(?<![\w.])\d(?:[ -]?\d){11,18}(?![\w.])")


#: Set on an apix error whose quoted values are all processor or queue names (checked against
#: the name rule when raised): the stored message keeps them, so a topology error still says
#: which processor and queue it is about.
NAMES_ONLY = "apix_names_only"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
E = TypeVar("E", bound=BaseException)


def names_only(exc: E, *names: object) -> E:
    """``exc``, marked :data:`NAMES_ONLY` when every one of ``names`` is a plain name."""
    if all(isinstance(n, str) and _SAFE_NAME.fullmatch(n) for n in names):
        setattr(exc, NAMES_ONLY, True)
    return exc


def redact_text(
    text: str, limit: int = MAX_STORED_ERROR_CHARS, *, keep_quoted: bool = False
) -> str:
    """``text`` with input values removed: pydantic's ``input_value=...``, quoted values (kept
    with ``keep_quoted``: names only), long digit runs (card numbers), then the logs' secret
    redaction (bearer tokens, ``key=value`` secrets); control characters escaped; at most
    ``limit`` characters."""
    from apix_core.observability.logging import redact

    text = _PYDANTIC_INPUT.sub(f"input_value={REMOVED}", text)
    if not keep_quoted:
        text = _QUOTED.sub(lambda m: f"{m.group(0)[0]}{REMOVED}{m.group(0)[0]}", text)
    text = _DIGIT_RUN.sub(REMOVED, text)
    text = str(redact(text))
    return clip(escape_control(text), limit)


def redact_error_message(exc: BaseException, limit: int = MAX_STORED_ERROR_CHARS) -> str:
    """What the metadata store keeps of ``exc``: its type, a redacted message (see
    :func:`redact_text`; a pydantic error as its locations and error types only) and, when
    the innermost user frame is known, ``(at file.py:line)``. The logs redact the same way."""
    text = _pydantic_summary(exc)
    if text is None:
        try:
            text = str(exc)
        except Exception:  # a broken __str__ must not break the error path
            text = "<unprintable message>"
    where = _user_frame(exc)
    suffix = f" (at {where})" if where else ""
    keep = getattr(exc, NAMES_ONLY, False) is True
    return (
        redact_text(f"{type(exc).__name__}: {text}", limit - len(suffix), keep_quoted=keep) + suffix
    )


def _pydantic_summary(exc: BaseException) -> str | None:
    errors = getattr(exc, "errors", None)
    if not type(exc).__module__.startswith("pydantic_core") or not callable(errors):
        return None
    try:
        items = errors(include_url=False, include_input=False, include_context=False)
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['type']}" for e in items)
    except Exception:
        return None


_LIBRARY_PARTS = ("site-packages", "dist-packages", f"{os.sep}lib{os.sep}python")


def _user_frame(exc: BaseException) -> str | None:
    """``file.py:line`` of the innermost traceback frame outside apix and installed libraries."""
    import apix_core

    apix_dir = os.path.dirname(apix_core.__file__)
    found = None
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if (
            not filename.startswith(apix_dir)
            and not any(p in filename for p in _LIBRARY_PARTS)
            and not filename.startswith("<")
        ):
            found = f"{os.path.basename(filename)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


_DEPRECATED = {"ValidationError": ("PermanentError", PermanentError)}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        new, value = _DEPRECATED[name]
        warnings.warn(
            f"apix_core's {name} is now {new} (it clashed with pydantic's ValidationError)",
            DeprecationWarning,
            stacklevel=2,
        )
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PROGRAMMING_ERRORS",
    "ApixError",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "DeadLetterNotFoundError",
    "DeadlineExceededError",
    "EntityNotFoundError",
    "EnvelopeError",
    "ErrorCategory",
    "ErrorInfo",
    "FileOutputError",
    "InputTooLargeError",
    "InvalidCursorError",
    "InvalidFilePatternError",
    "InvalidMessageIdError",
    "InvalidTenantError",
    "JsonTooDeepError",
    "MalformedMessageError",
    "MessageTooLargeError",
    "MissingTenantError",
    "OutputSerializationError",
    "PayloadValidationError",
    "PermanentError",
    "ProcessingError",
    "ProcessorContextError",
    "ReadOnlyRouteError",
    "StateConflictError",
    "TenantRequiredError",
    "TokenRefreshError",
    "TokenRejectedError",
    "TopologyError",
    "TransientError",
    "TransportError",
    "UnsafeFilePathError",
    "UnsupportedEnvelopeVersionError",
    "UnsupportedOperationError",
    "classify",
    "is_transient",
    "redact_error_message",
    "redact_text",
]
