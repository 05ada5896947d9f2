"""The seed-002 API surface, exercised on a real store: class processors, the handler factory,
``ProcessorConfig`` switches, source processors, and context reads from threads.

Registration checks and the graph, which need no store: tests/unit/test_registration.py.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

from apix_core import (
    App,
    Entity,
    EntityReference,
    Message,
    OutcomeKind,
    ProcessingResult,
    ProcessorConfig,
    ProcessorContext,
    ProcessorInterface,
    QueueOutputHandler,
    create_processor_handler,
    tenant_context,
)
from apix_core.context import entity_id_for
from apix_core.hashing import content_hash
from apix_core.runtime import LocalRunner
from apix_core.store.database import Database
from apix_core.store.repositories import Store


def _msg(payload: dict[str, Any], message_id: str | None = None) -> Message:
    return Message(message_id=message_id or str(uuid.uuid4()), tenant_id="acme", payload=payload)


# -- class processors ----------------------------------------------------------------------------


class SeedStyle(ProcessorInterface):
    """The seed's form: ``process(self, message)``, no context."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def process(self, message: Message) -> ProcessingResult:
        self.seen.append(message.payload["n"])
        return ProcessingResult.create_success(processing_metadata={"n": message.payload["n"]})


class SeedStyleAsync(ProcessorInterface):
    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def process(self, message: Message) -> ProcessingResult:
        self.seen.append(message.payload["n"])
        return ProcessingResult.create_success()


async def test_one_argument_class_processors_run(make_app: Any) -> None:
    # GIVEN seed-style class processors whose process takes only the message (sync and async)
    app: App = make_app("seed", tenant_id="acme")
    sync_p, async_p = SeedStyle(), SeedStyleAsync()
    app.register(sync_p, "sync_p", consumes="a")
    app.register(async_p, "async_p", consumes="b")
    await app.start()

    # WHEN messages are handled
    out_sync = await app.handler("sync_p").handle(_msg({"n": 1}))
    out_async = await app.handler("async_p").handle(_msg({"n": 2}))

    # THEN both completed (no TypeError at call time), and direct calls still work
    assert out_sync.kind is OutcomeKind.COMPLETED, out_sync.error
    assert out_async.kind is OutcomeKind.COMPLETED, out_async.error
    assert out_sync.result is not None and out_sync.result.processing_metadata == {"n": 1}
    assert (sync_p.seen, async_p.seen) == ([1], [2])
    assert SeedStyle().process(_msg({"n": 3})).processing_metadata == {"n": 3}


class Picky(ProcessorInterface):
    def __init__(self) -> None:
        self.calls = 0

    def validate_message(self, message: Message) -> bool:
        return bool(message.payload.get("valid"))

    def process(self, message: Message, context: ProcessorContext) -> ProcessingResult:
        self.calls += 1
        return ProcessingResult.create_success()


async def test_validate_message_false_dead_letters_without_calling_process(
    make_app: Any,
) -> None:
    # GIVEN a class processor whose validate_message rejects payloads without "valid"
    app: App = make_app("picky", tenant_id="acme")
    picky = Picky()
    app.register(picky, "picky", consumes="in")
    await app.start()

    # WHEN an invalid and a valid message are handled
    rejected = await app.handler("picky").handle(_msg({"valid": False}))
    accepted = await app.handler("picky").handle(_msg({"valid": True}))

    # THEN the invalid one is dead-lettered as a validation error, and process ran only once
    assert rejected.kind is OutcomeKind.DEAD_LETTER
    assert rejected.error is not None
    assert rejected.error.category.value == "validation"
    assert rejected.error.code == "VALIDATION_ERROR"
    assert accepted.kind is OutcomeKind.COMPLETED
    assert picky.calls == 1


class Registrar(ProcessorInterface):
    """Uses the result's builder methods rather than the context."""

    def process(self, message: Message, context: ProcessorContext) -> ProcessingResult:
        entity_id = context.persist_entity(
            message.payload["id"], "customer", "crm", {"name": message.payload["name"]}
        )
        return (
            ProcessingResult()
            .add_output_handler(QueueOutputHandler("registered", payload={"customer": entity_id}))
            .add_entity_created("external:" + message.payload["id"])
        )


async def test_result_builders_add_outputs_and_created_entities(make_app: Any) -> None:
    # GIVEN a class processor returning ProcessingResult().add_output_handler().add_entity_created()
    app: App = make_app("builders", tenant_id="acme")
    app.register(Registrar(), "registrar", consumes="in", produces=["registered"])
    got: list[dict[str, Any]] = []

    @app.processor("downstream", consumes="registered")
    async def downstream(message: Message, ctx: ProcessorContext) -> None:
        got.append(message.payload)

    await app.start()

    # WHEN a message is handled and the pipeline drains
    outcome = await app.handler("registrar").handle(_msg({"id": "c-1", "name": "Ada"}))
    await LocalRunner(app).run()

    # THEN the added output was delivered and the added id is listed with the entity written
    entity_id = entity_id_for("acme", "customer", "crm", "c-1")
    assert outcome.kind is OutcomeKind.COMPLETED, outcome.error
    assert outcome.result is not None
    assert outcome.result.entities_created == ["external:c-1", entity_id]
    assert got == [{"customer": entity_id}]


