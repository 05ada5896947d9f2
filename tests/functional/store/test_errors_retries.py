"""Errors, retries and dead letters (DESIGN §6) on the real local transport.

Each test drives one worker iteration at a time (receive → ``app.process`` → ``app.settle``), so
every delivery and its outcome can be inspected.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import sqlalchemy as sa

from apix_core import (
    App,
    BackoffPolicy,
    Message,
    Outcome,
    OutcomeKind,
    PermanentError,
    ProcessingResult,
    ProcessorContext,
    ProcessorInterface,
    TransientError,
    tenant_context,
)
from apix_core.runtime import LocalRunner
from apix_core.store.models import queue_messages

TENANT = "acme"
FAST = BackoffPolicy(initial_seconds=0.01, max_seconds=0.02, redelivery_seconds=0.05)


async def deliver(app: App, queue: str, *, deadline: float | None = None) -> list[Outcome]:
    """One worker iteration: wait until a message is visible, handle it, settle it."""
    assert app.transport is not None
    # A liveness bound only: released messages come back after their (short) delay.
    give_up = time.monotonic() + 30
    while not (deliveries := await app.transport.receive(queue, 10)):
        assert time.monotonic() < give_up, f"nothing became visible on {queue!r}"
        await asyncio.sleep(0.01)
    outcomes = await app.process(queue, deliveries, deadline=deadline)
    await app.settle(queue, outcomes)
    return outcomes


async def error_rows(app: App, processor: str) -> list[Any]:
    assert app.store is not None
    with tenant_context(TENANT):
        return sorted(await app.store.errors.list(processor=processor), key=lambda r: r.attempt)


async def queue_total(app: App, queue: str) -> int:
    assert app.transport is not None
    return (await app.transport.depth(queue)).total


async def test_validation_error_is_dead_lettered_at_once(make_app) -> None:
    # GIVEN a processor that rejects its input with PermanentError, allowed 5 attempts
    app: App = make_app("errs", tenant_id=TENANT)
    calls: list[str] = []

    @app.processor("check", consumes="in", max_attempts=5, backoff=FAST)
    def check(message: Message) -> None:
        calls.append(message.message_id)
        raise PermanentError("sku 'X-1' does not exist")

    await app.start()
    mid = await app.send("in", {"sku": "X-1", "qty": 2}, tenant_id=TENANT)

    # WHEN it is delivered
    [outcome] = await deliver(app, "in")

    # THEN it is dead-lettered on the first delivery without a retry
    assert outcome.kind is OutcomeKind.DEAD_LETTER
    assert calls == [mid]
    assert await queue_total(app, "in") == 0
    assert app.transport is not None
    [dead] = await app.transport.list_dead_letters("in")
    assert dead.message_id == mid
    assert dead.error_code == "VALIDATION_ERROR"
    assert dead.error_category == "validation"
    # the stored message keeps the type and text, not the quoted value (redacted)
    assert "PermanentError: sku '***' does not exist" in dead.error_message
    assert "X-1" not in dead.error_message
    assert dead.processor == "check"
    assert dead.tenant_id == TENANT
    assert dead.attempts == 1
    original = Message.create_from_queue_data(dead.body)
    assert (original.message_id, original.payload) == (mid, {"sku": "X-1", "qty": 2})
    [err] = await error_rows(app, "check")
    assert (err.error_code, err.category, err.final) == ("VALIDATION_ERROR", "validation", True)
    with tenant_context(TENANT):
        assert await app.store.idempotency.is_completed("check", mid) is False  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(lambda n: TransientError(f"flaky {n}"), id="TransientError"),
        pytest.param(lambda n: ConnectionError(f"reset {n}"), id="ConnectionError"),
        pytest.param(
            lambda n: ProcessingResult.create_failure(f"busy {n}", "BUSY", can_retry=True),
            id="retryable-failure-result",
        ),
    ],
)
async def test_transient_failures_are_retried_within_one_delivery(make_app, failure) -> None:
    # GIVEN a processor that fails transiently twice (after buffering writes and an output),
    # then succeeds
    app: App = make_app("errs", tenant_id=TENANT)
    calls: list[int] = []

    @app.processor("flaky", consumes="in", produces=["out"], backoff=FAST)
    async def flaky(message: Message, ctx: ProcessorContext) -> Any:
        calls.append(message.attempt)
        ctx.persist_entity("o-1", "order", "shop", {"try": len(calls)})
        ctx.send("out", {"try": len(calls)})
        if len(calls) <= 2:
            result = failure(len(calls))
            if isinstance(result, ProcessingResult):
                return result
            raise result
        return None

    await app.start()
    await app.send("in", {"id": 1}, tenant_id=TENANT)

    # WHEN it is delivered once
    [outcome] = await deliver(app, "in")

    # THEN it completed within that delivery after three calls, and only the successful
    # call's writes and output were kept
    assert outcome.kind is OutcomeKind.COMPLETED
    assert calls == [1, 1, 1]
    assert await queue_total(app, "in") == 0
    assert await queue_total(app, "out") == 1
    assert await error_rows(app, "flaky") == []
    assert app.store is not None
    with tenant_context(TENANT):
        [entity] = await app.store.entities.list()
        assert len(await app.store.entities.versions(entity.id)) == 1


@pytest.mark.parametrize(
    ("exc", "code", "category", "calls_per_delivery"),
    [
        # Transient: 1 call + backoff.max_retries in-invocation retries per delivery.
        (TransientError("upstream down"), "TRANSIENT_ERROR", "transient", 3),
        # Unexpected errors are redelivered but not retried in-invocation.
        (RuntimeError("boom"), "UNEXPECTED_ERROR", "unexpected", 1),
    ],
    ids=["transient", "unexpected"],
)
async def test_failing_message_is_redelivered_with_growing_delay_then_dead_lettered(
    make_app, exc: Exception, code: str, category: str, calls_per_delivery: int
) -> None:
    # GIVEN a processor that always fails, allowed 3 deliveries
    app: App = make_app("errs", tenant_id=TENANT)
    calls: list[int] = []
    backoff = BackoffPolicy(
        max_retries=2, initial_seconds=0.01, max_seconds=0.01, redelivery_seconds=0.05
    )

    @app.processor("down", consumes="in", max_attempts=3, backoff=backoff)
    async def down(message: Message) -> None:
        calls.append(message.attempt)
        raise exc

    await app.start()
    mid = await app.send("in", {"id": 1}, tenant_id=TENANT)

    # WHEN it is delivered until it settles
    outcomes = [o for _ in range(3) for o in await deliver(app, "in")]

    # THEN the first two deliveries are released with a growing delay, the third dead-letters
    assert [o.kind for o in outcomes] == [
        OutcomeKind.RETRY,
        OutcomeKind.RETRY,
        OutcomeKind.DEAD_LETTER,
    ]
    assert [o.delay_seconds for o in outcomes[:2]] == [0.05, 0.1]
    assert calls == [1] * calls_per_delivery + [2] * calls_per_delivery + [3] * calls_per_delivery
    assert "gave up after 3 attempts" in (outcomes[2].error.message if outcomes[2].error else "")
    assert await queue_total(app, "in") == 0
    assert app.transport is not None
    [dead] = await app.transport.list_dead_letters("in")
    assert (dead.message_id, dead.attempts, dead.error_code, dead.error_category) == (
        mid,
        3,
        code,
        category,
    )
    assert "gave up after 3 attempts (max_attempts=3)" in dead.error_message

    # THEN every failed delivery left an error row; only the last is final
    errors = await error_rows(app, "down")
    assert [(e.attempt, e.final, e.error_code) for e in errors] == [
        (1, False, code),
        (2, False, code),
        (3, True, code),
    ]


async def test_can_retry_false_dead_letters_at_once(make_app) -> None:
    # GIVEN a class processor whose can_retry refuses every error
    app: App = make_app("errs", tenant_id=TENANT)
    calls: list[str] = []

    @app.processor("strict", consumes="in", max_attempts=5, backoff=FAST)
    class Strict(ProcessorInterface):
        def process(self, message: Message, context: ProcessorContext) -> ProcessingResult:
            calls.append(message.message_id)
            raise KeyError("customer_id")

        def can_retry(self, error: Exception) -> bool:
            return not isinstance(error, KeyError)

    await app.start()
    await app.send("in", {"id": 1}, tenant_id=TENANT)

    # WHEN it is delivered
    [outcome] = await deliver(app, "in")

    # THEN it is dead-lettered on the first delivery, after one call
    assert outcome.kind is OutcomeKind.DEAD_LETTER
    assert len(calls) == 1
    assert app.transport is not None
    [dead] = await app.transport.list_dead_letters("in")
    assert dead.error_code == "NON_RETRYABLE_ERROR"
    assert dead.attempts == 1
    assert dead.error_message.startswith("KeyError: ")  # the quoted key is redacted


async def test_non_retryable_failure_result_dead_letters_at_once(make_app) -> None:
    # GIVEN a processor that returns a failure result it marks as not retryable
    app: App = make_app("errs", tenant_id=TENANT)
    calls: list[str] = []

    @app.processor("lookup", consumes="in", max_attempts=5, backoff=FAST)
    def lookup(message: Message) -> ProcessingResult:
        calls.append(message.message_id)
        return ProcessingResult.create_failure("unknown sku X-9", "UNKNOWN_SKU", can_retry=False)

    await app.start()
    await app.send("in", {"sku": "X-9"}, tenant_id=TENANT)

    # WHEN it is delivered
    [outcome] = await deliver(app, "in")

    # THEN it is dead-lettered at once with the processor's code
    assert outcome.kind is OutcomeKind.DEAD_LETTER
    assert len(calls) == 1
    assert app.transport is not None
    [dead] = await app.transport.list_dead_letters("in")
    assert (dead.error_code, dead.error_category, dead.attempts) == ("UNKNOWN_SKU", "validation", 1)
    assert dead.error_message == "unknown sku X-9"
    [err] = await error_rows(app, "lookup")
    assert (err.error_code, err.final) == ("UNKNOWN_SKU", True)


async def test_retry_after_is_the_redelivery_delay(make_app) -> None:
    # GIVEN a processor that is rate limited and asks to come back in 30 seconds
    app: App = make_app("errs", tenant_id=TENANT)
    calls: list[str] = []

    @app.processor("limited", consumes="in", max_attempts=5, backoff=FAST)
    def limited(message: Message) -> ProcessingResult:
        calls.append(message.message_id)
        return ProcessingResult.create_failure(
            "429 from upstream", "RATE_LIMITED", can_retry=True, retry_after_seconds=30
        )

    await app.start()
    await app.send("in", {"id": 1}, tenant_id=TENANT)
    before = time.time()

    # WHEN it is delivered
    [outcome] = await deliver(app, "in")

    # THEN it is released for 30 s without in-invocation retries (they would ignore Retry-After)
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.delay_seconds == 30
    assert len(calls) == 1
    assert app.transport is not None
    assert await app.transport.receive("in", 10) == []
    depth = await app.transport.depth("in")
    assert (depth.visible, depth.in_flight, depth.delayed) == (0, 0, 1)
    # The message's tenant: on PostgreSQL the queue's tenant policy shows only its rows.
    async with app.transport.db.transaction(tenant_id=TENANT, write=False) as conn:  # type: ignore[attr-defined]
        visible_at = (await conn.execute(sa.select(queue_messages.c.visible_at))).scalar_one()
    assert visible_at >= before + 30
    [err] = await error_rows(app, "limited")
    assert (err.error_code, err.category, err.final) == ("RATE_LIMITED", "transient", False)


async def test_invocation_deadline_bounds_in_invocation_retries(make_app) -> None:
    # GIVEN a transiently failing processor and an invocation with almost no time left
    app: App = make_app("errs", tenant_id=TENANT)
    calls: list[str] = []

    @app.processor("flaky", consumes="in", backoff=FAST)
    def flaky(message: Message) -> None:
        calls.append(message.message_id)
        raise TransientError("try later")

    await app.start()
    await app.send("in", {"id": 1}, tenant_id=TENANT)

    # WHEN it is delivered with a deadline half a second away
    [outcome] = await deliver(app, "in", deadline=time.monotonic() + 0.5)

    # THEN it is not retried in-invocation but released for redelivery
    assert outcome.kind is OutcomeKind.RETRY
    assert len(calls) == 1


async def test_failure_in_a_batch_leaves_the_other_messages_alone(make_app) -> None:
    # GIVEN three queued messages, the middle one invalid
    app: App = make_app("errs", tenant_id=TENANT)

    @app.processor("check", consumes="in", produces=["out"], backoff=FAST)
    def check(message: Message, ctx: ProcessorContext) -> dict:
        sku = message.payload["sku"]
        ctx.persist_entity(sku, "item", "shop", message.payload)
        if sku == "bad":
            raise PermanentError("bad sku")
        return {"sku": sku}

    await app.start()
    for sku in ("a", "bad", "c"):
        await app.send("in", {"sku": sku}, tenant_id=TENANT)

    # WHEN they are delivered as one batch
    outcomes = await deliver(app, "in")

    # THEN only the invalid one is dead-lettered; the others' effects and outputs are kept
    assert [o.kind for o in outcomes] == [
        OutcomeKind.COMPLETED,
        OutcomeKind.DEAD_LETTER,
        OutcomeKind.COMPLETED,
    ]
    assert app.store is not None and app.transport is not None
    with tenant_context(TENANT):
        assert sorted(e.external_id for e in await app.store.entities.list()) == ["a", "c"]
    assert await queue_total(app, "out") == 2
    assert [d.error_code for d in await app.transport.list_dead_letters()] == ["VALIDATION_ERROR"]


async def test_replayed_dead_letter_completes_after_the_fix(make_app) -> None:
    # GIVEN a message dead-lettered by a processor with a bug
    app: App = make_app("errs", tenant_id=TENANT)
    fixed = {"yes": False}
    calls: list[str] = []

    @app.processor("convert", consumes="in", backoff=FAST)
    def convert(message: Message, ctx: ProcessorContext) -> None:
        calls.append(message.message_id)
        if not fixed["yes"]:
            raise PermanentError("unit 'lbs' not supported")
        ctx.persist_entity("w-1", "weight", "scale", message.payload)

    await app.start()
    mid = await app.send("in", {"value": 3, "unit": "lbs"}, tenant_id=TENANT)
    [failed] = await deliver(app, "in")
    assert failed.kind is OutcomeKind.DEAD_LETTER
    assert app.transport is not None and app.store is not None
    [dead] = await app.transport.list_dead_letters("in")

    # WHEN the processor is fixed, the dead letter replayed, and the queue drained
    fixed["yes"] = True
    assert await app.transport.replay_dead_letter(dead.id) == mid
    stats = await LocalRunner(app).run()

    # THEN the replayed message completed, once, under its original id
    assert stats.completed == 1
    assert calls == [mid, mid]
    with tenant_context(TENANT):
        assert await app.store.idempotency.is_completed("convert", mid)
        [entity] = await app.store.entities.list()
        assert len(await app.store.entities.versions(entity.id)) == 1
    assert (await app.transport.get_dead_letter(dead.id)).replayed_at is not None
    assert await queue_total(app, "in") == 0
