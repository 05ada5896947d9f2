"""Typed errors of the Lambda adapter (``ApixError`` subclasses, each with a stable ``code``)."""

from __future__ import annotations

from apix_core.errors import ApixError


class UnsupportedEventError(ApixError):
    """The Lambda event is of a kind this processor has no trigger for (or of no known kind)."""

    code = "UNSUPPORTED_EVENT"


class MalformedEventError(ApixError):
    """A Lambda event (or one record of it) lacks fields AWS always sends, or has bad values."""

    code = "MALFORMED_EVENT"


class InvocationRetryError(ApixError):
    """A single-message invocation (schedule, custom EventBridge event) ended retryable: raised
    so Lambda's asynchronous retries invoke it again (the message id dedups a re-run)."""

    code = "INVOCATION_RETRY"
    retryable = True


__all__ = ["InvocationRetryError", "MalformedEventError", "UnsupportedEventError"]
