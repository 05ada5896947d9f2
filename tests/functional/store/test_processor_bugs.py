"""A bug in a processor (TypeError, AttributeError...) is dead-lettered at once as
PROCESSOR_BUG, its traceback logged once and trimmed to the user's frames."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from apix_core import App, Message, OutcomeKind, ProcessorContext, ProcessorInterface
from apix_core.result import ProcessingResult
from apix_core.testing import TestApp


def buggy_helper(order: dict[str, Any]) -> int:
    return order["qty"] + "1"  # type: ignore[no-any-return, operator]  # the bug: int + str


class Lenient(ProcessorInterface):
    """A processor that asks for its TypeErrors to be retried anyway."""

    def process(self, message: Message, context: ProcessorContext) -> ProcessingResult:
        buggy_helper(message.payload)
        return ProcessingResult.create_success()

    def can_retry(self, error: Exception) -> bool:
        return True


def build() -> App:
    app = App("bugs", tenant_id="acme")

    @app.processor("typo", consumes="t")
    async def typo(message: Message, ctx: ProcessorContext) -> None:
        buggy_helper(message.payload)

    @app.processor("attr", consumes="a")
    def attr(message: Message) -> None:
        message.paylaod  # type: ignore[attr-defined]  # noqa: B018

    @app.processor("ordinary", consumes="o")
    async def ordinary(message: Message) -> None:
        raise RuntimeError("the partner API said no")

    app.processor("lenient", consumes="l")(Lenient())
    return app


@pytest.mark.parametrize("queue", ["t", "a"])
async def test_a_programming_error_is_dead_lettered_at_once(
    database_url: str, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with TestApp(build(), database_url=database_url) as t:
        # WHEN a processor with a bug runs
        with caplog.at_level(logging.WARNING, logger="apix"):
            outcome = await t.deliver(queue, {"qty": 1})

        # THEN it is dead-lettered on the first attempt with a code that says "bug"
        assert outcome.kind is OutcomeKind.DEAD_LETTER
        assert outcome.error is not None
        assert outcome.error.code == "PROCESSOR_BUG"
        assert outcome.error.category.value == "unexpected"
        # AND its traceback was logged once, with the user's frames and none of apix's
        tracebacks = [r for r in caplog.records if r.exc_info]
        assert len(tracebacks) == 1
        text = logging.Formatter().formatException(tracebacks[0].exc_info)  # type: ignore[arg-type]
        assert "test_processor_bugs.py" in text
        assert "apix_core" not in text


async def test_other_errors_and_a_lenient_can_retry_are_still_retried(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with TestApp(build(), database_url=database_url) as t:
        # WHEN an ordinary failure, and a bug in a processor whose can_retry says yes, occur
        with caplog.at_level(logging.WARNING, logger="apix"):
            ordinary = [await t.deliver("o", {}, message_id="m-o", attempt=n) for n in (1, 2, 3)]
            lenient = await t.deliver("l", {"qty": 1})

        # THEN both are released for redelivery
        assert [o.kind for o in ordinary] == [OutcomeKind.RETRY] * 3
        assert ordinary[0].error is not None and ordinary[0].error.code == "UNEXPECTED_ERROR"
        assert lenient.kind is OutcomeKind.RETRY
        assert lenient.error is not None and lenient.error.code == "UNEXPECTED_ERROR"
        # AND the ordinary failure's traceback was logged once for its three attempts
        ordinary_logs = [r for r in caplog.records if r.name == "apix.processor.ordinary"]
        assert len(ordinary_logs) == 3
        assert [bool(r.exc_info) for r in ordinary_logs] == [True, False, False]
