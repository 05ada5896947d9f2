"""Outcomes: the boundary between processing and settlement.

Every delivery ends as one :class:`Outcome`; a settler (``processing/settle.py``, or a cloud
adapter's) turns outcomes into what its trigger needs. The retry policy that picks RETRY or
DEAD_LETTER for a failure lives here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from apix_core.constants import TENANT_ATTRIBUTE
from apix_core.errors import MAX_STORED_ERROR_CHARS, ErrorInfo
from apix_core.storable import column_text, optional_column_text
from apix_core.transport.base import DeadLetterInfo

if TYPE_CHECKING:
    from apix_core.message import Message
    from apix_core.processor import BackoffPolicy
    from apix_core.result import ProcessingResult
    from apix_core.transport.base import ReceivedMessage

#: The longest backoff delay apix picks itself (SQS's DelaySeconds maximum).
MAX_REDELIVERY_SECONDS = 900.0


class OutcomeKind(StrEnum):
    COMPLETED = "completed"
    #: Already processed earlier; unsent outputs were re-dispatched.
    DUPLICATE = "duplicate"
    #: Not done: release for redelivery after ``delay_seconds``.
    RETRY = "retry"
    #: Never retry: move to the dead-letter destination with ``error``.
    DEAD_LETTER = "dead_letter"


class Outcome:
    """How one delivery ended: its kind, the parsed message, the error or the result."""

    # A plain slotted class, not a dataclass: ``result`` is made on first read (below).
    __slots__ = ("_result", "delay_seconds", "delivery", "error", "kind", "message")

    def __init__(
        self,
        kind: OutcomeKind,
        delivery: ReceivedMessage,
        message: Message | None = None,
        error: ErrorInfo | None = None,
        delay_seconds: float = 0.0,
        result: ProcessingResult | None = None,
    ) -> None:
        self.kind = kind
        self.delivery = delivery
        self.message = message
        self.error = error
        self.delay_seconds = delay_seconds
        self._result = result

    @property
    def result(self) -> ProcessingResult | None:
        """What the processor returned; a COMPLETED outcome always has one (an empty
        :class:`ProcessingResult` when the processor returned None, made when first read:
        most outcomes are settled without anyone reading it)."""
        result = self._result
        if result is None and self.kind is OutcomeKind.COMPLETED:
            from apix_core.result import ProcessingResult

            result = self._result = ProcessingResult()
        return result

    @result.setter
    def result(self, value: ProcessingResult | None) -> None:
        self._result = value

    @property
    def settled(self) -> bool:
        """True when the delivery may be deleted from its queue (after dead-lettering if so)."""
        return self.kind is not OutcomeKind.RETRY

    def _fields(self) -> tuple[object, ...]:
        return (
            self.kind,
            self.delivery,
            self.message,
            self.error,
            self.delay_seconds,
            self.result,
        )

    def __eq__(self, other: object) -> bool:
        if type(other) is not Outcome:
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return (
            f"Outcome(kind={self.kind!r}, delivery={self.delivery!r}, message={self.message!r}, "
            f"error={self.error!r}, delay_seconds={self.delay_seconds!r}, "
            f"result={self.result!r})"
        )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed delivery is redelivered, and after how long."""

    max_attempts: int
    #: First redelivery delay; doubles per attempt up to :data:`MAX_REDELIVERY_SECONDS`.
    redelivery_seconds: float
    #: Upper bound on every delay, ``retry_after`` included (fast retries in development).
    cap: float | None = None

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            # The other side's wish; adapters cap what they must.
            wanted = max(0.0, retry_after)
        else:
            wanted = float(
                min(self.redelivery_seconds * (2 ** max(0, attempt - 1)), MAX_REDELIVERY_SECONDS)
            )
        return wanted if self.cap is None else min(wanted, self.cap)

    def outcome(
        self,
        delivery: ReceivedMessage,
        message: Message,
        info: ErrorInfo,
        retry_after: float | None = None,
    ) -> Outcome:
        """RETRY while the failure is retryable and attempts remain, else DEAD_LETTER."""
        attempt = message.attempt
        if retry_after is None:
            retry_after = info.retry_after
        if info.retryable and attempt < self.max_attempts:
            return Outcome(
                OutcomeKind.RETRY,
                delivery,
                message,
                error=info,
                delay_seconds=self.delay(attempt, retry_after),
            )
        if info.retryable:
            info = ErrorInfo(
                info.code,
                info.category,
                f"gave up after {attempt} attempts (max_attempts={self.max_attempts}): "
                f"{info.message}",
                retryable=False,
            )
        return Outcome(OutcomeKind.DEAD_LETTER, delivery, message, error=info)


def fast_backoff(backoff: BackoffPolicy, cap: float) -> BackoffPolicy:
    """``backoff`` with every delay at most ``cap`` seconds (development mode, never the
    default): one bad message then costs a fraction of a second, not the production backoff."""
    from dataclasses import replace

    return replace(
        backoff,
        initial_seconds=min(backoff.initial_seconds, cap / 4),
        max_seconds=min(backoff.max_seconds, cap),
        redelivery_seconds=min(backoff.redelivery_seconds, cap),
        budget_seconds=min(backoff.budget_seconds, cap * max(1, backoff.max_retries)),
    )


def dead_letter_info(outcome: Outcome, processor: str | None) -> DeadLetterInfo:
    """What a dead-letter destination records of a DEAD_LETTER outcome.

    Writable for any input: the tenant of a rejected message comes from its (foreign, untrusted)
    ``tenant_id`` attribute, so it and every other value are escaped and clipped to their
    columns (``store/models.dead_letters``); the message is already redacted (``ErrorInfo``)."""
    error = outcome.error
    tenant: object = (
        outcome.message.tenant_id
        if outcome.message
        else outcome.delivery.attributes.get(TENANT_ATTRIBUTE)
    )
    attempts = outcome.delivery.receive_count
    return DeadLetterInfo(
        error_code=column_text(error.code, 100) if error else "UNKNOWN",
        error_category=column_text(error.category.value, 20) if error else "unexpected",
        error_message=column_text(error.message, MAX_STORED_ERROR_CHARS) if error else "",
        attempts=attempts if type(attempts) is int and 0 <= attempts < 2**31 else 0,
        processor=optional_column_text(processor, 100),
        tenant_id=optional_column_text(tenant, 64),
    )
