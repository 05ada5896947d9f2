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
from apix_core.errors import ErrorInfo
from apix_core.transport.base import DeadLetterInfo

if TYPE_CHECKING:
    from apix_core.message import Message
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


@dataclass(slots=True)
class Outcome:
    kind: OutcomeKind
    delivery: ReceivedMessage
    message: Message | None = None
    error: ErrorInfo | None = None
    delay_seconds: float = 0.0
    result: ProcessingResult | None = None

    @property
    def settled(self) -> bool:
        """True when the delivery may be deleted from its queue (after dead-lettering if so)."""
        return self.kind is not OutcomeKind.RETRY


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed delivery is redelivered, and after how long."""

    max_attempts: int
    #: First redelivery delay; doubles per attempt up to :data:`MAX_REDELIVERY_SECONDS`.
    redelivery_seconds: float

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return max(0.0, retry_after)  # the other side's wish; adapters cap what they must
        return float(
            min(self.redelivery_seconds * (2 ** max(0, attempt - 1)), MAX_REDELIVERY_SECONDS)
        )

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


def dead_letter_info(outcome: Outcome, processor: str | None) -> DeadLetterInfo:
    """What a dead-letter destination records of a DEAD_LETTER outcome."""
    error = outcome.error
    return DeadLetterInfo(
        error_code=error.code if error else "UNKNOWN",
        error_category=error.category.value if error else "unexpected",
        error_message=error.message if error else "",
        attempts=outcome.delivery.receive_count,
        processor=processor,
        tenant_id=outcome.message.tenant_id
        if outcome.message
        else outcome.delivery.attributes.get(TENANT_ATTRIBUTE),
    )
