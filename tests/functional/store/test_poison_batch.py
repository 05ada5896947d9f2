"""One message never stops a queue: a malformed-input corpus in ONE batch with good messages.

Every bad delivery is dead-lettered with a typed code (its values escaped and clipped to the
dead-letter columns, its raw bytes kept), every good one completes, nothing raises, and a
replayed dead letter hands back its original bytes.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from apix_core import App, Message, OutcomeKind, ProcessorContext
from apix_core.processing.outcomes import Outcome
from apix_core.transport.base import OutgoingMessage, ReceivedMessage
from apix_core.transport.local import LocalTransport


def _env(tenant: Any = "acme", payload: Any = None, **extra: Any) -> str:
    body: dict[str, Any] = {"apix": 1, "message_id": str(uuid.uuid4()), "tenant_id": tenant}
    body["payload"] = {"n": 1} if payload is None else payload
    body.update(extra)
    return json.dumps(body)


def _deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


# (id, body, attributes, expected code). Queued through the transport (real rows, receipts).
QUEUED: list[tuple[str, str, dict[str, Any], str]] = [
    ("bad-json", "{not json", {"tenant_id": "acme"}, "MALFORMED_MESSAGE"),
    ("json-list", "[1, 2]", {"tenant_id": "acme"}, "MALFORMED_MESSAGE"),
    ("json-number", "42", {"tenant_id": "acme"}, "MALFORMED_MESSAGE"),
    ("empty-body", "", {"tenant_id": "acme"}, "MALFORMED_MESSAGE"),
    ("version-7", _env(apix=7), {}, "UNSUPPORTED_ENVELOPE_VERSION"),
    ("version-true", _env(apix=True), {}, "UNSUPPORTED_ENVELOPE_VERSION"),
    ("no-tenant", json.dumps({"n": 1}), {}, "MISSING_TENANT"),
    ("tenant-int", _env(tenant=12345), {}, "INVALID_TENANT"),
    ("tenant-70", json.dumps({"n": 1}), {"tenant_id": "t" * 70}, "INVALID_TENANT"),
    ("tenant-space", json.dumps({"n": 1}), {"tenant_id": "a b"}, "INVALID_TENANT"),
    ("deep-10000", _deep(10_000), {"tenant_id": "acme"}, "JSON_TOO_DEEP"),
    ("deep-envelope", _env(payload=json.loads(_deep(100))), {}, "JSON_TOO_DEEP"),
    ("payload-list", _env(payload=[1, 2]), {}, "INVALID_PAYLOAD"),
    ("extra-field", _env(surprise=1), {}, "INVALID_ENVELOPE"),
    ("env-bad-id", _env(message_id="x" * 300), {}, "INVALID_MESSAGE_ID"),
]

# Deliveries a trigger of its own hands in (no receipt of this transport): values no queue
# table row can hold.
TENANT_NUL = "ac\x00me" + "z" * 80
RAW: list[tuple[str, str | bytes, dict[str, Any], str]] = [
    ("tenant-nul-long", json.dumps({"n": 1}), {"tenant_id": TENANT_NUL}, "INVALID_TENANT"),
    ("nul-body", b'{"n": 1}\x00\x00tail', {"tenant_id": "acme"}, "MALFORMED_MESSAGE"),
    ("bad-utf8", b'{"n": "\xff\xfe"}', {"tenant_id": "acme"}, "MALFORMED_MESSAGE"),
    ("str-nul", '{"n": 1}\x00', {"tenant_id": "acme"}, "MALFORMED_MESSAGE"),
    # An envelope's own message id is checked; a foreign body's id derives from the transport's
    # (any text), so only an envelope can carry an invalid one.
    ("id-" + "9" * 300, _env(message_id="9" * 300), {}, "INVALID_MESSAGE_ID"),
    ("id-nul\x00", _env(message_id="id-nul\x00"), {}, "INVALID_MESSAGE_ID"),
    ("attr-int", json.dumps({"n": 1}), {"tenant_id": 7, "other": 1.5}, "INVALID_TENANT"),
]

GOOD: list[tuple[str, str, dict[str, str]]] = [
    ("good-1", _env(payload={"n": 1}), {}),
    ("good-foreign", json.dumps({"n": 2}), {"tenant_id": "acme"}),
    ("good-other", _env(tenant="globex", payload={"n": 3}), {}),
    ("good-deep-63", _env(payload=json.loads(_deep(62))), {}),
]


def _app(make_app: Any, seen: list[str]) -> App:
    app: App = make_app("poison", max_attempts=3)

    @app.processor("work", consumes="in")
    async def work(message: Message, ctx: ProcessorContext) -> None:
        seen.append(message.message_id)

    return app


async def test_malformed_corpus_in_one_batch_dead_letters_each_and_completes_the_rest(
    make_app: Any,
) -> None:
    # GIVEN good and malformed messages queued on one queue, plus raw deliveries
    seen: list[str] = []
    app = _app(make_app, seen)
    await app.start()
    transport = app.consumer()
    assert app.transport is not None
    queued = [(m, b, a) for m, b, a, _ in QUEUED] + GOOD
    await app.transport.send_batch("in", [OutgoingMessage(m, b, 0.0, a) for m, b, a in queued])
    received = await transport.receive("in", max_messages=len(queued))
    assert len(received) == len(queued)
    raw = [ReceivedMessage("in", m, body, attributes=a) for m, body, a, _ in RAW]
    assert len(QUEUED) + len(RAW) >= 15

    # WHEN they are processed and settled as ONE batch
    outcomes: list[Outcome] = await app.process("in", [*received, *raw])
    failures = await app.settle("in", outcomes)

    # THEN nothing failed to settle, every good message completed
    assert failures == []
    by_id = {o.delivery.message_id: o for o in outcomes}
    for mid, _, _ in GOOD:
        assert by_id[mid].kind is OutcomeKind.COMPLETED, (mid, by_id[mid].error)
    # AND every bad one is dead-lettered with its typed code
    expected = {m: code for m, _, _, code in QUEUED + RAW}
    for mid, code in expected.items():
        o = by_id[mid]
        assert o.kind is OutcomeKind.DEAD_LETTER, (mid, o.kind)
        assert o.error is not None and o.error.code == code, (mid, o.error)
    # AND the dead-letter table holds one row each, values escaped and clipped to the columns
    dead = await app.transport.list_dead_letters("in", limit=100)  # type: ignore[attr-defined]
    assert len(dead) == len(expected)
    assert sorted(d.error_code for d in dead) == sorted(expected.values())
    for d in dead:
        assert len(d.message_id) <= 255 and "\x00" not in d.message_id
        assert d.tenant_id is None or (len(d.tenant_id) <= 64 and "\x00" not in d.tenant_id)
        assert "\x00" not in d.body and "\x00" not in d.error_message
    nul_tenant = next(d for d in dead if d.message_id == "tenant-nul-long")
    assert nul_tenant.tenant_id is not None and nul_tenant.tenant_id.startswith("ac\\x00me")
    assert nul_tenant.tenant_id.endswith("…") and len(nul_tenant.tenant_id) == 64
    # AND the queue is empty: completed messages were acknowledged despite the bad ones
    assert (await app.transport.depth("in")).total == 0  # type: ignore[attr-defined]
    assert sorted(seen) == sorted(
        [by_id[m].message.message_id for m, _, _ in GOOD]  # type: ignore[union-attr]
    )


async def test_replay_of_a_nul_body_dead_letter_restores_its_bytes(make_app: Any) -> None:
    # GIVEN a dead-lettered delivery whose body holds NUL and invalid UTF-8
    app = _app(make_app, [])
    await app.start()
    original = b'{"n": 1}\x00\xff raw'
    delivery = ReceivedMessage("in", "nul-1", original, attributes={"tenant_id": "acme"})
    outcomes = await app.process("in", [delivery])
    assert await app.settle("in", outcomes) == []
    [dead] = await app.transport.list_dead_letters("in")  # type: ignore[union-attr]
    assert dead.attributes.get("apix_body_encoding") == "base64"

    # WHEN it is replayed and received again
    await app.transport.replay_dead_letter(dead.id)  # type: ignore[union-attr]
    [again] = await app.consumer().receive("in")

    # THEN the delivery carries the original bytes, and the marker is not an attribute
    assert again.body == original
    assert again.attributes == {"tenant_id": "acme"}


class _RefusingDeadLetters(LocalTransport):
    """The real local transport on the app's database, whose dead-letter write fails for one
    message id (as a database refusing a value would): the settler must still ack the rest."""

    def __init__(self, db: Any, poison: str) -> None:
        super().__init__(db)
        self.poison = poison
        self.attempts = 0

    async def dead_letter(self, queue: str, message: ReceivedMessage, info: Any) -> None:
        if message.message_id == self.poison:
            self.attempts += 1
            raise RuntimeError("value too long for type character varying(64)")
        await super().dead_letter(queue, message, info)


async def test_a_dead_letter_that_cannot_be_written_is_retried_once_and_reported(
    make_app: Any,
) -> None:
    # GIVEN a batch with good messages and two bad ones, one of which cannot be dead-lettered
    from apix_core.processing.settle import ConsumerSettler

    seen: list[str] = []
    app = _app(make_app, seen)
    await app.start()
    assert app.transport is not None
    await app.transport.send_batch(
        "in",
        [
            OutgoingMessage("ok-1", json.dumps({"n": 1}), 0.0, {"tenant_id": "acme"}),
            OutgoingMessage("poison", "{bad", 0.0, {"tenant_id": "acme"}),
            OutgoingMessage("bad-2", "{bad", 0.0, {"tenant_id": "acme"}),
            OutgoingMessage("ok-2", json.dumps({"n": 2}), 0.0, {"tenant_id": "acme"}),
        ],
    )
    received = await app.consumer().receive("in", max_messages=10)
    outcomes = await app.process("in", received)
    assert isinstance(app.transport, LocalTransport)
    flaky = _RefusingDeadLetters(app.transport.db, "poison")

    # WHEN they are settled
    failures = await ConsumerSettler(flaky, "work").settle("in", outcomes)

    # THEN the poison one was tried twice and is reported; it alone stays in flight
    assert flaky.attempts == 2
    assert [(f.outcome.delivery.message_id, f.action) for f in failures] == [
        ("poison", "dead_letter")
    ]
    assert "RuntimeError" in failures[0].error
    depth = await app.transport.depth("in")  # type: ignore[attr-defined]
    assert (depth.visible, depth.in_flight) == (0, 1)
    dead = await app.transport.list_dead_letters("in")  # type: ignore[attr-defined]
    assert [d.message_id for d in dead] == ["bad-2"]
    assert len(seen) == 2
