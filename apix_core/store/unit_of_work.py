"""The SQL unit of work (SQLite and PostgreSQL): one tenant's batch in one transaction.

Implements :class:`apix_core.processing.unit_of_work.UnitOfWork`:

* **claim** — insert ``(tenant, processor, message_id)`` into ``apix_idempotency``. PostgreSQL:
  ``INSERT ... ON CONFLICT DO NOTHING`` blocks on a concurrent duplicate's uncommitted row until
  it commits (then skips) or rolls back (then wins); it rides with ``BEGIN`` (``store.pg``
  pipeline) and its command tag counts the rows inserted. SQLite: the transaction already holds
  the database write lock (``BEGIN IMMEDIATE``).
* **batched entity writes** — successful calls with entity writes are *deferred*: at
  :meth:`complete` their writes are planned together (one read of the current rows, then one
  executemany per table, or one PostgreSQL write bundle) and their outbox rows are built with
  the resulting versions. A call that reads an entity it (or an earlier call) wrote forces a
  flush; from then on that call's writes live in a savepoint, so they vanish if it fails.
* **outputs** — outbox rows, or, when the transport keeps its queues in this database, rows of
  its queue table written in this same transaction (no outbox round trip).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from apix_core.errors import EntityNotFoundError
from apix_core.outputs.base import OutboxRow
from apix_core.outputs.queue import QueueOutput, outgoing
from apix_core.processing.outcomes import OutcomeKind
from apix_core.processing.unit_of_work import Completed, UnitOfWork, error_record
from apix_core.store.database import PgHandle, WriterHandle
from apix_core.store.lazy import lazy_module
from apix_core.store.sql import run_sqlite, sqlite_writer
from apix_core.store.types import Entity, EntityWriteBatch, PendingTransition

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction

    from apix_core.context import ProcessorContext
    from apix_core.outbox import repository as _outbox
    from apix_core.store import entities as _entities
    from apix_core.store import models as _models
    from apix_core.store import pg as _pg
    from apix_core.store.pg import Pipeline
    from apix_core.store.state import SqlStateStore
else:
    # Loaded on first use: a SQLite batch that claims its ids and commits, with nothing to
    # write (a cold start's first batch, often), never imports SQLAlchemy (store.lazy).
    sa = lazy_module("sqlalchemy")
    _entities = lazy_module("apix_core.store.entities")
    _models = lazy_module("apix_core.store.models")
    _outbox = lazy_module("apix_core.outbox.repository")
    _pg = lazy_module("apix_core.store.pg")

if TYPE_CHECKING:
    from apix_core.processing.invoke import Invocation
    from apix_core.processing.outcomes import Outcome
    from apix_core.processing.unit_of_work import ErrorRecord, KeptAnswer
    from apix_core.processor import ProcessorConfig
    from apix_core.store.database import Database
    from apix_core.transport.base import Producer

FAILED_STATE = "failed"


@dataclass(slots=True)
class _Kept:
    key: Any
    invocation: Invocation


class SqlUnitOfWork(UnitOfWork):
    def __init__(
        self,
        db: Database,
        conn: AsyncConnection | WriterHandle | PgHandle,
        *,
        tenant: str,
        processor: str,
        config: ProcessorConfig,
        producer: Producer | None,
    ) -> None:
        self.db = db
        #: The transaction's connection: on SQLite possibly apix's writer handle, whose
        #: SQLAlchemy connection :meth:`sa` makes on first need.
        self.target = conn
        self._conn: AsyncConnection | None = (
            None if isinstance(conn, WriterHandle | PgHandle) else conn
        )
        self.tenant = tenant
        self.processor = processor
        self.config = config
        self.producer = producer
        self.postgres = db.is_postgres
        self.claimed = set()
        self.savepoint: AsyncTransaction | None = None
        self.deferred: list[_Kept] = []
        self.kept: list[_Kept] = []
        self.failed: list[tuple[Any, Exception]] = []
        #: PostgreSQL: the transaction's writes, sent as one statement (``store.pg``).
        self.bundle = _pg.WriteBundle() if self.postgres else None
        # Queue outputs are enqueued in this transaction itself (no outbox round) when the
        # transport keeps its queues in this database: the local SQL transport alone can.
        joins = getattr(producer, "joins_transactions_of", None)
        self.sends_in_transaction = bool(joins and joins(db))
        #: Queues this transaction enqueued to: their local workers are woken after commit.
        self.enqueued_to: list[str] = []
        #: When this transaction's outbox rows are created (one value: bound once per batch).
        self.now = datetime.now(UTC)

    async def sa(self) -> AsyncConnection:
        """The SQLAlchemy connection of the transaction (SQLAlchemy loads with the first)."""
        if self._conn is None:
            self._conn = await self.target.connection()
        return self._conn

    @property
    def access(self) -> SqlUnitOfWork:  # type: ignore[override]
        # A property, not an attribute holding itself: a self-reference would make every unit
        # of work cyclic garbage (the collector runs, refcounting no longer frees it).
        return self

    # -- claim ----------------------------------------------------------------------------
    async def claim(self, ids: list[str], pipeline: Pipeline | None) -> None:
        """Insert idempotency rows; :attr:`claimed` becomes the ids this transaction owns."""
        if not ids:
            return
        tenant = self.tenant
        if pipeline is not None and pipeline.first_status is not None:
            if _pg.inserted_count(pipeline.first_status) == len(ids):
                self.claimed = set(ids)
                return
            rows = await _pg.driver(await self.sa()).fetch(
                _pg.CLAIMED_SQL, tenant, self.processor, ids
            )
            self.claimed = {r[0] for r in rows}
            return
        now = self.now
        if self.postgres:
            # Sorted: concurrent overlapping batches wait on each other's rows in one order.
            rows = await _pg.driver(await self.sa()).fetch(
                "INSERT INTO apix_idempotency "
                "(tenant_id, processor, message_id, status, created_at) "
                "SELECT $1, $2, m, 'completed', $3 FROM unnest($4::text[]) AS m "
                "ON CONFLICT DO NOTHING RETURNING message_id",
                tenant,
                self.processor,
                now,
                sorted(ids),
            )
            self.claimed = {r[0] for r in rows}
            return
        # One statement inserts what is new and names it (SQLite holds the write lock already).
        # What SQLAlchemy's SQLite DateTime binds (naive text, microseconds): no dialect needed.
        created = now.strftime("%Y-%m-%d %H:%M:%S.%f")
        raw = sqlite_writer(self.target)
        claimed: set[str] = set()
        for start in range(0, len(ids), _CLAIM_CHUNK):
            chunk = ids[start : start + _CLAIM_CHUNK]
            sql = _sqlite_claim_sql(len(chunk))
            params: list[Any] = []
            for mid in chunk:
                params += (tenant, self.processor, mid, created)
            if raw is not None:  # straight on the writer's sqlite3 connection (no SQLAlchemy hop)
                claimed.update(r[0] for r in run_sqlite(raw, sql, params))
            else:
                conn = await self.sa()
                claimed.update(r[0] for r in await conn.exec_driver_sql(sql, tuple(params)))
        self.claimed = claimed

    async def pending_outputs(self, message_ids: Sequence[str]) -> list[OutboxRow]:
        if not message_ids:
            return []
        return await _outbox.pending_rows(await self.sa(), self.tenant, self.processor, message_ids)

    # -- read-your-writes (EntityAccess) --------------------------------------------------
    async def write_pending(self) -> None:
        """Send bundled writes now: before anything that reads them back."""
        if self.bundle:
            await self.bundle.flush(await self.sa())

    async def flush(self, ctx: ProcessorContext) -> None:
        if self.deferred:
            await self._write_deferred()
        await self.write_pending()
        if not ctx.has_writes:
            return
        conn = await self.sa()
        if self.savepoint is None:
            self.savepoint = await conn.begin_nested()
        written = await _entities.apply_entity_writes(
            conn,
            self.tenant,
            ctx.writes,
            duplicate_detection=self.config.enable_duplicate_detection,
            state_tracking=self.config.enable_state_tracking,
            lock_rows=self.postgres,
        )
        ctx.written.update(written)
        ctx.writes = EntityWriteBatch()

    async def read_entity(self, entity_id: str) -> Entity:
        if any(entity_id in _entities.entity_ids([k.invocation.ctx.writes]) for k in self.deferred):
            await self._write_deferred()
        await self.write_pending()
        entities = _models.entities
        conn = await self.sa()
        row = (
            await conn.execute(
                sa.select(entities).where(
                    entities.c.tenant_id == self.tenant, entities.c.id == entity_id
                )
            )
        ).first()
        if row is None:
            raise EntityNotFoundError(f"no entity {entity_id!r} for tenant {self.tenant!r}")
        return Entity.model_validate(dict(row._mapping))

    async def state(self) -> SqlStateStore:
        if self.deferred:
            await self._write_deferred()
        await self.write_pending()
        from apix_core.store.state import SqlStateStore

        conn = await self.sa()
        if self.savepoint is None:
            # This call's state writes are undone with the savepoint if it fails.
            self.savepoint = await conn.begin_nested()
        return SqlStateStore(conn, self.tenant)

    async def discard(self) -> None:
        if self.savepoint is not None:
            await self.savepoint.rollback()
            self.savepoint = None

    # -- successes ------------------------------------------------------------------------
    async def add(self, key: Any, invocation: Invocation) -> None:
        ctx = invocation.ctx
        if self.savepoint is None:
            if ctx.has_writes:
                # Batched with the others at complete(): one read, one write per table.
                self.deferred.append(_Kept(key, invocation))
                return
            # Nothing to write: its rows now (flushing here would write the deferred batch
            # early, one message at a time).
            invocation.rows = invocation.build_rows(self.processor, self.producer, self.now)
            self.kept.append(_Kept(key, invocation))
            return
        try:
            await self.flush(ctx)
            invocation.rows = invocation.build_rows(self.processor, self.producer, self.now)
        except BaseException:
            await self.discard()
            raise
        await self.savepoint.commit()
        self.savepoint = None
        self.kept.append(_Kept(key, invocation))

    async def complete(self) -> Completed:
        await self._write_deferred()
        rows = [r for k in self.kept for r in k.invocation.rows]
        for k in self.kept:
            k.invocation.note_written()
        # Each kept call's context points back at this unit of work (its EntityAccess): drop
        # them, so nothing here is cyclic and refcounting frees the batch at once.
        self.kept = []
        return Completed(rows, self.failed)

    async def _write_deferred(self) -> None:
        """Write the deferred successes' entities and build their outbox rows."""
        pending, self.deferred = self.deferred, []
        if not pending:
            return
        cfg = self.config
        batches = [k.invocation.ctx.writes for k in pending]
        conn = await self.sa()
        current = await _entities.load_current(
            conn, self.tenant, _entities.entity_ids(batches), lock_rows=self.postgres
        )
        while True:
            plan = _entities.plan_entity_writes(
                self.tenant,
                [k.invocation.ctx.writes for k in pending],
                current,
                duplicate_detection=cfg.enable_duplicate_detection,
                state_tracking=cfg.enable_state_tracking,
            )
            dropped: list[tuple[_Kept, Exception]] = []
            for kept, results in zip(pending, plan.results, strict=True):
                inv = kept.invocation
                inv.ctx.written = results
                try:
                    inv.rows = inv.build_rows(self.processor, self.producer, self.now)
                except Exception as exc:
                    dropped.append((kept, exc))
            if not dropped:
                break
            # A message whose outputs are invalid (e.g. too large) fails alone: plan again
            # without its writes, so later versions stay consistent.
            for kept, error in dropped:
                pending.remove(kept)
                self.failed.append((kept.key, error))
        await _entities.execute_plan(conn, self.tenant, plan, self.bundle)
        self.kept.extend(pending)

    # -- failures and outputs -------------------------------------------------------------
    async def fail(self, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        records: list[ErrorRecord] = []
        for outcome in outcomes:
            assert outcome.message is not None and outcome.error is not None
            records.append(error_record(outcome.message, outcome))
            if outcome.kind is OutcomeKind.DEAD_LETTER:
                await self.write_pending()
                await self._mark_entity_failed(outcome)
        conn = await self.sa()
        idempotency = _models.idempotency
        await conn.execute(
            sa.delete(idempotency).where(
                idempotency.c.tenant_id == self.tenant,
                idempotency.c.processor == self.processor,
                idempotency.c.message_id.in_([r.message_id for r in records]),
            )
        )
        await conn.execute(
            sa.insert(_models.processing_errors), error_rows(self.tenant, self.processor, records)
        )

    async def release(self, message_ids: Sequence[str]) -> None:
        if not message_ids:
            return
        conn = await self.sa()
        idempotency = _models.idempotency
        await conn.execute(
            sa.delete(idempotency).where(
                idempotency.c.tenant_id == self.tenant,
                idempotency.c.processor == self.processor,
                idempotency.c.message_id.in_(list(message_ids)),
            )
        )

    async def keep_answers(self, answers: Sequence[KeptAnswer]) -> None:
        if not answers:
            return
        idempotency = _models.idempotency
        conn = await self.sa()
        await conn.execute(
            sa.update(idempotency)
            .where(
                idempotency.c.tenant_id == self.tenant,
                idempotency.c.processor == self.processor,
                idempotency.c.message_id == sa.bindparam("b_message_id"),
            )
            .values(
                request_hash=sa.bindparam("b_request_hash"),
                response_status=sa.bindparam("b_status"),
                response_headers=sa.bindparam("b_headers"),
                response_body=sa.bindparam("b_body"),
            ),
            [
                {
                    "b_message_id": a.message_id,
                    "b_request_hash": a.request_hash,
                    "b_status": a.status,
                    "b_headers": a.headers,
                    "b_body": a.body,
                }
                for a in answers
            ],
        )

    async def _mark_entity_failed(self, outcome: Outcome) -> None:
        message, error = outcome.message, outcome.error
        assert message is not None and error is not None
        if not (self.config.enable_state_tracking and message.entity and message.entity.id):
            return
        batch = EntityWriteBatch(
            transitions=[
                PendingTransition(
                    message.entity.id,
                    FAILED_STATE,
                    error.code[:255],
                    self.processor,
                    message.message_id,
                )
            ]
        )
        await _entities.apply_entity_writes(
            await self.sa(),
            self.tenant,
            batch,
            duplicate_detection=False,
            state_tracking=True,
            lock_rows=self.postgres,
        )

    async def enqueue(self, rows: Sequence[OutboxRow]) -> list[OutboxRow]:
        rest = list(rows)
        if not rest:
            return rest
        conn = await self.sa()
        if self.sends_in_transaction:
            queued = [r for r in rest if r.kind == QueueOutput.name]
            for queue, messages in outgoing(queued).items():
                await self.producer.send_in_transaction(  # type: ignore[union-attr]
                    conn, queue, messages, self.bundle
                )
                self.enqueued_to.append(queue)
            rest = [r for r in rest if r.kind != QueueOutput.name]
        await _outbox.insert_rows(conn, rest, self.bundle)
        return rest


#: Ids per claim statement: 4 parameters each, well under SQLite's 32,766 variables.
_CLAIM_CHUNK = 2000


@lru_cache(maxsize=32)
def _sqlite_claim_sql(count: int) -> str:
    return (
        "INSERT INTO apix_idempotency (tenant_id, processor, message_id, status, created_at) "
        "VALUES "
        + ",".join(["(?, ?, ?, 'completed', ?)"] * count)
        + " ON CONFLICT DO NOTHING RETURNING message_id"
    )


def error_rows(tenant: str, processor: str, records: Sequence[ErrorRecord]) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "tenant_id": tenant,
            "processor": processor,
            "message_id": r.message_id,
            "entity_id": r.entity_id,
            "error_code": r.error.code[:100],
            "category": r.error.category.value,
            "error_message": r.error.message,
            "attempt": r.attempt,
            "final": r.final,
            "created_at": now,
        }
        for r in records
    ]


