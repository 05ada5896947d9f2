"""Outputs and entity attributes are serialised by one rule; no JSON form = a dead letter."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from apix_core import App, Message, OutcomeKind, ProcessorContext
from apix_core.outputs import FileOutputHandler
from apix_core.result import ProcessingResult
from apix_core.testing import TestApp

WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def build(out_dir: Path) -> App:
    app = App("serialise", tenant_id="acme")

    @app.processor("emit", consumes="in", produces=["out"])
    async def emit(message: Message, ctx: ProcessorContext) -> dict[str, Any]:
        ctx.persist_entity("E-1", "order", "test", {"at": WHEN}, placed_at=WHEN, tags={"b", "a"})
        return {"at": WHEN, "price": Decimal("9.50"), "tags": {"b", "a"}, "raw": b"ok"}

    @app.processor("broken", consumes="broken-in", produces=["out"])
    async def broken(message: Message, ctx: ProcessorContext) -> dict[str, Any]:
        return {"items": [1, 2, {"price": object()}]}

    @app.processor("bad-attr", consumes="bad-attr-in")
    async def bad_attr(message: Message, ctx: ProcessorContext) -> None:
        ctx.persist_entity("E-2", "order", "test", {}, owner=object())

    @app.processor("to-file", consumes="file-in")
    async def to_file(message: Message, ctx: ProcessorContext) -> ProcessingResult:
        handler = FileOutputHandler(str(out_dir), payload={"when": WHEN, "bad": [object()]})
        return ProcessingResult.create_success(output_handlers=[handler])

    return app


async def test_non_json_values_reach_the_next_queue_as_iso_and_numbers(
    tmp_path: Path, database_url: str
) -> None:
    async with TestApp(build(tmp_path / "files"), database_url=database_url) as t:
        # WHEN a processor returns datetimes, decimals, sets and bytes
        outcome = await t.deliver("in", {"n": 1})

        # THEN the next stage reads them in their documented JSON forms
        assert outcome.kind is OutcomeKind.COMPLETED
        [out] = await t.messages("out")
        assert out.payload == {
            "at": "2024-05-01T12:00:00+00:00",
            "price": 9.5,
            "tags": ["a", "b"],
            "raw": "ok",
        }
        # AND entity attributes went through the same rule
        [entity] = await t.entities("order")
        assert entity.attributes == {"placed_at": "2024-05-01T12:00:00+00:00", "tags": ["a", "b"]}


async def test_a_value_with_no_json_form_dead_letters_at_once_naming_its_path(
    tmp_path: Path, database_url: str
) -> None:
    async with TestApp(build(tmp_path / "files"), database_url=database_url) as t:
        # WHEN processors output values that have no JSON form
        outcomes = {
            name: await t.deliver(queue, {"n": 1})
            for name, queue in (("out", "broken-in"), ("attr", "bad-attr-in"), ("file", "file-in"))
        }

        # THEN each message is dead-lettered on its first attempt, the path named
        paths = {
            "out": "payload.items[2].price",
            "attr": "attributes.owner",
            "file": "payload.bad[0]",
        }
        for name, outcome in outcomes.items():
            assert outcome.kind is OutcomeKind.DEAD_LETTER, name
            assert outcome.error is not None and outcome.error.code == "UNSERIALIZABLE_OUTPUT"
            assert f"at {paths[name]} has no JSON form" in outcome.error.message
        assert await t.messages("out") == []
        files = tmp_path / "files"
        assert not files.exists() or list(files.iterdir()) == []
