"""Retrying one request: tenacity, exponential backoff with jitter, ``Retry-After`` honoured.

The client raises :class:`RetryableFailure` for what may succeed later (a status in
``retry_statuses``, a timeout, a connection error). After the last attempt — or when the
server asks to wait longer than ``max_retry_after`` — the caller gets one
:class:`ExtractRequestError` naming the URL, the attempts and what happened; its
``retry_after`` lets a processor's redelivery wait as long as the server asked.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)

from apix_core.extract.config import RetryConfig
from apix_core.extract.exceptions import ExtractRequestError

T = TypeVar("T")


class RetryableFailure(Exception):
    """One failed attempt that may succeed later; ``what`` says what happened."""

    def __init__(
        self, what: str, *, url: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(what)
        self.what = what
        self.url = url
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


class _Wait:
    """Retry-After when the server gave one, else exponential backoff with jitter."""

    def __init__(self, config: RetryConfig) -> None:
        self.config = config

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if (
            isinstance(exc, RetryableFailure)
            and exc.retry_after is not None
            and self.config.respect_retry_after
        ):
            return exc.retry_after
        config = self.config
        exponential = config.initial_backoff * config.multiplier ** (state.attempt_number - 1)
        return min(config.max_backoff, exponential) + random.uniform(0, config.jitter)


class Retrier:
    """Runs an attempt function under one extraction's retry policy."""

    def __init__(self, config: RetryConfig) -> None:
        self.config = config
        self._template = AsyncRetrying(
            stop=stop_after_attempt(config.max_attempts),
            wait=_Wait(config),
            retry=retry_if_exception_type(RetryableFailure),
            before_sleep=self._check_retry_after,
            reraise=True,
        )
        #: Retries performed (observability; tests read it).
        self.retries = 0

    def _check_retry_after(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if (
            isinstance(exc, RetryableFailure)
            and exc.retry_after is not None
            and exc.retry_after > self.config.max_retry_after
        ):
            # Longer than we may wait here: give up now and hand the delay to the caller.
            raise _too_long(exc, state.attempt_number, self.config.max_retry_after)
        self.retries += 1

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        # Fast path: most requests succeed at once, and a tenacity loop costs tens of µs.
        try:
            return await attempt()
        except RetryableFailure as exc:
            if self.config.max_attempts == 1:
                raise self._final(exc, 1) from None
            first: RetryableFailure | None = exc

        async def replay_then_attempt() -> T:
            # Tenacity sees the failure above as its attempt 1 (and waits after it).
            nonlocal first
            if first is not None:
                failure, first = first, None
                raise failure
            return await attempt()

        try:
            async for retry in self._template.copy():
                with retry:
                    return await replay_then_attempt()
        except RetryableFailure as exc:
            raise self._final(exc, self.config.max_attempts) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    @staticmethod
    def _final(exc: RetryableFailure, attempts: int) -> ExtractRequestError:
        return ExtractRequestError(
            f"request to {exc.url} failed after {attempts} attempt"
            f"{'s' if attempts != 1 else ''}: {exc.what}",
            url=exc.url,
            status=exc.status,
            attempts=attempts,
            retry_after=exc.retry_after,
        )


def _too_long(exc: RetryableFailure, attempts: int, limit: float) -> ExtractRequestError:
    return ExtractRequestError(
        f"request to {exc.url} failed: {exc.what}; the server asks to wait "
        f"{exc.retry_after:.0f}s, more than max_retry_after ({limit:.0f}s)",
        url=exc.url,
        status=exc.status,
        attempts=attempts,
        retry_after=exc.retry_after,
    )


__all__ = ["Retrier", "RetryableFailure", "parse_retry_after"]
