"""The seams the adapters and extraction plug into: per-tenant state in the transaction, the
transport registry, output kinds, settlement, ``retry_after`` and the error vocabulary."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from apix_core import App, Message, ProcessorContext
from apix_core.errors import ConfigurationError, PermanentError, TransientError
from apix_core.outputs import (
    OutboxRow,
    OutputHandler,
    OutputKind,
    RowContext,
    register_output_kind,
)
from apix_core.processing import OutcomeKind
from apix_core.store.state import StateRepository
from apix_core.tenancy import tenant_context
from apix_core.transport.base import OutgoingMessage, Producer, ReceivedMessage
from apix_core.transport.registry import open_transport, register_transport, scheme_of


def _delivery(app: App, queue: str, payload: dict[str, Any], mid: str) -> ReceivedMessage:
    body = Message(message_id=mid, tenant_id="acme", payload=payload).to_json()
    return ReceivedMessage(queue, mid, body)


# -- ctx.state --------------------------------------------------------------------------------
async def test_state_commits_with_the_message_and_rolls_back_with_its_failure(
    make_app: Any,
) -> None:
    # GIVEN a processor that advances a cursor in ctx.state, and fails for one input
    app: App = make_app("state", tenant_id="acme")

    @app.processor("track", consumes="in")
    async def track(message: Message, ctx: ProcessorContext) -> None:
        cursor = await ctx.state.value("cursor", 0)
        await ctx.state.put("cursor", cursor + message.payload["n"])
        if message.payload.get("fail"):
            raise PermanentError("refused after writing state")

    await app.start()
    # WHEN three messages run in one batch, the second failing after its state write
    outcomes = await app.process(
        "in",
        [
            _delivery(app, "in", {"n": 1}, "m1"),
            _delivery(app, "in", {"n": 10, "fail": True}, "m2"),
            _delivery(app, "in", {"n": 100}, "m3"),
        ],
    )

    # THEN the failed message's write vanished and the others committed, in the processor's
    # namespace
    assert [o.kind for o in outcomes] == [
        OutcomeKind.COMPLETED,
        OutcomeKind.DEAD_LETTER,
        OutcomeKind.COMPLETED,
    ]
    assert app.store is not None
    with tenant_context("acme"):
        entry = await StateRepository(app.store.db).get("track", "cursor")
    assert entry is not None and entry.value == 101 and entry.version == 2


async def test_state_without_persistence_is_a_clear_error(make_app: Any) -> None:
    app: App = make_app("nostate", tenant_id="acme")

    @app.processor("s", consumes="in", enable_persistence=False)
    async def s(message: Message, ctx: ProcessorContext) -> None:
        await ctx.state.get("x")

    await app.start()
    [outcome] = await app.process("in", [_delivery(app, "in", {}, "m1")])
    assert outcome.kind is OutcomeKind.RETRY or outcome.kind is OutcomeKind.DEAD_LETTER
    assert outcome.error is not None and "ctx.state needs persistence" in outcome.error.message


# -- retry_after ------------------------------------------------------------------------------
async def test_transient_error_retry_after_sets_the_redelivery_delay(make_app: Any) -> None:
    # GIVEN a processor that meets a 429 asking to come back in 42 s
    app: App = make_app("ra", tenant_id="acme")
    calls = []

    @app.processor("fetch", consumes="in")
    async def fetch(message: Message, ctx: ProcessorContext) -> None:
        calls.append(1)
        raise TransientError("429 Too Many Requests", retry_after=42)

    await app.start()
    [outcome] = await app.process("in", [_delivery(app, "in", {}, "m1")])

    # THEN it is redelivered after exactly that delay, without in-invocation retries
    assert outcome.kind is OutcomeKind.RETRY and outcome.delay_seconds == 42
    assert len(calls) == 1


# -- transport registry ----------------------------------------------------------------------
class _Recorder(Producer):
    name = "recorder"

    def __init__(self) -> None:
        self.sent: list[tuple[str, OutgoingMessage]] = []

    async def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        self.sent.extend((queue, m) for m in messages)

    def max_message_bytes(self, queue: str) -> int:
        return 1024


async def test_registry_builds_the_transport_its_url_names(make_app: Any) -> None:
    # GIVEN a transport registered under its own scheme, named by the app's queue URL
    recorder = _Recorder()
    register_transport("recorder", lambda url: recorder)
    app: App = make_app("reg", queue_url="recorder://anything", tenant_id="acme")

    @app.processor("a", consumes="in", produces=["out"])
    async def a(message: Message, ctx: ProcessorContext) -> dict[str, Any]:
        return {"n": 1}

    await app.start()
    assert app.transport is recorder
    # WHEN a message is processed THEN its output is dispatched through that transport
    [outcome] = await app.process("in", [_delivery(app, "in", {}, "m1")])
    assert outcome.kind is OutcomeKind.COMPLETED
    assert [q for q, _ in recorder.sent] == ["out"]
    # AND a producer-only transport cannot be polled: a clear error, not an AttributeError
    with pytest.raises(ConfigurationError, match="cannot receive"):
        app.consumer()


async def test_registry_errors_say_what_to_install() -> None:
    from apix_core.config import Settings

    settings = Settings.from_env()
    with pytest.raises(ConfigurationError, match="no scheme"):
        scheme_of("just-a-name")
    with pytest.raises(ConfigurationError, match="no transport for nope://"):
        await open_transport("nope://x", settings=settings)


async def test_adapter_schemes_come_from_entry_points() -> None:
    # GIVEN the installed package's entry points WHEN sqs:// and azure-queue:// are opened
    from apix_aws.transport.sqs import SqsTransport
    from apix_azure.transport.storage_queue import StorageQueueTransport
    from apix_core.config import Settings

    settings = Settings.from_env()
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "QueueEndpoint=http://127.0.0.1:1/devstoreaccount1;"
    )
    sqs = await open_transport("sqs://?region=eu-west-1", settings=settings)
    import os

    os.environ["APIX_TEST_AZ_CONN"] = conn
    try:
        azq = await open_transport("azure-queue://?connection=APIX_TEST_AZ_CONN", settings=settings)
    finally:
        del os.environ["APIX_TEST_AZ_CONN"]
    # THEN the adapters' transports are built (lazily: nothing was contacted)
    assert isinstance(sqs, SqsTransport) and isinstance(azq, StorageQueueTransport)
    await sqs.close()
    await azq.close()


# -- output kinds ----------------------------------------------------------------------------
@dataclass
class MemoOutputHandler(OutputHandler):
    kind: ClassVar[str] = "memo"
    text: str = ""


class MemoOutput(OutputKind):
    name = "memo"
    handler_types = (MemoOutputHandler,)
    delivered: ClassVar[list[str]] = []

    def to_row(self, handler: OutputHandler, row_id: str, seq: int, rc: RowContext) -> OutboxRow:
        assert isinstance(handler, MemoOutputHandler)
        if not handler.text:
            raise PermanentError("a memo needs text")
        return OutboxRow(
            row_id,
            rc.tenant_id,
            rc.processor,
            rc.message.message_id,
            seq,
            self.name,
            handler.destination,
            handler.text,
            0.0,
            rc.created_at,
        )

    async def dispatch(self, rows: Sequence[OutboxRow], producer: Producer | None) -> None:
        self.delivered.extend(r.body for r in rows)


register_output_kind(MemoOutput())


async def test_a_registered_output_kind_goes_through_the_outbox(make_app: Any) -> None:
    # GIVEN a new output kind (as extraction and the adapters add them)
    app: App = make_app("memo", tenant_id="acme")

    @app.processor("note", consumes="in")
    async def note(message: Message, ctx: ProcessorContext) -> Any:
        from apix_core import ProcessingResult

        return ProcessingResult(
            output_handlers=[MemoOutputHandler("board", text=message.payload["text"])]
        )

    await app.start()
    MemoOutput.delivered.clear()
    # WHEN one message has a good output and one a bad one
    outcomes = await app.process(
        "in",
        [_delivery(app, "in", {"text": "hi"}, "m1"), _delivery(app, "in", {"text": ""}, "m2")],
    )

    # THEN the good row was dispatched after commit and marked sent; the bad message failed alone
    assert [o.kind for o in outcomes] == [OutcomeKind.COMPLETED, OutcomeKind.DEAD_LETTER]
    assert MemoOutput.delivered == ["hi"]
    assert app.store is not None
    with tenant_context("acme"):
        assert await app.store.idempotency.pending_outbox() == 0


def test_an_unknown_output_handler_class_is_a_clear_error() -> None:
    from apix_core.outputs import kind_of

    @dataclass
    class Mystery(OutputHandler):
        pass

    # A subclass of a bare OutputHandler has no kind: nothing to send, as before
    assert kind_of(Mystery("x")) is None

    class Loose:
        destination = "x"

    with pytest.raises(ConfigurationError, match="not an output kind"):
        kind_of(Loose())  # type: ignore[arg-type]


# -- topology and errors ---------------------------------------------------------------------
def test_topology_is_readable_without_starting() -> None:
    app = App("topo", tenant_id="acme")

    @app.processor("tick", schedule="*/5 * * * *", produces=["a"])
    def tick(message: Message) -> None: ...

    @app.processor("api", route="POST /orders", produces=["a"])
    def api(message: Message) -> None: ...

    @app.processor("sink", consumes="a")
    def sink(message: Message) -> None: ...

    t = app.topology
    assert t.queues() == ["a"]
    assert [s.name for s in t.schedules()] == ["tick"]
    assert [str(s.route) for s in t.routes()] == ["POST /orders"]
    assert t.consumer_of("a") is app.specs["sink"]
    assert app.store is None and app.transport is None


def test_validation_error_is_a_deprecated_alias_of_permanent_error() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from apix_core import ValidationError  # type: ignore[attr-defined]
    assert ValidationError is PermanentError
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)


def test_context_limits_match_the_schema() -> None:
    from apix_core.store import types
    from apix_core.store.models import entities, state_transitions

    assert entities.c.external_id.type.length == types.EXTERNAL_ID_LENGTH  # type: ignore[attr-defined]
    assert entities.c.canonical_type.type.length == types.CANONICAL_TYPE_LENGTH  # type: ignore[attr-defined]
    assert entities.c.source.type.length == types.SOURCE_LENGTH  # type: ignore[attr-defined]
    assert entities.c.state.type.length == types.STATE_LENGTH  # type: ignore[attr-defined]
    assert state_transitions.c.reason.type.length == types.REASON_LENGTH  # type: ignore[attr-defined]
