"""The typed errors of apix-core.

Every error has a stable ``code`` (recorded with processing errors and dead letters) and a
``retryable`` flag that drives the retry policy: validation errors are never retried, transient
errors are retried in-invocation and then redelivered, anything else is "unexpected" and is
redelivered until the processor's ``max_attempts``.
"""

from __future__ import annotations

from typing import ClassVar


class ApixError(Exception):
    """Base of every error raised by apix."""

    code: ClassVar[str] = "APIX_ERROR"
    retryable: ClassVar[bool] = False


class ConfigurationError(ApixError):
    """The app, a processor or the environment is configured wrongly."""

    code = "CONFIGURATION_ERROR"


class TopologyError(ConfigurationError):
    """A processor sent to a queue it did not declare in ``produces``."""

    code = "TOPOLOGY_ERROR"


class TenantRequiredError(ApixError):
    """A tenant-scoped call ran outside ``tenant_context``."""

    code = "TENANT_REQUIRED"


class ProcessingError(ApixError):
    """Base for errors a processor raises on purpose to steer retries."""

    code = "PROCESSING_ERROR"
    retryable = True


class ValidationError(ProcessingError):
    """The input can never succeed: not retried, dead-lettered at once."""

    code = "VALIDATION_ERROR"
    retryable = False


class TransientError(ProcessingError):
    """A temporary failure: retried with backoff in-invocation, then redelivered."""

    code = "TRANSIENT_ERROR"
    retryable = True


class ConcurrentDeliveryError(TransientError):
    """Another worker holds the same message; this delivery is released for redelivery."""

    code = "CONCURRENT_DELIVERY"


class DatabaseUnavailableError(TransientError):
    """The metadata store could not be reached within the configured timeout."""

    code = "DATABASE_UNAVAILABLE"


class EnvelopeError(ValidationError):
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


class PayloadValidationError(EnvelopeError):
    """The payload has the wrong type or fails the processor's payload model."""

    code = "INVALID_PAYLOAD"


class MessageTooLargeError(ValidationError):
    """A message exceeds the transport's size limit (counted in UTF-8 bytes)."""

    code = "MESSAGE_TOO_LARGE"

    def __init__(self, size: int, limit: int, destination: str) -> None:
        super().__init__(
            f"message of {size} bytes exceeds the {limit}-byte limit of {destination!r}"
        )
        self.size = size
        self.limit = limit
        self.destination = destination


class EntityNotFoundError(ApixError):
    """No entity with that id exists for the current tenant."""

    code = "ENTITY_NOT_FOUND"


class ProcessorContextError(ApixError):
    """A ``ProcessorContext`` method was used where it cannot work."""

    code = "CONTEXT_ERROR"


class TransportError(TransientError):
    """A queue transport failed to send, receive or acknowledge."""

    code = "TRANSPORT_ERROR"


class DeadLetterNotFoundError(ApixError):
    """No dead-letter record with that id."""

    code = "DEAD_LETTER_NOT_FOUND"


class InvalidTenantError(MissingTenantError, TenantRequiredError):
    """A tenant id that is not a safe identifier (see :data:`apix_core.tenancy.TENANT_ID_PATTERN`).

    A :class:`MissingTenantError` (so a message carrying one is dead-lettered as bad input) and a
    :class:`TenantRequiredError` (what ``tenant_context`` raises for an unusable tenant).
    """

    code = "INVALID_TENANT"


class FileOutputError(ValidationError):
    """A file output cannot be written safely: never retried."""

    code = "INVALID_FILE_OUTPUT"


class InvalidFilePatternError(FileOutputError):
    """A ``file_pattern`` uses an unknown placeholder or is not a valid format string."""

    code = "INVALID_FILE_PATTERN"


class UnsafeFilePathError(FileOutputError):
    """A file output's path resolves outside its destination directory."""

    code = "UNSAFE_FILE_PATH"