# -- the handler factory -------------------------------------------------------------------------


class Named(ProcessorInterface):
    def get_processor_info(self) -> dict[str, Any]:
        return {"name": "pricing-engine", "version": "2.1.0"}

    def process(self, message: Message, context: ProcessorContext) -> ProcessingResult:
        context.persist_entity(message.payload["sku"], "price", "erp", message.payload)
        return ProcessingResult.create_success(
            processing_metadata={"doubled": message.payload["price"] * 2}
        )


def test_create_processor_handler_execute_round_trip(database_url: str) -> None:
    # GIVEN a handler built outside an App, on a real (migrated) store
    db = Database(database_url)
    asyncio.run(db.upgrade())
    try:
        handler = create_processor_handler(Named, store=Store(db), default_tenant="acme")

        # THEN its name comes from get_processor_info()
        assert handler.name == "pricing-engine"

        # WHEN a message is executed synchronously
        message = _msg({"sku": "S-1", "price": 21})
        result = handler.execute(message)

        # THEN the processor's result comes back, and its work was recorded under that name
        assert result.success
        assert result.processing_metadata == {"doubled": 42}
        assert result.entities_created == [entity_id_for("acme", "price", "erp", "S-1")]

        async def recorded() -> bool:
            with tenant_context("acme"):
                return await Store(db).idempotency.is_completed(
                    "pricing-engine", message.message_id
                )

        assert asyncio.run(recorded()) is True
    finally:
        asyncio.run(db.dispose())


def test_create_processor_handler_name_precedence() -> None:
    # an explicit name or config name wins over get_processor_info()
    assert create_processor_handler(Named(), name="explicit").name == "explicit"
    config = ProcessorConfig(processor_name="from-config")
    assert create_processor_handler(Named(), config).name == "from-config"


# -- source processors ---------------------------------------------------------------------------


class UpperMapper:
    def to_canonical(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"customer_name": str(data["name"]).upper(), "customer_id": data["id"]}


class CrmSource(ProcessorInterface):
    mapper = UpperMapper()

    def process(self, message: Message, context: ProcessorContext) -> ProcessingResult:
        ref = EntityReference(
            external_id=message.payload["id"], canonical_type="customer", source="crm"
        )
        return ProcessingResult.create_success(
            output_handlers=[QueueOutputHandler("canonical", payload=message.payload, entity=ref)]
        )


async def test_source_processor_persists_output_entities_with_the_canonical_hash(
    make_app: Any,
) -> None:
    # GIVEN a class processor with a mapper.to_canonical (so it is a source processor)
    app: App = make_app("source", tenant_id="acme")
    spec = app.register(CrmSource(), "crm", consumes="raw", produces=["canonical"])
    assert spec.config.is_source_processor

    # WHEN it emits an output message referencing a customer entity
    await app.start()
    raw = {"id": "c-7", "name": "grace"}
    outcome = await app.handler("crm").handle(_msg(raw))
    assert outcome.kind is OutcomeKind.COMPLETED, outcome.error

    # THEN the entity is persisted with the hash of the CANONICAL content, not the raw payload
    entity_id = entity_id_for("acme", "customer", "crm", "c-7")
    with tenant_context("acme"):
        assert app.store is not None
        entity = await app.store.entities.get(entity_id)
    assert entity.content_hash == content_hash(UpperMapper().to_canonical(raw))
    assert entity.content_hash != content_hash(raw)
    # AND the outgoing message carries the entity's id and version
    assert app.transport is not None
    (delivery,) = await app.transport.receive("canonical", 10)
    sent = Message.create_from_queue_data(delivery.body)
    assert sent.entity is not None
    assert (sent.entity.id, sent.entity.version) == (entity_id, 1)


# -- ProcessorConfig switches ----------------------------------------------------------------------


async def _persist_twice(make_app: Any, **options: Any) -> tuple[App, str]:
    app: App = make_app("switches", tenant_id="acme")

    @app.processor("ingest", consumes="in", **options)
    async def ingest(message: Message, ctx: ProcessorContext) -> None:
        entity_id = ctx.persist_entity("o-1", "order", "shop", {"total": 10}, state="new")
        ctx.transition(entity_id, "checked")

    await app.start()
    for _ in range(2):
        outcome = await app.handler("ingest").handle(_msg({}))
        assert outcome.kind is OutcomeKind.COMPLETED, outcome.error
    return app, entity_id_for("acme", "order", "shop", "o-1")


