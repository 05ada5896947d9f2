"""A batch's deadline (e.g. a Lambda's remaining time): messages not started before it are
not run, come back as RETRY (DEADLINE_EXCEEDED, no delay) and keep no claim, so their
redelivery is processed, not taken for a duplicate."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from apix_core import App, Message, OutcomeKind, ProcessorContext


def _app(make_app: Any, ran: list[int], persistence: bool) -> App:
    app: App = make_app("deadline")

    @app.processor("slow", consumes="in", enable_persistence=persistence)
    async def slow(message: Message, ctx: ProcessorContext) -> None:
        ran.append(message.payload["n"])
        await asyncio.sleep(0.3)

    return app


@pytest.mark.parametrize("persistence", [True, False])
async def test_messages_after_the_deadline_are_not_run_and_come_back(
    make_app: Any, persistence: bool
) -> None:
    # GIVEN five messages of 0.3 s each and a deadline 0.45 s away
    ran: list[int] = []
    app = _app(make_app, ran, persistence)
    await app.start()
    messages = [Message(tenant_id="acme", payload={"n": n}) for n in range(5)]
    handler = app.handler("slow")

    # WHEN the batch is handled
    started = time.monotonic()
    outcomes = await handler.handle_batch(messages, deadline=started + 0.45)
    elapsed = time.monotonic() - started

    # THEN the first two ran; the rest are RETRY (DEADLINE_EXCEEDED, at once), not run
    assert ran == [0, 1]
    assert [o.kind for o in outcomes] == [OutcomeKind.COMPLETED] * 2 + [OutcomeKind.RETRY] * 3
    for late in outcomes[2:]:
        assert late.error is not None and late.error.code == "DEADLINE_EXCEEDED"
        assert late.error.retryable and late.delay_seconds == 0
    assert elapsed < 1.2  # all five would take 1.5 s

    # WHEN the batch is delivered again without a deadline
    again = await handler.handle_batch(messages)

    # THEN the late ones run now (no claim was kept); the others are duplicates (with a store)
    assert ran == ([0, 1, 2, 3, 4] if persistence else [0, 1, 0, 1, 2, 3, 4])
    done = OutcomeKind.DUPLICATE if persistence else OutcomeKind.COMPLETED
    assert [o.kind for o in again] == [done] * 2 + [OutcomeKind.COMPLETED] * 3
