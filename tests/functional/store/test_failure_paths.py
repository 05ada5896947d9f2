"""Failures outside the processor body: the store rejects a write, the outbox cannot dispatch,
``can_retry`` vetoes retries, entity metadata too large for its columns.

The store failure is a real one: a database trigger (SQLite and PostgreSQL) that rejects one
entity, as an operator's constraint would. No apix code is replaced.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from apix_core import (
    App,
    BackoffPolicy,
    Message,
    OutcomeKind,
    ProcessingResult,
    ProcessorContext,
    ProcessorInterface,
    tenant_context,
)
from apix_core.outputs import FileOutputHandler
from apix_core.store.database import Database
from apix_core.store.models import entities, idempotency
from apix_core.transport.base import ReceivedMessage

TENANT = "acme"
FAST = BackoffPolicy(initial_seconds=0.001, max_seconds=0.002, redelivery_seconds=0.01)


def delivery(message: Message, receive_count: int = 1) -> ReceivedMessage:
    return ReceivedMessage(
        queue="in",
        message_id=message.message_id,
        body=message.to_json(),
        receive_count=receive_count,
    )


async def install_poison_trigger(app: App, admin_url: str) -> None:
    """Make the database itself reject the entity with external id 'poison' (as the schema's
    owner: the application role may not create triggers)."""
    assert app.store is not None
    db = Database(admin_url) if app.store.db.is_postgres else app.store.db
    async with db.connect() as conn:
        if db.is_postgres:
            await conn.execute(
                sa.text(
                    "CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    "BEGIN IF NEW.external_id = 'poison' THEN "
                    "RAISE EXCEPTION 'poison row rejected'; END IF; RETURN NEW; END $$"
                )
            )
            await conn.execute(
                sa.text(
                    "CREATE TRIGGER reject_poison BEFORE INSERT ON apix_entities "
                    "FOR EACH ROW EXECUTE FUNCTION reject_poison()"
                )
            )
        else:
            await conn.execute(
                sa.text(
                    "CREATE TRIGGER reject_poison BEFORE INSERT ON apix_entities "
                    "WHEN NEW.external_id = 'poison' "
                    "BEGIN SELECT RAISE(ABORT, 'poison row rejected'); END"
                )
            )
        await conn.commit()
    if db is not app.store.db:
        await db.dispose()


async def test_a_write_the_store_rejects_fails_that_message_alone_then_dead_letters(
    make_app, admin_database_url: str
) -> None:
    # GIVEN a processor that records one entity per message, 2 attempts, and a database that
    # rejects the entity of one message
    app: App = make_app("store-fail", tenant_id=TENANT)

    @app.processor("ingest", consumes="in", max_attempts=2, backoff=FAST)
    def ingest(message: Message, ctx: ProcessorContext) -> None:
        ctx.persist_entity(message.payload["id"], "item", "test", message.payload)

    await app.start()
    await install_poison_trigger(app, admin_database_url)
    batch = [Message(tenant_id=TENANT, payload={"id": k}) for k in ("a", "poison", "b")]

    # WHEN the batch is delivered for the first time
    first = await app.process("in", [delivery(m) for m in batch])

    # THEN the two good messages complete and the poison one is released for redelivery
    assert [o.kind for o in first] == [
        OutcomeKind.COMPLETED,
        OutcomeKind.RETRY,
        OutcomeKind.COMPLETED,
    ]
    assert first[1].error is not None and first[1].error.code == "STORE_WRITE_FAILED"
    assert "poison row rejected" in first[1].error.message

    # WHEN it comes back on its last attempt
    last = await app.process("in", [delivery(batch[1], receive_count=2)])

    # THEN it is dead-lettered (no poison loop), and only the good entities exist
    assert last[0].kind is OutcomeKind.DEAD_LETTER
    assert app.store is not None
    async with app.store.db.transaction(tenant_id=TENANT) as conn:
        names = sorted((await conn.execute(sa.select(entities.c.external_id))).scalars())
        claims = (await conn.execute(sa.select(sa.func.count()).select_from(idempotency))).one()
    assert names == ["a", "b"]
    assert claims[0] == 2
    with tenant_context(TENANT):
        errors = await app.store.errors.list(processor="ingest")
    assert {(e.error_code, e.final) for e in errors} == {
        ("STORE_WRITE_FAILED", False),
        ("STORE_WRITE_FAILED", True),
    }


async def test_a_dispatch_that_keeps_failing_is_dead_lettered_after_max_attempts(
    make_app, tmp_path: Path
) -> None:
    # GIVEN a processor whose file output goes below a regular file (mkdir always fails)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    app: App = make_app("dispatch-fail", tenant_id=TENANT)

    @app.processor("export", consumes="in", max_attempts=3, backoff=FAST)
    def export(message: Message) -> ProcessingResult:
        return ProcessingResult.create_success(
            output_handlers=[FileOutputHandler(destination=str(blocker / "out"))]
        )

    await app.start()
    message = Message(tenant_id=TENANT, payload={"n": 1})

    # WHEN it is delivered, then redelivered up to its last attempt
    kinds = [
        (await app.process("in", [delivery(message, receive_count=n)]))[0].kind for n in (1, 2, 3)
    ]

    # THEN it is retried while attempts remain and then dead-lettered, not retried forever
    assert kinds == [OutcomeKind.RETRY, OutcomeKind.RETRY, OutcomeKind.DEAD_LETTER]


async def test_can_retry_false_vetoes_in_invocation_retries(make_app) -> None:
    # GIVEN a class processor whose error is transient by type but which refuses retries
    app: App = make_app("veto", tenant_id=TENANT)
    calls: list[str] = []

    class Flaky(ProcessorInterface):
        def process(self, message: Message, context: ProcessorContext) -> ProcessingResult:
            calls.append(message.message_id)
            raise ConnectionError("upstream reset")

        def can_retry(self, error: Exception) -> bool:
            return False

    app.register(Flaky(), "flaky", consumes="in", max_attempts=5, backoff=FAST)
    await app.start()

    # WHEN one message is handled
    [outcome] = await app.process("in", [delivery(Message(tenant_id=TENANT))])

    # THEN the body ran once and the message is dead-lettered at once
    assert len(calls) == 1
    assert outcome.kind is OutcomeKind.DEAD_LETTER


async def test_metadata_too_long_for_its_column_fails_that_message_as_validation(
    make_app,
) -> None:
    # GIVEN a processor that derives an external id from the payload
    app: App = make_app("lengths", tenant_id=TENANT)

    @app.processor("ingest", consumes="in", max_attempts=5, backoff=FAST)
    def ingest(message: Message, ctx: ProcessorContext) -> None:
        ctx.persist_entity(message.payload["id"], "item", "test", {}, seen_at=message.created_at)

    await app.start()
    good = Message(tenant_id=TENANT, payload={"id": "ok"})
    bad = Message(tenant_id=TENANT, payload={"id": "x" * 300})

    # WHEN a batch holds one id longer than the column (255)
    outcomes = await app.process("in", [delivery(good), delivery(bad)])

    # THEN only that message fails, at once and as a validation error; the datetime
    # attribute of the other is stored as text
    assert [o.kind for o in outcomes] == [OutcomeKind.COMPLETED, OutcomeKind.DEAD_LETTER]
    assert outcomes[1].error is not None and outcomes[1].error.category.value == "validation"
    assert app.store is not None
    with tenant_context(TENANT):
        [entity] = await app.store.entities.list()
    assert entity.attributes == {"seen_at": good.created_at.isoformat()}


async def test_a_bad_file_pattern_fails_its_message_before_commit(make_app, tmp_path: Path) -> None:
    # GIVEN a processor whose file output has a placeholder that does not exist
    out = tmp_path / "out"
    out.mkdir()
    app: App = make_app("pattern", tenant_id=TENANT)

    @app.processor("export", consumes="in", max_attempts=5, backoff=FAST)
    def export(message: Message) -> ProcessingResult:
        return ProcessingResult.create_success(
            output_handlers=[
                FileOutputHandler(destination=str(out), config={"file_pattern": "{nope}"})
            ]
        )

    await app.start()

    # WHEN one message is handled
    [outcome] = await app.process("in", [delivery(Message(tenant_id=TENANT))])

    # THEN it is dead-lettered at once as a validation error, and nothing is left to dispatch
    assert outcome.kind is OutcomeKind.DEAD_LETTER
    assert outcome.error is not None and outcome.error.code == "INVALID_FILE_PATTERN"
    assert list(out.iterdir()) == []