async def test_duplicate_detection_off_versions_identical_content(make_app: Any) -> None:
    # GIVEN duplicate detection off WHEN identical content is persisted twice
    app, entity_id = await _persist_twice(make_app, enable_duplicate_detection=False)
    # THEN each write is a new version
    with tenant_context("acme"):
        assert app.store is not None
        versions = await app.store.entities.versions(entity_id)
        entity = await app.store.entities.get(entity_id)
    assert [v.version for v in versions] == [1, 2]
    assert versions[0].content_hash == versions[1].content_hash
    assert entity.version == 2


async def test_duplicate_detection_on_keeps_one_version(make_app: Any) -> None:
    # the default, for contrast with the test above
    app, entity_id = await _persist_twice(make_app)
    with tenant_context("acme"):
        assert app.store is not None
        assert [v.version for v in await app.store.entities.versions(entity_id)] == [1]


async def test_state_tracking_off_records_no_transitions(make_app: Any) -> None:
    # GIVEN state tracking off WHEN an entity is created with a state and transitioned
    app, entity_id = await _persist_twice(make_app, enable_state_tracking=False)
    # THEN no transition rows exist (with tracking on, the same calls record them)
    with tenant_context("acme"):
        assert app.store is not None
        assert await app.store.states.transitions(entity_id) == []
        assert (await app.store.entities.get(entity_id)).version == 1


async def test_state_tracking_on_records_transitions(make_app: Any) -> None:
    app, entity_id = await _persist_twice(make_app)
    with tenant_context("acme"):
        assert app.store is not None
        transitions = await app.store.states.transitions(entity_id)
    # each run sets state "new" (persist_entity state=) then "checked" (transition)
    assert [(t.from_state, t.to_state) for t in transitions] == [
        (None, "new"),
        ("new", "checked"),
        ("checked", "new"),
        ("new", "checked"),
    ]


async def test_persistence_off_runs_without_a_store(make_app: Any) -> None:
    # GIVEN an app whose only processor has persistence off
    app: App = make_app("stateless", tenant_id="acme")
    calls: list[str] = []
    errors: list[str] = []

    @app.processor("relay", consumes="in", produces=["out"], enable_persistence=False)
    async def relay(message: Message, ctx: ProcessorContext) -> dict[str, Any]:
        calls.append(message.message_id)
        try:
            ctx.persist_entity("x", "t", "s", {})
        except Exception as exc:
            errors.append(type(exc).__name__)
        return {"relayed": True}

    await app.start()

    # WHEN the same message is handled twice
    message = _msg({"n": 1}, message_id="same-id")
    first = await app.handler("relay").handle(message)
    second = await app.handler("relay").handle(message)

    # THEN there is no store, so no idempotency: both deliveries ran (at-least-once)
    assert app.store is None
    assert (first.kind, second.kind) == (OutcomeKind.COMPLETED, OutcomeKind.COMPLETED)
    assert calls == ["same-id", "same-id"]
    assert errors == ["ProcessorContextError"] * 2
    # AND outputs are still sent (straight to the transport, no outbox)
    assert app.transport is not None
    assert (await app.transport.depth("out")).visible == 1  # same outgoing id: queued once


# -- entity reads from a sync processor's thread ------------------------------------------------


async def test_sync_processor_reads_entities_from_its_worker_thread(make_app: Any) -> None:
    # GIVEN a `def` processor (run in a worker thread) that writes then reads entities
    app: App = make_app("reader", tenant_id="acme")
    reads: list[tuple[int, str | None, bool]] = []

    @app.processor("reader", consumes="in")
    def reader(message: Message, ctx: ProcessorContext) -> None:
        entity_id = ctx.persist_entity(
            message.payload["id"], "order", "shop", message.payload, state="seen"
        )
        entity: Entity = ctx.get_entity(entity_id)  # its own pending write, read back
        reads.append(
            (entity.version, entity.state, threading.current_thread() is threading.main_thread())
        )

    await app.start()

    # WHEN two messages about the same order are handled (same content, then changed)
    await app.handler("reader").handle(_msg({"id": "o-9", "total": 1}))
    await app.handler("reader").handle(_msg({"id": "o-9", "total": 2}))

    # THEN each read saw the version its own write produced, from a non-main thread
    assert reads == [(1, "seen", False), (2, "seen", False)]


async def test_get_entity_in_async_processor_is_a_clear_error(make_app: Any) -> None:
    # GIVEN an `async def` processor that calls the sync ctx.get_entity
    app: App = make_app("wrong-reader", tenant_id="acme")

    @app.processor("wrong", consumes="in")
    async def wrong(message: Message, ctx: ProcessorContext) -> None:
        ctx.get_entity(entity_id_for("acme", "order", "shop", "o-1"))

    await app.start()

    # WHEN handled
    outcome = await app.handler("wrong").handle(_msg({}))

    # THEN it fails with the context error that points at aget_entity
    assert outcome.kind is OutcomeKind.DEAD_LETTER
    assert outcome.error is not None and outcome.error.code == "CONTEXT_ERROR"
    assert "aget_entity" in outcome.error.message
