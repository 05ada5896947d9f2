"""Settlement: outcomes turned into what the trigger needs.

:class:`~apix_core.processing.outcomes.Outcome` is the boundary. A settler per trigger applies
outcomes: locally (and for ``apix worker``) the :class:`ConsumerSettler` acks, releases with the
backoff delay, or dead-letters on a :class:`~apix_core.transport.base.Consumer`; the cloud
adapters answer Lambda with ``batchItemFailures``, raise or poison on Azure queues, complete /
abandon / dead-letter on Service Bus.

One message never stops the others: each outcome is settled on its own, a failed settlement is
logged, retried once and reported (:class:`SettleFailure`), and that delivery stays
unacknowledged, so the queue redelivers it after its visibility timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from apix_core.errors import redact_error_message
from apix_core.processing.outcomes import Outcome, OutcomeKind, dead_letter_info
from apix_core.transport.base import Consumer

R_co = TypeVar("R_co", covariant=True)

_log = logging.getLogger("apix.settle")


class Settler(Protocol[R_co]):
    """Applies the outcomes of one queue's deliveries; returns what its trigger expects."""

    async def settle(self, queue: str, outcomes: Sequence[Outcome]) -> R_co: ...


@dataclass(frozen=True, slots=True)
class SettleFailure:
    """A delivery that could not be settled (twice): it stays in flight and is redelivered."""

    outcome: Outcome
    #: ``ack``, ``release`` or ``dead_letter``.
    action: str
    #: The redacted error of the last attempt.
    error: str


class ConsumerSettler:
    """Receive-then-ack: the local runtime's settlement on a polling consumer.

    :meth:`settle` returns the deliveries it could not settle (empty when all went well)."""

    def __init__(self, consumer: Consumer, processor: str | None) -> None:
        self.consumer = consumer
        self.processor = processor

    async def settle(self, queue: str, outcomes: Sequence[Outcome]) -> list[SettleFailure]:
        failures: list[SettleFailure] = []
        done: list[Outcome] = []
        for o in outcomes:
            if o.kind is OutcomeKind.RETRY:
                await self._twice(failures, o, "release", self._release, queue)
            elif o.kind is OutcomeKind.DEAD_LETTER:
                await self._twice(failures, o, "dead_letter", self._dead_letter, queue)
            else:
                done.append(o)
        if done:
            try:
                await self.consumer.ack(queue, [o.delivery for o in done])
            except Exception as exc:
                # One bad receipt must not keep the others: ack them one by one.
                _log.warning(
                    "batch ack failed; acking one by one",
                    extra={"queue": queue, "error": redact_error_message(exc)},
                )
                for o in done:
                    await self._twice(failures, o, "ack", self._ack, queue)
        return failures

    async def _ack(self, queue: str, o: Outcome) -> None:
        await self.consumer.ack(queue, [o.delivery])

    async def _release(self, queue: str, o: Outcome) -> None:
        await self.consumer.release(queue, o.delivery, o.delay_seconds)

    async def _dead_letter(self, queue: str, o: Outcome) -> None:
        await self.consumer.dead_letter(queue, o.delivery, dead_letter_info(o, self.processor))

    async def _twice(
        self,
        failures: list[SettleFailure],
        outcome: Outcome,
        action: str,
        run: Callable[[str, Outcome], Awaitable[None]],
        queue: str,
    ) -> None:
        """Run ``run``; on failure log and retry once; on a second failure report it."""
        for attempt in (1, 2):
            try:
                await run(queue, outcome)
                return
            except Exception as exc:
                error = redact_error_message(exc)
                _log.log(
                    logging.WARNING if attempt == 1 else logging.ERROR,
                    "could not %s a delivery%s",
                    action.replace("_", "-"),
                    "; retrying once" if attempt == 1 else "; it stays in flight for redelivery",
                    extra={
                        "message_id": outcome.delivery.message_id[:255],
                        "error_code": outcome.error.code if outcome.error else None,
                        "error": error,
                    },
                )
                if attempt == 2:
                    failures.append(SettleFailure(outcome, action, error))
