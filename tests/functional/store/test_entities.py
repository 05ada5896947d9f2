"""Entity metadata: versions, duplicates, state transitions, errors, and no content at rest."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from apix_core import (
    App,
    EntityReference,
    Message,
    OutcomeKind,
    PermanentError,
    ProcessorContext,
    tenant_context,
)
from apix_core.context import entity_id_for
from apix_core.runtime import LocalRunner
from apix_core.store.database import Database


def _order(ext: str, payload: dict[str, Any], message_id: str | None = None) -> Message:
    return Message(
        message_id=message_id or str(uuid.uuid4()), tenant_id="acme", payload={"id": ext, **payload}
    )


async def _versioning_app(make_app: Any) -> App:
    app: App = make_app("entities", tenant_id="acme")

    @app.processor("ingest", consumes="orders")
    async def ingest(message: Message, ctx: ProcessorContext) -> None:
        p = message.payload
        entity_id = ctx.persist_entity(
            p["id"], "order", "shop", {"total": p["total"]}, state=p.get("state"), region="eu"
        )
        if p.get("then"):
            ctx.transition(entity_id, p["then"], reason="shipped by carrier")
        if p.get("fail"):
            raise PermanentError("order total is negative")

    await app.start()
    return app


async def test_content_change_creates_version_and_identical_content_is_duplicate(
    make_app: Any,
) -> None:
    # GIVEN an ingest processor that records order metadata
    app = await _versioning_app(make_app)
    handler = app.handler("ingest")
    entity_id = entity_id_for("acme", "order", "shop", "o-1")

    # WHEN the same order arrives with content A, A again (new message), then B, then A
    reported = []
    for total in (10, 10, 12, 10):
        outcome = await handler.handle(_order("o-1", {"total": total}))
        assert outcome.kind is OutcomeKind.COMPLETED
        assert outcome.result is not None
        reported.append((outcome.result.entities_created, outcome.result.entities_updated))

    # THEN only content changes made versions: A=1, A (duplicate) - , B=2, A=3
    with tenant_context("acme"):
        entity = await app.store.entities.get(entity_id)
        versions = await app.store.entities.versions(entity_id)
    assert entity.version == 3
    # each result says what it did: created, nothing (duplicate), updated, updated
    assert reported == [([entity_id], []), ([], []), ([], [entity_id]), ([], [entity_id])]
    assert [v.version for v in versions] == [1, 2, 3]
    assert versions[0].content_hash == versions[2].content_hash != versions[1].content_hash
    assert entity.content_hash == versions[-1].content_hash
    assert entity.attributes == {"region": "eu"}
    assert all(v.processor == "ingest" and v.message_id for v in versions)
    # the hash is of the content, never the content itself
    assert "12" not in entity.content_hash and len(entity.content_hash) >= 32


async def test_state_transitions_are_recorded_in_order(make_app: Any) -> None:
    # GIVEN an entity created, then re-persisted with state=, then moved with ctx.transition
    app = await _versioning_app(make_app)
    handler = app.handler("ingest")
    entity_id = entity_id_for("acme", "order", "shop", "o-2")

    await handler.handle(_order("o-2", {"total": 5}))
    await handler.handle(_order("o-2", {"total": 5, "state": "validated"}))
    await handler.handle(_order("o-2", {"total": 6, "state": "validated", "then": "shipped"}))

    # WHEN reading its transitions
    with tenant_context("acme"):
        transitions = await app.store.states.transitions(entity_id)
        entity = await app.store.entities.get(entity_id)

    # THEN each change of state is one row, with where it came from and why
    assert [(t.from_state, t.to_state) for t in transitions] == [
        (None, "received"),
        ("received", "validated"),
        ("validated", "shipped"),
    ]
    assert transitions[-1].reason == "shipped by carrier"
    assert all(t.processor == "ingest" and t.entity_id == entity_id for t in transitions)
    assert entity.state == "shipped"
    assert entity.version == 2  # the duplicate content with a new state made no version


async def test_failed_processing_records_error_and_discards_its_writes(make_app: Any) -> None:
    # GIVEN a message whose processing persists an entity, then fails validation
    app = await _versioning_app(make_app)
    message = _order("o-3", {"total": -1, "fail": True})

    # WHEN handled
    outcome = await app.handler("ingest").handle(message)

    # THEN it is dead-lettered, its error recorded, and its entity write rolled back
    assert outcome.kind is OutcomeKind.DEAD_LETTER
    with tenant_context("acme"):
        errors = await app.store.errors.list(processor="ingest")
        assert await app.store.entities.find("order", "shop", "o-3") is None
        assert not await app.store.idempotency.is_completed("ingest", message.message_id)
    assert len(errors) == 1
    assert errors[0].error_code == "VALIDATION_ERROR"
    assert errors[0].message_id == message.message_id
    assert errors[0].final is True
    assert "order total is negative" in errors[0].error_message


async def test_dead_lettered_entity_message_moves_entity_to_failed(make_app: Any) -> None:
    # GIVEN an existing entity and a processor that rejects messages about it
    app: App = make_app("entities", tenant_id="acme")

    @app.processor("create", consumes="new")
    async def create(message: Message, ctx: ProcessorContext) -> None:
        ctx.persist_entity("o-4", "order", "shop", {"total": 1})

    @app.processor("check", consumes="entities")
    async def check(message: Message, ctx: ProcessorContext) -> None:
        raise PermanentError("address is incomplete")

    await app.start()
    await app.handler("create").handle(_order("o-4", {}))
    entity_id = entity_id_for("acme", "order", "shop", "o-4")
    message = Message.create_entity_message(
        external_id="o-4",
        canonical_type="order",
        source="shop",
        tenant_id="acme",
        entity_id=entity_id,
    )

    # WHEN the message about the entity is dead-lettered
    outcome = await app.handler("check").handle(message)

    # THEN the entity is in state "failed" and the error links to it
    assert outcome.kind is OutcomeKind.DEAD_LETTER
    with tenant_context("acme"):
        entity = await app.store.entities.get(entity_id)
        transitions = await app.store.states.transitions(entity_id)
        errors = await app.store.errors.list(processor="check")
    assert entity.state == "failed"
    assert (transitions[-1].to_state, transitions[-1].reason) == ("failed", "VALIDATION_ERROR")
    assert errors[0].entity_id == entity_id


# -- no content at rest ---------------------------------------------------------------------


def _sentinel_app(make_app: Any) -> App:
    app: App = make_app("sentinel", tenant_id="acme")

    @app.processor("normalize", consumes="raw", produces=["canonical"])
    async def normalize(message: Message, ctx: ProcessorContext) -> None:
        p = message.payload
        entity_id = ctx.persist_entity(p["id"], "customer", "crm", p, state="normalized")
        ctx.transition(entity_id, "routed")
        ctx.send(
            "canonical",
            {"id": p["id"], "name": p["name"], "note": f"seen {p['secret']}"},
            entity=EntityReference(external_id=p["id"], canonical_type="customer", source="crm"),
        )

    @app.processor("enrich", consumes="canonical", produces=["done"])
    def enrich(message: Message, ctx: ProcessorContext) -> dict[str, Any]:
        ctx.persist_entity(message.payload["id"], "customer", "erp", message.payload)
        return {**message.payload, "enriched": True}

    @app.processor("export", consumes="done")
    async def export(message: Message, ctx: ProcessorContext) -> None:
        if message.payload["id"].endswith("-bad"):
            raise PermanentError("customer rejected by the target system")

    return app


def _sqlite_bytes(database_url: str) -> bytes:
    """Raw bytes of a SQLite database and its WAL, after a checkpoint."""
    path = Path(make_url(database_url).database or "")
    with sqlite3.connect(path) as conn:
        # Checkpoint so pages only in the WAL reach the file; both are then scanned.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    assert data
    return data + (wal.read_bytes() if wal.exists() else b"")


async def _pg_dump(database_url: str, tables: list[str] | None = None) -> tuple[list[str], str]:
    """Every row of the apix tables as text (the transport's tables unless ``tables``)."""
    db = Database(database_url)
    try:
        async with db.connect() as conn:
            if tables is None:
                tables = list(
                    (
                        await conn.execute(
                            sa.text(
                                "SELECT table_name FROM information_schema.tables "
                                "WHERE table_schema = 'public' AND table_name LIKE 'apix%' AND "
                                "table_name NOT IN ('apix_queue_messages', 'apix_dead_letters')"
                            )
                        )
                    ).scalars()
                )
            dumped: list[str] = []
            for table in tables:
                rows = await conn.execute(sa.text(f"SELECT t::text FROM {table} t"))
                dumped.extend(rows.scalars())
    finally:
        await db.dispose()
    return sorted(tables), "\n".join(dumped)


async def test_no_payload_content_is_stored_in_the_metadata_store(
    make_app: Any, backend: str, database_url: str, queue_url: str, admin_database_url: str
) -> None:
    """Payload values never reach the metadata store, only ids, hashes and states.

    SQLite: the metadata database (separate from queues.db) and its WAL are scanned as raw
    bytes. PostgreSQL: every apix table is dumped as text, except ``apix_queue_messages`` and
    ``apix_dead_letters``: they are the local *transport* (which must carry content) and live
    in the same database there.
    """
    # GIVEN payloads carrying a unique sentinel, through entities, transitions, outbox
    # dispatch over three stages and a final failure
    sentinel = f"SENTINEL-{uuid.uuid4().hex}"
    app = _sentinel_app(make_app)
    await app.start()
    for i, suffix in enumerate(["", "", "-bad"]):
        await app.send(
            "raw",
            {"id": f"c-{i}{suffix}", "name": f"Ada {sentinel}", "secret": sentinel},
            tenant_id="acme",
        )

    # WHEN the pipeline drains and the app closes
    stats = await LocalRunner(app).run()
    assert stats.completed == 8 and stats.dead_lettered == 1
    with tenant_context("acme"):
        assert await app.store.entities.count() == 6
        assert await app.store.idempotency.pending_outbox() == 0
        assert len(await app.store.errors.list()) == 1
    await app.close()

    # THEN the sentinel is nowhere in the metadata store
    if backend == "sqlite":
        assert sentinel.encode() not in _sqlite_bytes(database_url)
        # control: the scan does find it where content belongs (the dead-lettered body)
        assert sentinel.encode() in _sqlite_bytes(queue_url)
    else:
        # Dumped by the superuser: every tenant's rows, past row-level security.
        tables, dump = await _pg_dump(admin_database_url)
        assert {
            "apix_entities",
            "apix_entity_versions",
            "apix_outbox",
            "apix_state_transitions",
            "apix_processing_errors",
        } <= set(tables)
        assert dump and sentinel not in dump
        _, transport_dump = await _pg_dump(admin_database_url, ["apix_dead_letters"])
        assert sentinel in transport_dump
