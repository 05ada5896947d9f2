"""Settlement: outcomes turned into what the trigger needs.

:class:`~apix_core.processing.outcomes.Outcome` is the boundary. A settler per trigger applies
outcomes: locally (and for ``apix worker``) the :class:`ConsumerSettler` acks, releases with the
backoff delay, or dead-letters on a :class:`~apix_core.transport.base.Consumer`; the cloud
adapters answer Lambda with ``batchItemFailures``, raise or poison on Azure queues, complete /
abandon / dead-letter on Service Bus.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from apix_core.processing.outcomes import Outcome, OutcomeKind, dead_letter_info
from apix_core.transport.base import Consumer, ReceivedMessage

R_co = TypeVar("R_co", covariant=True)


class Settler(Protocol[R_co]):
    """Applies the outcomes of one queue's deliveries; returns what its trigger expects."""

    async def settle(self, queue: str, outcomes: Sequence[Outcome]) -> R_co: ...


class ConsumerSettler:
    """Receive-then-ack: the local runtime's settlement on a polling consumer."""

    def __init__(self, consumer: Consumer, processor: str | None) -> None:
        self.consumer = consumer
        self.processor = processor

    async def settle(self, queue: str, outcomes: Sequence[Outcome]) -> None:
        done: list[ReceivedMessage] = []
        for o in outcomes:
            if o.kind is OutcomeKind.RETRY:
                await self.consumer.release(queue, o.delivery, o.delay_seconds)
            elif o.kind is OutcomeKind.DEAD_LETTER:
                await self.consumer.dead_letter(
                    queue, o.delivery, dead_letter_info(o, self.processor)
                )
            else:
                done.append(o.delivery)
        await self.consumer.ack(queue, done)
