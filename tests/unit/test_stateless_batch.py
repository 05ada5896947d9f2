"""A batch without persistence runs in one pass: delivery order, each message in its tenant's
scope, malformed bodies dead-lettered in place, and a COMPLETED outcome's result made on read."""

from __future__ import annotations

import asyncio
from typing import Any

from apix_core import Message, ProcessingResult, ProcessorContext
from apix_core.processing.handler import create_processor_handler
from apix_core.processing.outcomes import Outcome, OutcomeKind
from apix_core.tenancy import current_tenant
from apix_core.transport.base import ReceivedMessage


def _delivery(i: int, body: str, tenant: str | None = None) -> ReceivedMessage:
    attributes = {"tenant_id": tenant} if tenant else {}
    return ReceivedMessage("orders", f"m-{i}", body, attributes=attributes)


def test_mixed_tenants_run_in_delivery_order_each_in_its_scope() -> None:
    # GIVEN a stateless processor that records the tenant in scope for each message
    seen: list[tuple[Any, str | None]] = []

    async def record(message: Message, ctx: ProcessorContext) -> None:
        seen.append((message.payload["n"], current_tenant()))

    handler = create_processor_handler(record, name="record", default_tenant="acme")
    envelope_b = Message(tenant_id="beta", payload={"n": 2}).to_json()
    deliveries = [
        _delivery(0, '{"n": 0}'),
        _delivery(1, '{"n": 1}', tenant="beta"),
        _delivery(2, envelope_b),
        _delivery(3, "not json"),
        _delivery(4, '{"n": 4}'),
    ]

    # WHEN the batch is handled
    outcomes = asyncio.run(handler.handle_batch(deliveries))

    # THEN every delivery has its outcome, in order; the malformed one is dead-lettered in
    # place; each message ran in its own tenant's scope, in delivery order; no scope is left
    assert [o.delivery.message_id for o in outcomes] == [d.message_id for d in deliveries]
    assert [o.kind for o in outcomes] == [
        OutcomeKind.COMPLETED,
        OutcomeKind.COMPLETED,
        OutcomeKind.COMPLETED,
        OutcomeKind.DEAD_LETTER,
        OutcomeKind.COMPLETED,
    ]
    assert outcomes[3].error is not None and outcomes[3].error.code == "MALFORMED_MESSAGE"
    assert seen == [(0, "acme"), (1, "beta"), (2, "beta"), (4, "acme")]
    assert current_tenant() is None


def test_a_completed_outcome_has_a_result_even_when_the_processor_returned_none() -> None:
    # GIVEN one processor that returns None and one that returns its own result
    async def nothing(message: Message, ctx: ProcessorContext) -> None:
        return None

    async def something(message: Message, ctx: ProcessorContext) -> ProcessingResult:
        return ProcessingResult(processing_metadata={"k": "v"})

    body = '{"n": 1}'
    none_handler = create_processor_handler(nothing, name="nothing", default_tenant="acme")
    own_handler = create_processor_handler(something, name="something", default_tenant="acme")

    # WHEN each handles a message
    [none_outcome] = asyncio.run(none_handler.handle_batch([_delivery(1, body)]))
    [own_outcome] = asyncio.run(own_handler.handle_batch([_delivery(1, body)]))

    # THEN both completed outcomes have a successful result; the empty one is made once
    assert none_outcome.kind is OutcomeKind.COMPLETED
    result = none_outcome.result
    assert isinstance(result, ProcessingResult) and result.success
    assert none_outcome.result is result
    assert own_outcome.result is not None
    assert own_outcome.result.processing_metadata == {"k": "v"}


def test_outcomes_compare_by_value_and_only_completed_ones_get_a_result() -> None:
    # GIVEN outcomes built as the handler and adapters build them
    delivery = _delivery(1, "{}")
    retry = Outcome(OutcomeKind.RETRY, delivery, delay_seconds=2.0)

    # WHEN they are compared, read and printed
    # THEN equal fields are equal outcomes, a RETRY has no result, and repr names the fields
    assert Outcome(OutcomeKind.COMPLETED, delivery) == Outcome(OutcomeKind.COMPLETED, delivery)
    assert Outcome(OutcomeKind.COMPLETED, delivery) != retry
    assert retry.result is None and not retry.settled
    assert "delay_seconds=2.0" in repr(retry)
