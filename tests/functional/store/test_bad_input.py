"""Bad input: every kind of bad body gets a typed error and a dead letter; good ones complete."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import BaseModel

from apix_core import (
    App,
    Message,
    MessageTooLargeError,
    OutcomeKind,
    ProcessorContext,
    tenant_context,
)
from apix_core.runtime import LocalRunner
from apix_core.transport.base import OutgoingMessage

MAX_BYTES = 4096


class Order(BaseModel):
    order_id: int
    qty: int = 1
    big: bool = False


def _envelope(tenant: str | None, payload: Any, **extra: Any) -> str:
    body: dict[str, Any] = {"apix": 1, "message_id": str(uuid.uuid4()), "payload": payload}
    if tenant is not None:
        body["tenant_id"] = tenant
    body.update(extra)
    return json.dumps(body)


def _build_app(make_app: Any, sink_seen: list[int]) -> App:
    # No default tenant: a body must carry its own (or the tenant_id attribute).
    app: App = make_app("bad-input", local_max_message_bytes=MAX_BYTES)

    @app.processor("validate", consumes="in", produces=["out"], payload=Order)
    async def validate(message: Message, ctx: ProcessorContext) -> dict[str, Any]:
        assert isinstance(ctx.payload, Order)
        padding = "x" * (MAX_BYTES * 2) if ctx.payload.big else ""
        return {"order_id": ctx.payload.order_id, "padding": padding}

    @app.processor("sink", consumes="out")
    async def sink(message: Message, ctx: ProcessorContext) -> None:
        sink_seen.append(message.payload["order_id"])

    return app


# (message id, body, attributes, expected error code); None = must complete.
BAD_AND_GOOD: list[tuple[str, str, dict[str, str], str | None]] = [
    ("good-1", _envelope("acme", {"order_id": 1}), {}, None),
    ("malformed", "{not json", {"tenant_id": "acme"}, "MALFORMED_MESSAGE"),
    ("not-object", "[1, 2, 3]", {"tenant_id": "acme"}, "MALFORMED_MESSAGE"),
    ("json-string", '"just a string"', {}, "MALFORMED_MESSAGE"),
    ("version-99", _envelope("acme", {"order_id": 2}, apix=99), {}, "UNSUPPORTED_ENVELOPE_VERSION"),
    (
        "version-str",
        _envelope("acme", {"order_id": 2}, apix="1"),
        {},
        "UNSUPPORTED_ENVELOPE_VERSION",
    ),
    ("no-tenant", _envelope(None, {"order_id": 3}), {}, "MISSING_TENANT"),
    ("foreign-no-tenant", json.dumps({"order_id": 4}), {}, "MISSING_TENANT"),
    ("path-tenant", _envelope("../../escaped", {"order_id": 10}), {}, "INVALID_TENANT"),
    ("foreign-path-tenant", json.dumps({"order_id": 11}), {"tenant_id": "a/b"}, "INVALID_TENANT"),
    ("payload-list", _envelope("acme", [1, 2]), {}, "INVALID_PAYLOAD"),
    ("payload-str", _envelope("acme", "order 5"), {}, "INVALID_PAYLOAD"),
    ("payload-model", _envelope("acme", {"order_id": "five"}), {}, "INVALID_PAYLOAD"),
    ("payload-missing", _envelope("acme", {"qty": 3}), {}, "INVALID_PAYLOAD"),
    ("too-large-output", _envelope("acme", {"order_id": 6, "big": True}), {}, "MESSAGE_TOO_LARGE"),
    ("good-2", _envelope("acme", {"order_id": 7}), {}, None),
    ("foreign-good", json.dumps({"order_id": 8}), {"tenant_id": "acme"}, None),
    ("good-other-tenant", _envelope("globex", {"order_id": 9}), {}, None),
]


async def test_each_bad_body_gets_typed_error_and_dead_letter_without_hurting_batch(
    make_app: Any,
) -> None:
    # GIVEN good and bad bodies queued raw (bypassing app.send's checks) on one queue
    seen: list[int] = []
    app = _build_app(make_app, seen)
    await app.start()
    assert app.transport is not None
    await app.transport.send_batch(
        "in", [OutgoingMessage(mid, body, 0.0, attrs) for mid, body, attrs, _ in BAD_AND_GOOD]
    )

    # WHEN one receive takes them all as ONE batch, and the outcomes are settled
    deliveries = await app.transport.receive("in", max_messages=len(BAD_AND_GOOD))
    assert len(deliveries) == len(BAD_AND_GOOD)
    outcomes = await app.process("in", deliveries)
    await app.settle("in", outcomes)

    # THEN each bad body is dead-lettered with its typed code, each good one completed
    by_id = {o.delivery.message_id: o for o in outcomes}
    expected = {mid: code for mid, _, _, code in BAD_AND_GOOD}
    for mid, code in expected.items():
        outcome = by_id[mid]
        if code is None:
            assert outcome.kind is OutcomeKind.COMPLETED, (mid, outcome.error)
        else:
            assert outcome.kind is OutcomeKind.DEAD_LETTER, (mid, outcome.kind)
            assert outcome.error is not None and outcome.error.code == code, (mid, outcome.error)
            assert outcome.error.retryable is False

    # AND the dead-letter store holds one record per bad body, with the same code
    dead = await app.transport.list_dead_letters("in", limit=100)
    assert {d.message_id: d.error_code for d in dead} == {
        mid: code for mid, code in expected.items() if code is not None
    }
    assert all(d.processor == "validate" for d in dead)
    # the bad bodies are kept verbatim, so they can be inspected and replayed
    raw = {mid: body for mid, body, _, _ in BAD_AND_GOOD}
    assert all(d.body == raw[d.message_id] for d in dead)
    assert (await app.transport.depth("in")).total == 0

    # AND the good messages flow on to the next stage untouched
    await LocalRunner(app).run()
    assert sorted(seen) == [1, 7, 8, 9]


async def test_bad_input_with_known_tenant_is_recorded_as_processing_error(
    make_app: Any,
) -> None:
    # GIVEN a malformed body with a tenant attribute and a payload failing the model
    seen: list[int] = []
    app = _build_app(make_app, seen)
    await app.start()
    assert app.transport is not None
    await app.transport.send_batch(
        "in",
        [
            OutgoingMessage("garbage", "<xml>not json</xml>", 0.0, {"tenant_id": "acme"}),
            OutgoingMessage(
                "wrong-model",
                _envelope("acme", {"order_id": []}, message_id="wrong-model"),
                0.0,
                {},
            ),
        ],
    )

    # WHEN the runner drains the queue
    stats = await LocalRunner(app).run()

    # THEN both are dead-lettered and recorded as final errors of tenant acme
    assert stats.dead_lettered == 2
    with tenant_context("acme"):
        errors = await app.store.errors.list(processor="validate")
    assert {(e.message_id, e.error_code, e.final) for e in errors} == {
        ("garbage", "MALFORMED_MESSAGE", True),
        ("wrong-model", "INVALID_PAYLOAD", True),
    }
    assert all(e.category == "validation" for e in errors)
    # another tenant sees none of them
    with tenant_context("globex"):
        assert await app.store.errors.list() == []


async def test_oversize_send_is_refused_before_it_reaches_the_queue(make_app: Any) -> None:
    # GIVEN an app whose local transport accepts at most MAX_BYTES per message
    app = _build_app(make_app, [])
    await app.start()
    assert app.transport is not None

    # WHEN app.send / transport.send_batch get a body over the limit
    with pytest.raises(MessageTooLargeError) as info:
        await app.send("in", {"order_id": 1, "padding": "é" * MAX_BYTES}, tenant_id="acme")
    with pytest.raises(MessageTooLargeError):
        await app.transport.send_batch(
            "in", [OutgoingMessage("raw-big", "x" * (MAX_BYTES + 1), 0.0, {})]
        )

    # THEN the error says why (size counted in UTF-8 bytes), and nothing was queued
    err = info.value
    assert err.code == "MESSAGE_TOO_LARGE"
    assert err.limit == MAX_BYTES and err.size > MAX_BYTES * 2  # 'é' is two bytes
    assert (await app.transport.depth("in")).total == 0
    # a message within the limit still goes through
    await app.send("in", {"order_id": 1}, tenant_id="acme")
    assert (await app.transport.depth("in")).visible == 1
