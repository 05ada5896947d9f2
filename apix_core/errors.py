"""Error classification: validation (never retried), transient (retried), unexpected."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy.exc

from apix_core.exceptions import ApixError, ConfigurationError
from apix_core.processor import ProcessorInterface


class ErrorCategory(StrEnum):
    VALIDATION = "validation"
    TRANSIENT = "transient"
    UNEXPECTED = "unexpected"


@dataclass(frozen=True)
class ErrorInfo:
    code: str
    category: ErrorCategory
    message: str
    retryable: bool

    @classmethod
    def of(cls, exc: BaseException, processor: ProcessorInterface | None = None) -> ErrorInfo:
        return classify(exc, processor)


_TRANSIENT_BUILTINS = (ConnectionError, TimeoutError, asyncio.TimeoutError)


def classify(exc: BaseException, processor: ProcessorInterface | None = None) -> ErrorInfo:
    message = f"{type(exc).__name__}: {exc}"[:4000]
    if isinstance(exc, ApixError):
        if isinstance(exc, ConfigurationError) or not exc.retryable:
            category = (
                ErrorCategory.UNEXPECTED
                if isinstance(exc, ConfigurationError)
                else ErrorCategory.VALIDATION
            )
            return ErrorInfo(exc.code, category, message, retryable=False)
        return ErrorInfo(exc.code, ErrorCategory.TRANSIENT, message, retryable=True)
    retryable = True
    if processor is not None and isinstance(exc, Exception):
        retryable = bool(processor.can_retry(exc))
    if isinstance(exc, (*_TRANSIENT_BUILTINS, sqlalchemy.exc.OperationalError)):
        return ErrorInfo("TRANSIENT_ERROR", ErrorCategory.TRANSIENT, message, retryable)
    return ErrorInfo(
        "UNEXPECTED_ERROR" if retryable else "NON_RETRYABLE_ERROR",
        ErrorCategory.UNEXPECTED,
        message,
        retryable,
    )
