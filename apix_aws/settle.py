"""Settlement of an SQS-triggered Lambda batch: the ``batchItemFailures`` partial response.

* COMPLETED / DUPLICATE: not reported (Lambda deletes the message).
* RETRY: the record's visibility timeout is set to the backoff delay (``ChangeMessageVisibility``;
  a failure to do so is logged, never raised), and the record is reported for redelivery.
* DEAD_LETTER: sent to the consumed queue's dead-letter queue with its error as message
  attributes (``SqsTransport.dead_letter``) and NOT reported; when that send fails the record is
  reported instead, so SQS's own redrive policy moves it after ``maxReceiveCount``.
* FIFO queues: from a message group's first reported record on, every later record of that
  group is reported too (the handler does not process them); other groups go on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from apix_core.errors import redact_error_message
from apix_core.processing.outcomes import Outcome, OutcomeKind, dead_letter_info

if TYPE_CHECKING:
    from apix_aws.events.sqs import SqsRecord
    from apix_aws.transport.sqs import SqsTransport

_log = logging.getLogger("apix.aws.settle")


def batch_response(item_ids: Sequence[str]) -> dict[str, Any]:
    """The partial batch response reporting ``item_ids`` (empty: every record succeeded)."""
    return {"batchItemFailures": [{"itemIdentifier": i} for i in dict.fromkeys(item_ids)]}


class SqsSettler:
    """Turns one batch's outcomes into the records Lambda must redeliver."""

    def __init__(self, transport: SqsTransport, processor: str | None) -> None:
        self.transport = transport
        self.processor = processor

    async def settle(
        self, queue: str, records: Sequence[SqsRecord], outcomes: Sequence[Outcome]
    ) -> list[str]:
        """The ``messageId`` of every record to report; ``outcomes`` parallel ``records``."""
        failed: list[str] = []
        for record, outcome in zip(records, outcomes, strict=True):
            if outcome.kind is OutcomeKind.RETRY:
                await self._release(queue, outcome)
                failed.append(record.item_id)
            elif outcome.kind is OutcomeKind.DEAD_LETTER and not await self._dead_letter(
                queue, outcome
            ):
                failed.append(record.item_id)
        return failed

    async def _release(self, queue: str, outcome: Outcome) -> None:
        if not outcome.delivery.receipt:
            return
        try:
            await self.transport.release(queue, outcome.delivery, outcome.delay_seconds)
        except Exception as exc:
            # The record is reported anyway: it comes back after the queue's own timeout.
            _log.warning(
                "could not change the visibility of a retried SQS message",
                extra={
                    "queue": queue,
                    "message_id": outcome.delivery.message_id,
                    "error": redact_error_message(exc),
                },
            )

    async def _dead_letter(self, queue: str, outcome: Outcome) -> bool:
        try:
            await self.transport.dead_letter(
                queue, outcome.delivery, dead_letter_info(outcome, self.processor)
            )
        except Exception as exc:
            _log.error(
                "could not send a message to its dead-letter queue; reporting it for redelivery",
                extra={
                    "queue": queue,
                    "message_id": outcome.delivery.message_id,
                    "error": redact_error_message(exc),
                },
            )
            return False
        return True


__all__ = ["SqsSettler", "batch_response"]