@asynccontextmanager
async def sql_unit_of_work(
    db: Database,
    *,
    tenant: str,
    processor: str,
    config: ProcessorConfig,
    message_ids: list[str],
    producer: Producer | None,
) -> AsyncIterator[SqlUnitOfWork]:
    """Begin the transaction and claim ``message_ids``; commit when the block ends."""
    pipeline: Pipeline | None = None
    if db.pipelines:
        # The claim rides with BEGIN (store.pg); the write bundle, content, goes bound.
        pipeline = _pg.Pipeline(
            first=_pg.claim_call(tenant, processor, datetime.now(UTC), message_ids)
        )
    async with db.unit_transaction(tenant_id=tenant, pipeline=pipeline) as conn:
        uow = SqlUnitOfWork(
            db, conn, tenant=tenant, processor=processor, config=config, producer=producer
        )
        await uow.claim(message_ids, pipeline)
        yield uow
        await uow.write_pending()
    notify = getattr(producer, "notify", None)
    if notify is not None:
        for queue in uow.enqueued_to:
            notify(queue)


async def record_errors(
    db: Database, tenant: str, processor: str, records: Sequence[ErrorRecord]
) -> None:
    """Write processing errors in a transaction of their own (outside any unit of work)."""
    async with db.transaction(tenant_id=tenant) as conn:
        await conn.execute(
            sa.insert(_models.processing_errors), error_rows(tenant, processor, records)
        )
