"""``ProcessorHandler``: runs one processor over deliveries with exactly-once effect.

The path of a batch of deliveries (one tenant at a time):

1. parse each body into a :class:`Message` (bad input → ``DEAD_LETTER`` outcome, typed error);
2. open ONE transaction; claim ``(tenant, processor, message_id)`` in ``apix_idempotency``
   (``INSERT ... ON CONFLICT DO NOTHING``: a concurrent duplicate blocks on the winner's row);
   already-completed messages only re-dispatch their unsent outbox rows;
3. run the processor; its entity writes, state transitions, outgoing messages (outbox rows)
   and processing errors are written in the same transaction; failed messages drop their claim;
4. commit, then dispatch the outbox rows and mark them sent.

A crash before 4 rolls everything back; a crash after commit leaves unsent outbox rows that the
redelivery of the same input re-sends under the same deterministic ids.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeGuard

import sqlalchemy as sa
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from apix_core.constants import DEFAULT_MAX_ATTEMPTS
from apix_core.context import ProcessorContext
from apix_core.errors import ErrorCategory, ErrorInfo, classify
from apix_core.exceptions import (
    ApixError,
    ConfigurationError,
    EntityNotFoundError,
    EnvelopeError,
    PayloadValidationError,
    TopologyError,
    TransientError,
    ValidationError,
)
from apix_core.hashing import deterministic_id
from apix_core.message import EntityReference, Message, MessageType, dump_json, envelope
from apix_core.observability.logging import pop_log_fields, push_log_fields
from apix_core.observability.tracing import (
    extract_trace_context,
    get_tracer,
    inject_trace_context,
    tracing_enabled,
)
from apix_core.outbox import Dispatcher, OutboxRow, check_file_name, insert_rows, pending_rows
from apix_core.outputs import FileOutputHandler, OutputHandler, QueueOutputHandler
from apix_core.processor import (
    FunctionProcessor,
    ProcessorConfig,
    ProcessorInterface,
    ProcessorSpec,
    build_spec,
    is_async_processor,
)
from apix_core.result import ProcessingResult
from apix_core.store.entities import (
    Entity,
    EntityWriteBatch,
    EntityWriteResult,
    PendingTransition,
    apply_entity_writes,
    entity_ids,
    execute_plan,
    load_current,
    plan_entity_writes,
)
from apix_core.store.errors import is_transient_store_error
from apix_core.store.models import entities, idempotency, processing_errors
from apix_core.store.pg import (
    CLAIMED_SQL,
    Pipeline,
    WriteBundle,
    claim_call,
    driver,
    inserted_count,
)
from apix_core.store.repositories import Store
from apix_core.store.sql import any_of, insert_many, run_sqlite, sqlite_writer
from apix_core.tenancy import is_valid_tenant_id, tenant_context
from apix_core.transport.base import OutgoingMessage, QueueTransport, ReceivedMessage

_log = logging.getLogger("apix.handler")

FAILED_STATE = "failed"


class OutcomeKind(StrEnum):
    COMPLETED = "completed"
    #: Already processed earlier; unsent outputs were re-dispatched.
    DUPLICATE = "duplicate"
    #: Not done: release for redelivery after ``delay_seconds``.
    RETRY = "retry"
    #: Never retry: move to the dead-letter destination with ``error``.
    DEAD_LETTER = "dead_letter"


@dataclass(slots=True)
class Outcome:
    kind: OutcomeKind
    delivery: ReceivedMessage
    message: Message | None = None
    error: ErrorInfo | None = None
    delay_seconds: float = 0.0
    result: ProcessingResult | None = None

    @property
    def settled(self) -> bool:
        """True when the delivery may be deleted from its queue (after dead-lettering if so)."""
        return self.kind is not OutcomeKind.RETRY


class _Failure(Exception):
    """A processor returned ``ProcessingResult.create_failure``."""

    def __init__(self, result: ProcessingResult) -> None:
        super().__init__(result.error_message or "processor reported failure")
        self.result = result
        self.retryable = result.can_retry


@dataclass(slots=True)
class _Item:
    index: int
    delivery: ReceivedMessage
    message: Message


@dataclass(slots=True)
class _Deferred:
    """A success whose entity writes and outbox rows wait for the group's batched flush."""

    message: Message
    ctx: ProcessorContext
    handlers: list[OutputHandler]
    trace_context: dict[str, str]


@dataclass(slots=True)
class _Run:
    ok: bool
    rows: list[OutboxRow]
    result: ProcessingResult | None = None
    error: ErrorInfo | None = None
    retry_after: float | None = None
    deferred: _Deferred | None = None


class _Group:
    """One tenant's transaction: batched entity writes, read-your-writes, per-message rollback.

    Successful messages with entity writes are *deferred*: at the end of the group their writes
    are planned together (one read of the current rows, then one executemany per table) and their
    outbox rows are built with the resulting versions. A processor that reads an entity it (or an
    earlier message) wrote forces a flush; from then on that message's writes live in a
    savepoint, so they vanish if it fails.
    """

    def __init__(self, handler: ProcessorHandler, conn: AsyncConnection, tenant: str) -> None:
        self.handler = handler
        self.conn = conn
        self.tenant = tenant
        self.savepoint: AsyncTransaction | None = None
        self.deferred: list[tuple[_Item, _Run]] = []
        self.failures: list[tuple[_Item, _Run]] = []
        #: PostgreSQL: the transaction's writes, sent as one statement (``store.pg``).
        self.bundle = WriteBundle() if handler.db_is_postgres else None

    async def write_pending(self) -> None:
        """Send bundled writes now: before anything that reads them back."""
        if self.bundle:
            await self.bundle.flush(self.conn)

    async def flush(self, ctx: ProcessorContext) -> None:
        if self.deferred:
            await self.finalize()
        await self.write_pending()
        if not ctx.has_writes:
            return
        if self.savepoint is None:
            self.savepoint = await self.conn.begin_nested()
        cfg = self.handler.config
        written = await apply_entity_writes(
            self.conn,
            self.tenant,
            ctx.writes,
            duplicate_detection=cfg.enable_duplicate_detection,
            state_tracking=cfg.enable_state_tracking,
            lock_rows=self.handler.db_is_postgres,
        )
        ctx.written.update(written)
        ctx.writes = EntityWriteBatch()

    async def read_entity(self, entity_id: str) -> Entity:
        if any(
            entity_id in entity_ids([run.deferred.ctx.writes])
            for _, run in self.deferred
            if run.deferred
        ):
            await self.finalize()
        await self.write_pending()
        row = (
            await self.conn.execute(
                sa.select(entities).where(
                    entities.c.tenant_id == self.tenant, entities.c.id == entity_id
                )
            )
        ).first()
        if row is None:
            raise EntityNotFoundError(f"no entity {entity_id!r} for tenant {self.tenant!r}")
        return Entity.model_validate(dict(row._mapping))

    async def finish(self, ok: bool) -> None:
        if self.savepoint is not None:
            if ok:
                await self.savepoint.commit()
            else:
                await self.savepoint.rollback()
            self.savepoint = None

    async def finalize(self) -> None:
        """Write the deferred successes' entities and build their outbox rows."""
        pending, self.deferred = self.deferred, []
        if not pending:
            return
        h = self.handler
        cfg = h.config
        batches = [run.deferred.ctx.writes for _, run in pending if run.deferred]
        current = await load_current(
            self.conn, self.tenant, entity_ids(batches), lock_rows=h.db_is_postgres
        )
        while True:
            plan = plan_entity_writes(
                self.tenant,
                [run.deferred.ctx.writes for _, run in pending if run.deferred],
                current,
                duplicate_detection=cfg.enable_duplicate_detection,
                state_tracking=cfg.enable_state_tracking,
            )
            dropped: list[tuple[_Item, _Run, Exception]] = []
            for (item, run), results in zip(pending, plan.results, strict=True):
                d = run.deferred
                assert d is not None
                d.ctx.written = results
                _note_written(run.result, results)
                try:
                    run.rows = h._outbox_rows(d.message, d.ctx, d.handlers, d.trace_context)
                except Exception as exc:
                    dropped.append((item, run, exc))
            if not dropped:
                break
            # A message whose outputs are invalid (e.g. too large) fails alone: plan again
            # without its writes, so later versions stay consistent.
            for item, run, error in dropped:
                pending.remove((item, run))
                self.failures.append((item, h._failed_run(error, time.perf_counter())))
        await execute_plan(self.conn, self.tenant, plan, self.bundle)
        for _, run in pending:
            run.deferred = None


class ProcessorHandler:
    """Runs one registered processor with idempotency, outbox, retries and error routing."""

    def __init__(
        self,
        spec: ProcessorSpec,
        *,
        store: Store | None = None,
        transport: QueueTransport | None = None,
        default_tenant: str | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.config = spec.config
        self.max_attempts = spec.config.max_attempts or DEFAULT_MAX_ATTEMPTS
        self.processor = spec.processor
        self.store = store if self.config.enable_persistence else None
        self.transport = transport
        self.default_tenant = default_tenant
        self.dispatcher = Dispatcher(self.store.db if self.store else None, transport)
        #: Queue outputs are enqueued in the processing transaction itself (no outbox round)
        #: when the transport keeps its queues in the store's database.
        self.sends_in_transaction = (
            transport is not None
            and self.store is not None
            and transport.joins_transactions_of(self.store.db)
        )
        self.db_is_postgres = bool(self.store and self.store.db.is_postgres)
        self._is_async = is_async_processor(self.processor)
        # Call plain functions directly: the adapter's extra frame shows on no-op processors.
        self._process: Any = self.processor.process
        if isinstance(self.processor, FunctionProcessor):
            fn = self.processor.func
            self._process = fn if self.processor.takes_ctx else (lambda m, _c: fn(m))
        self._log = logging.getLogger(f"apix.processor.{self.name}")

    # -- public API -----------------------------------------------------------------------
    async def handle(
        self, delivery: ReceivedMessage | Message, *, deadline: float | None = None
    ) -> Outcome:
        return (await self.handle_batch([delivery], deadline=deadline))[0]

    async def handle_batch(
        self,
        deliveries: Sequence[ReceivedMessage | Message],
        *,
        deadline: float | None = None,
    ) -> list[Outcome]:
        """Process deliveries; returns one outcome per delivery, in order.

        ``deadline`` (``time.monotonic()`` based) bounds in-invocation retries, e.g. a Lambda's
        remaining time.
        """
        outcomes: list[Outcome | None] = [None] * len(deliveries)
        groups: dict[str, list[_Item]] = {}
        for i, raw in enumerate(deliveries):
            delivery = raw if isinstance(raw, ReceivedMessage) else _as_delivery(raw, self.spec)
            try:
                message = raw if isinstance(raw, Message) else self._parse(delivery)
            except EnvelopeError as exc:
                outcomes[i] = Outcome(OutcomeKind.DEAD_LETTER, delivery, error=classify(exc))
                self._log.warning(
                    "rejected malformed message",
                    extra={
                        "message_id": delivery.message_id,
                        "error_code": exc.code,
                        "error": str(exc),
                    },
                )
                continue
            groups.setdefault(message.tenant_id, []).append(_Item(i, delivery, message))

        traced = tracing_enabled() if groups else False
        for tenant, items in groups.items():
            with tenant_context(tenant):
                if self.store is None:
                    await self._process_stateless(items, outcomes, deadline, traced)
                else:
                    await self._process_group(tenant, items, outcomes, deadline, traced)
        await self._record_envelope_errors(deliveries, outcomes)
        return [o for o in outcomes if o is not None]

    def execute(self, message: Message) -> ProcessingResult:
        """Synchronous convenience for scripts and tests (seed 002 API)."""
        outcome = asyncio.run(self.handle(message))
        if outcome.result is not None:
            return outcome.result
        error = outcome.error
        return ProcessingResult.create_failure(
            error.message if error else "not processed",
            error.code if error else "NOT_PROCESSED",
            can_retry=outcome.kind is OutcomeKind.RETRY,
        )

    # -- parsing --------------------------------------------------------------------------
    def _parse(self, delivery: ReceivedMessage) -> Message:
        tenant = delivery.attributes.get("tenant_id") or self.default_tenant
        return Message.create_from_queue_data(
            delivery.body,
            default_tenant=tenant,
            transport_message_id=delivery.message_id,
            attempt=max(1, delivery.receive_count),
        )

    def _validated_payload(self, message: Message) -> BaseModel | None:
        model = self.spec.payload_model
        if model is None:
            return None
        try:
            return model.model_validate(message.payload)
        except PydanticValidationError as exc:
            raise PayloadValidationError(
                f"payload does not match {model.__name__}: "
                + "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                    for e in exc.errors(include_url=False, include_input=False)
                )
            ) from None

    # -- the transactional path -----------------------------------------------------------
    async def _process_group(
        self,
        tenant: str,
        items: list[_Item],
        outcomes: list[Outcome | None],
        deadline: float | None,
        traced: bool,
    ) -> None:
        assert self.store is not None
        new_rows: list[OutboxRow] = []
        redispatch: list[OutboxRow] = []
        sent_to: list[str] = []
        ids = list(dict.fromkeys(it.message.message_id for it in items))
        pipeline: Pipeline | None = None
        if self.store.db.pipelines:
            # The claim rides with BEGIN, the final write bundle with COMMIT (store.pg).
            pipeline = Pipeline(first=claim_call(tenant, self.name, datetime.now(UTC), ids))
        try:
            async with self.store.db.transaction(tenant_id=tenant, pipeline=pipeline) as conn:
                claimed = await self._claim(conn, tenant, ids, pipeline)
                done = [i for i in ids if i not in claimed]
                redispatch = await pending_rows(conn, tenant, self.name, done)
                group = _Group(self, conn, tenant)
                runs: dict[int, tuple[_Item, _Run]] = {}
                seen: set[str] = set()
                for it in items:
                    mid = it.message.message_id
                    if mid not in claimed or mid in seen:
                        outcomes[it.index] = Outcome(OutcomeKind.DUPLICATE, it.delivery, it.message)
                        continue
                    seen.add(mid)
                    run = await self._run_one(it.message, group, tenant, deadline, traced)
                    runs[it.index] = (it, run)
                    if run.deferred is not None:
                        group.deferred.append((it, run))
                await group.finalize()
                for it, failed_run in group.failures:
                    runs[it.index] = (it, failed_run)
                new_rows, sent_to = await self._settle_group(group, list(runs.values()), outcomes)
                if group.bundle:
                    if pipeline is not None:
                        pipeline.last = group.bundle.as_call()
                    await group.write_pending()  # when it could not go with COMMIT
        except Exception as exc:
            # Nothing was committed. A database that is unavailable or contended fails the
            # whole group alike: every delivery is redelivered. Anything else may be one
            # message's doing (a value its column cannot hold...): run the group's messages
            # one per transaction so the others succeed and the culprit alone fails.
            if len(items) > 1 and not is_transient_store_error(exc):
                self._log.warning(
                    "transaction failed; retrying its messages one by one",
                    extra={"error": f"{type(exc).__name__}: {exc}"[:500]},
                )
                for it in items:
                    await self._process_group(tenant, [it], outcomes, deadline, traced)
                return
            await self._fail_group(tenant, items, outcomes, exc)
            return
        if self.transport is not None:
            for queue in sent_to:
                self.transport.notify(queue)
        await self._dispatch(redispatch + new_rows, items, outcomes)

    async def _fail_group(
        self, tenant: str, items: list[_Item], outcomes: list[Outcome | None], exc: Exception
    ) -> None:
        """Outcomes for a group whose transaction failed: retry up to ``max_attempts``, then
        dead-letter (never a poison loop), with a best-effort processing-error row."""
        database_down = is_transient_store_error(exc)
        info = ErrorInfo(
            "DATABASE_ERROR" if database_down else "STORE_WRITE_FAILED",
            ErrorCategory.TRANSIENT if database_down else ErrorCategory.UNEXPECTED,
            f"{type(exc).__name__}: {exc}"[:4000],
            retryable=True,
        )
        self._log.warning(
            "transaction failed",
            exc_info=info.category is ErrorCategory.UNEXPECTED,
            extra={"error_code": info.code, "error": info.message[:500]},
        )
        rows = []
        for it in items:
            outcome = self._failure_outcome(it, info)
            outcomes[it.index] = outcome
            rows.append(self._error_row(tenant, it.message, outcome))
        if database_down:
            return  # do not insist on writing to it
        assert self.store is not None
        try:
            async with self.store.db.transaction(tenant_id=tenant) as conn:
                await conn.execute(sa.insert(processing_errors), rows)
        except Exception:
            self._log.warning("could not record the failure", exc_info=True)

    async def _settle_group(
        self,
        group: _Group,
        runs: list[tuple[_Item, _Run]],
        outcomes: list[Outcome | None],
    ) -> tuple[list[OutboxRow], list[str]]:
        """Outcomes, error rows, released claims and outputs, inside the transaction.

        Returns the outbox rows to dispatch after commit, and the queues sent to in the
        transaction itself (when the transport shares the store's database)."""
        conn, tenant, bundle = group.conn, group.tenant, group.bundle
        rows: list[OutboxRow] = []
        failed: list[str] = []
        error_rows: list[dict[str, Any]] = []
        for it, run in runs:
            if run.ok:
                rows.extend(run.rows)
                outcomes[it.index] = Outcome(
                    OutcomeKind.COMPLETED, it.delivery, it.message, result=run.result
                )
                continue
            failed.append(it.message.message_id)
            assert run.error is not None
            outcome = self._failure_outcome(it, run.error, run.retry_after)
            outcomes[it.index] = outcome
            assert outcome.error is not None
            error_rows.append(self._error_row(tenant, it.message, outcome))
            if outcome.kind is OutcomeKind.DEAD_LETTER:
                await group.write_pending()
                await self._mark_entity_failed(conn, tenant, it.message, outcome.error)
        if failed:
            await conn.execute(
                sa.delete(idempotency).where(
                    idempotency.c.tenant_id == tenant,
                    idempotency.c.processor == self.name,
                    idempotency.c.message_id.in_(failed),
                )
            )
        if error_rows:
            await conn.execute(sa.insert(processing_errors), error_rows)
        sent_to: list[str] = []
        if self.sends_in_transaction and rows:
            assert self.transport is not None
            by_queue: dict[str, list[OutgoingMessage]] = {}
            for r in rows:
                if r.kind == "queue":
                    by_queue.setdefault(r.destination, []).append(
                        OutgoingMessage(r.id, r.body, r.delay_seconds)
                    )
            for queue, messages in by_queue.items():
                await self.transport.send_in_transaction(conn, queue, messages, bundle)
            sent_to = list(by_queue)
            rows = [r for r in rows if r.kind != "queue"]
        await insert_rows(conn, rows, bundle)
        return rows, sent_to

    async def _claim(
        self, conn: AsyncConnection, tenant: str, ids: list[str], pipeline: Pipeline | None
    ) -> set[str]:
        """Insert idempotency rows; returns the ids this transaction now owns.

        PostgreSQL: ``INSERT ... ON CONFLICT DO NOTHING`` blocks on a concurrent duplicate's
        uncommitted row until it commits (then skips) or rolls back (then wins). Sent with
        ``BEGIN`` (``pipeline``), its command tag counts the rows inserted: all of ``ids`` in
        the usual case, else the rows carrying this transaction's id are ours.
        SQLite: the transaction already holds the database write lock (``BEGIN IMMEDIATE``).
        """
        if not ids:
            return set()
        if pipeline is not None and pipeline.first_status is not None:
            if inserted_count(pipeline.first_status) == len(ids):
                return set(ids)
            rows = await driver(conn).fetch(CLAIMED_SQL, tenant, self.name, ids)
            return {r[0] for r in rows}
        now = datetime.now(UTC)
        if self.db_is_postgres:
            # Sorted: concurrent overlapping batches wait on each other's rows in one order.
            rows = await driver(conn).fetch(
                "INSERT INTO apix_idempotency "
                "(tenant_id, processor, message_id, status, created_at) "
                "SELECT $1, $2, m, 'completed', $3 FROM unnest($4::text[]) AS m "
                "ON CONFLICT DO NOTHING RETURNING message_id",
                tenant,
                self.name,
                now,
                sorted(ids),
            )
            return {r[0] for r in rows}
        sql = (
            "SELECT message_id FROM apix_idempotency WHERE tenant_id = ? AND processor = ? AND "
            + any_of("sqlite", "message_id", len(ids))
        )
        raw = sqlite_writer(conn)
        if raw is not None:
            existing = {r[0] for r in run_sqlite(raw, sql, (tenant, self.name, *ids))}
        else:
            existing = {r[0] for r in await conn.exec_driver_sql(sql, (tenant, self.name, *ids))}
        claimed = [mid for mid in ids if mid not in existing]
        await insert_many(
            conn,
            idempotency,
            ("tenant_id", "processor", "message_id", "status", "created_at"),
            [(tenant, self.name, mid, "completed", now) for mid in claimed],
        )
        return set(claimed)

    async def _dispatch(
        self, rows: list[OutboxRow], items: list[_Item], outcomes: list[Outcome | None]
    ) -> None:
        if not rows:
            return
        try:
            await self.dispatcher.dispatch(rows)
        except Exception as exc:
            # Committed but not sent: keep the input unacknowledged so its redelivery re-sends.
            info = classify(TransientError(f"outbox dispatch failed: {exc}"))
            self._log.warning("outbox dispatch failed", extra={"error": str(exc)})
            pending = {r.source_message_id for r in rows}
            for it in items:
                if it.message.message_id in pending:
                    # Retried like any failure; past max_attempts the input is dead-lettered
                    # and its unsent rows stay in the outbox: a replay re-sends them.
                    outcomes[it.index] = self._failure_outcome(it, info)

    # -- one message ----------------------------------------------------------------------
    async def _run_one(
        self,
        message: Message,
        access: _Group | None,
        tenant: str,
        deadline: float | None,
        traced: bool,
    ) -> _Run:
        token = push_log_fields(
            {
                "tenant_id": tenant,
                "correlation_id": message.correlation_id,
                "message_id": message.message_id,
                "processor": self.name,
            }
        )
        try:
            if not traced:
                # No SDK installed: pass the incoming trace context through unchanged.
                return await self._run(message, access, deadline, message.trace_context)
            return await self._run_in_span(message, access, tenant, deadline)
        finally:
            pop_log_fields(token)

    async def _run_in_span(
        self, message: Message, access: _Group | None, tenant: str, deadline: float | None
    ) -> _Run:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        with get_tracer().start_as_current_span(
            f"process {self.name}",
            context=extract_trace_context(message.trace_context),
            kind=SpanKind.CONSUMER,
            attributes={
                "apix.processor": self.name,
                "apix.tenant_id": tenant,
                "messaging.message.id": message.message_id,
                "messaging.message.conversation_id": message.correlation_id,
                "apix.attempt": message.attempt,
            },
        ) as span:
            run = await self._run(message, access, deadline, inject_trace_context())
            if not run.ok and run.error is not None:
                span.set_status(Status(StatusCode.ERROR, run.error.message))
                span.set_attribute("apix.error_code", run.error.code)
            return run

    async def _run(
        self,
        message: Message,
        access: _Group | None,
        deadline: float | None,
        trace_context: dict[str, str],
    ) -> _Run:
        start = time.perf_counter()
        ctx = ProcessorContext(
            message=message,
            processor_name=self.name,
            produces=self.spec.produces,
            store=self.store,
            logger=self._log,
            access=access,
        )
        try:
            if self.spec.payload_model is not None:
                ctx.payload = self._validated_payload(message)
            if not self.processor.validate_message(message):
                raise ValidationError(f"processor {self.name!r} rejected the message")
            try:
                result = await self._call(message, ctx)
            except Exception as exc:
                result = await self._retry(exc, message, ctx, access, deadline)
            handlers = (
                [*result.output_handlers, *ctx.outputs] if ctx.outputs else result.output_handlers
            )
            rows: list[OutboxRow] = []
            if handlers:
                self._check_topology(handlers)
                if self.config.is_source_processor:
                    self._persist_output_entities(message, ctx, handlers)
            if message.entity is not None and self.config.success_state and message.entity.id:
                ctx.transition(message.entity.id, self.config.success_state, "processed")
            if access is not None and ctx.has_writes and access.savepoint is None:
                # Entity writes are batched with the group's other messages (_Group.finalize).
                return _Run(
                    ok=True,
                    rows=[],
                    result=result,
                    deferred=_Deferred(message, ctx, handlers, trace_context),
                )
            if access is not None:
                await access.flush(ctx)
                _note_written(result, ctx.written)
            if handlers:
                rows = self._outbox_rows(message, ctx, handlers, trace_context)
            if access is not None:
                await access.finish(ok=True)
        except Exception as exc:
            if access is not None:
                await access.finish(ok=False)
            return self._failed_run(exc, start)
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug(
                "message processed",
                extra={
                    "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                    "outputs": len(rows),
                },
            )
        return _Run(ok=True, rows=rows, result=result)

    def _failed_run(self, exc: Exception, start: float) -> _Run:
        retry_after = None
        if isinstance(exc, _Failure):
            r = exc.result
            retry_after = r.retry_after_seconds
            category = ErrorCategory.TRANSIENT if r.can_retry else ErrorCategory.VALIDATION
            info = ErrorInfo(
                r.error_code or "PROCESSING_ERROR",
                category,
                r.error_message or "failed",
                r.can_retry,
            )
        else:
            info = classify(exc, self.processor)
        self._log.warning(
            "processor failed",
            exc_info=info.category is ErrorCategory.UNEXPECTED,
            extra={
                "error_code": info.code,
                "error_category": info.category.value,
                "duration_ms": round((time.perf_counter() - start) * 1000, 3),
            },
        )
        return _Run(ok=False, rows=[], error=info, retry_after=retry_after)

    async def _retry(
        self,
        first_error: Exception,
        message: Message,
        ctx: ProcessorContext,
        access: _Group | None,
        deadline: float | None,
    ) -> ProcessingResult:
        """Retry a transient failure in-invocation with exponential backoff and full jitter.

        Bounded by ``backoff.max_retries``, ``backoff.budget_seconds`` and the invocation's
        ``deadline``. Anything else re-raises ``first_error``. (The first call runs outside
        tenacity: its machinery costs more than a no-op processor, and most calls succeed.)
        """
        backoff = self.config.backoff
        budget = backoff.budget_seconds
        if deadline is not None:
            budget = min(budget, deadline - time.monotonic() - 1.0)
        if not self._is_transient(first_error) or backoff.max_retries <= 0 or budget <= 0:
            raise first_error
        wait = wait_random_exponential(
            multiplier=backoff.initial_seconds, max=backoff.max_seconds, exp_base=backoff.multiplier
        )
        retrying = AsyncRetrying(
            stop=stop_after_attempt(backoff.max_retries) | stop_after_delay(budget),
            wait=wait,
            retry=retry_if_exception(self._is_transient),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                ctx.reset()
                if access is not None:
                    await access.finish(ok=False)
                if attempt.retry_state.attempt_number == 1:
                    await asyncio.sleep(wait(attempt.retry_state))
                return await self._call(message, ctx)
        raise AssertionError("unreachable")  # pragma: no cover

    def _is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, _Failure):
            return exc.retryable and exc.result.retry_after_seconds is None
        info = classify(exc, self.processor)
        # can_retry() returning False vetoes in-invocation retries too.
        return info.category is ErrorCategory.TRANSIENT and info.retryable

    async def _call(self, message: Message, ctx: ProcessorContext) -> ProcessingResult:
        if self._is_async:
            raw = await self._process(message, ctx)
        elif self.config.run_sync_in_thread:
            # The context reaches back into this loop for ctx.get_entity() from the thread.
            ctx.loop = asyncio.get_running_loop()
            raw = await asyncio.to_thread(self._process, message, ctx)
        else:
            raw = self._process(message, ctx)
        if raw is None:
            return ProcessingResult()
        result = raw if isinstance(raw, ProcessingResult) else self._normalize(raw)
        if not result.success:
            raise _Failure(result)
        return result

    def _normalize(self, raw: Any) -> ProcessingResult:
        if isinstance(raw, ProcessingResult):
            return raw
        if raw is None:
            return ProcessingResult.create_success()
        if isinstance(raw, dict):
            if len(self.spec.produces) != 1:
                raise TopologyError(
                    f"processor {self.name!r} returned a dict; that shorthand needs exactly one "
                    f"queue in produces= (it has {list(self.spec.produces)})"
                )
            return ProcessingResult(
                output_handlers=[QueueOutputHandler(self.spec.produces[0], payload=raw)]
            )
        raise ConfigurationError(
            f"processor {self.name!r} returned {type(raw).__name__}; "
            "return a ProcessingResult, a dict (one produces queue) or None"
        )

    # -- outputs --------------------------------------------------------------------------
    def _check_topology(self, handlers: list[OutputHandler]) -> None:
        for h in handlers:
            if _is_queue(h) and h.destination not in self.spec.produces:
                raise TopologyError(
                    f"processor {self.name!r} may send to {list(self.spec.produces)}, "
                    f"not {h.destination!r} (declare it in produces=)"
                )

    def _persist_output_entities(
        self, message: Message, ctx: ProcessorContext, handlers: list[OutputHandler]
    ) -> None:
        mapper = getattr(self.processor, "mapper", None)
        for h in handlers:
            if not isinstance(h, QueueOutputHandler) or h.entity is None:
                continue
            payload = h.payload if h.payload is not None else message.payload
            canonical = mapper.to_canonical(payload) if mapper is not None else payload
            ctx.persist_entity(
                h.entity.external_id, h.entity.canonical_type, h.entity.source, canonical
            )

    def _outbox_rows(
        self,
        message: Message,
        ctx: ProcessorContext,
        handlers: list[OutputHandler],
        trace_context: dict[str, str],
    ) -> list[OutboxRow]:
        rows: list[OutboxRow] = []
        if not handlers:
            return rows
        now = datetime.now(UTC)
        tenant = message.tenant_id
        for seq, h in enumerate(handlers):
            queue = h if _is_queue(h) else None
            target: QueueOutputHandler | FileOutputHandler
            if queue is not None:
                target = queue
            elif isinstance(h, FileOutputHandler):
                target = h
            else:
                continue  # NoOpOutputHandler
            out_id = deterministic_id(tenant, self.name, message.message_id, str(seq))
            payload = target.payload if target.payload is not None else message.payload
            if queue is not None:
                if not isinstance(payload, dict):
                    raise PayloadValidationError(
                        f"output payload must be a dict, not {type(payload).__name__}"
                    )
                entity = self._resolve_entity(tenant, ctx, queue.entity)
                body = dump_json(
                    envelope(
                        message_id=out_id,
                        correlation_id=message.correlation_id,
                        tenant_id=tenant,
                        type=MessageType.ENTITY if entity else MessageType.QUEUE,
                        payload=payload,
                        metadata=queue.metadata,
                        created_at=now,
                        entity=entity,
                        trace_context=trace_context,
                    )
                )
                if self.transport is not None:
                    self.transport.check_size(queue.destination, body)
                kind, delay, config = "queue", queue.delay_seconds, None
            else:
                assert isinstance(target, FileOutputHandler)
                body = dump_json(payload)
                kind, delay, config = "file", 0.0, dict(target.config)
            rows.append(
                OutboxRow(
                    out_id,
                    tenant,
                    self.name,
                    message.message_id,
                    seq,
                    kind,
                    h.destination,
                    body,
                    delay,
                    now,
                    config,
                )
            )
            if kind == "file":
                # A bad pattern or a path outside the destination fails this message now
                # (a validation error), not every dispatch after commit.
                check_file_name(rows[-1])
        return rows

    @staticmethod
    def _resolve_entity(
        tenant: str, ctx: ProcessorContext, ref: EntityReference | None
    ) -> EntityReference | None:
        if ref is None:
            return None
        from apix_core.context import entity_id_for

        entity_id = ref.id or entity_id_for(tenant, ref.canonical_type, ref.source, ref.external_id)
        written = ctx.written.get(entity_id)
        version = written.version if written else ref.version
        return ref.model_copy(update={"id": entity_id, "version": version})

    # -- failures -------------------------------------------------------------------------
    def _failure_outcome(
        self, item: _Item, info: ErrorInfo, retry_after: float | None = None
    ) -> Outcome:
        attempt = item.message.attempt
        if info.retryable and attempt < self.max_attempts:
            return Outcome(
                OutcomeKind.RETRY,
                item.delivery,
                item.message,
                error=info,
                delay_seconds=self._redelivery_delay(attempt, retry_after),
            )
        if info.retryable:
            info = ErrorInfo(
                info.code,
                info.category,
                f"gave up after {attempt} attempts (max_attempts={self.max_attempts}): "
                f"{info.message}",
                retryable=False,
            )
        return Outcome(OutcomeKind.DEAD_LETTER, item.delivery, item.message, error=info)

    def _redelivery_delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return max(0.0, retry_after)
        base = self.config.backoff.redelivery_seconds
        return float(min(base * (2 ** max(0, attempt - 1)), 900.0))

    def _error_row(self, tenant: str, message: Message, outcome: Outcome) -> dict[str, Any]:
        assert outcome.error is not None
        return {
            "tenant_id": tenant,
            "processor": self.name,
            "message_id": message.message_id,
            "entity_id": message.entity.id if message.entity else None,
            "error_code": outcome.error.code[:100],
            "category": outcome.error.category.value,
            "error_message": outcome.error.message,
            "attempt": message.attempt,
            "final": outcome.kind is OutcomeKind.DEAD_LETTER,
            "created_at": datetime.now(UTC),
        }

    async def _mark_entity_failed(
        self, conn: AsyncConnection, tenant: str, message: Message, error: ErrorInfo
    ) -> None:
        if not (self.config.enable_state_tracking and message.entity and message.entity.id):
            return
        batch = EntityWriteBatch(
            transitions=[
                PendingTransition(
                    message.entity.id, FAILED_STATE, error.code[:255], self.name, message.message_id
                )
            ]
        )
        await apply_entity_writes(
            conn,
            tenant,
            batch,
            duplicate_detection=False,
            state_tracking=True,
            lock_rows=self.db_is_postgres,
        )

    async def _record_envelope_errors(
        self,
        deliveries: Sequence[ReceivedMessage | Message],
        outcomes: list[Outcome | None],
    ) -> None:
        """Bad input whose tenant is known (attribute or default) is also recorded as an error."""
        if self.store is None:
            return
        for outcome in outcomes:
            if outcome is None or outcome.message is not None or outcome.error is None:
                continue
            tenant = outcome.delivery.attributes.get("tenant_id") or self.default_tenant
            if not tenant or not is_valid_tenant_id(tenant):
                continue  # the dead letter keeps it; no tenant's error list can
            try:
                async with self.store.db.transaction(tenant_id=tenant) as conn:
                    await conn.execute(
                        sa.insert(processing_errors).values(
                            tenant_id=tenant,
                            processor=self.name,
                            message_id=outcome.delivery.message_id,
                            entity_id=None,
                            error_code=outcome.error.code,
                            category=outcome.error.category.value,
                            error_message=outcome.error.message,
                            attempt=outcome.delivery.receive_count,
                            final=True,
                            created_at=datetime.now(UTC),
                        )
                    )
            except (sa.exc.DBAPIError, ApixError):
                # The dead letter is the record that matters; the error row is a convenience.
                self._log.warning("could not record envelope error", exc_info=True)

    # -- without persistence --------------------------------------------------------------
    async def _process_stateless(
        self,
        items: list[_Item],
        outcomes: list[Outcome | None],
        deadline: float | None,
        traced: bool,
    ) -> None:
        sends: list[OutboxRow] = []
        for it in items:
            run = await self._run_one(it.message, None, it.message.tenant_id, deadline, traced)
            if run.ok:
                sends.extend(run.rows)
                outcomes[it.index] = Outcome(
                    OutcomeKind.COMPLETED, it.delivery, it.message, result=run.result
                )
            else:
                assert run.error is not None
                outcomes[it.index] = self._failure_outcome(it, run.error, run.retry_after)
        await self._dispatch(sends, items, outcomes)


def _is_queue(handler: OutputHandler) -> TypeGuard[QueueOutputHandler]:
    # `type() is` first: isinstance against an ABC costs more than the rest of the check.
    return type(handler) is QueueOutputHandler or isinstance(handler, QueueOutputHandler)


def _note_written(result: ProcessingResult | None, written: dict[str, EntityWriteResult]) -> None:
    """List the entities a call created or changed in its result (once each)."""
    if result is None:
        return
    for w in written.values():
        if w.created:
            if w.entity_id not in result.entities_created:
                result.entities_created.append(w.entity_id)
        elif not w.duplicate and w.entity_id not in result.entities_updated:
            result.entities_updated.append(w.entity_id)


def _as_delivery(message: Message, spec: ProcessorSpec) -> ReceivedMessage:
    return ReceivedMessage(
        queue=spec.consumes or spec.name,
        message_id=message.message_id,
        body="",
        receive_count=message.attempt,
        attributes={"tenant_id": message.tenant_id},
    )


def create_processor_handler(
    processor: ProcessorInterface | Any,
    config: ProcessorConfig | None = None,
    *,
    name: str | None = None,
    consumes: str | None = None,
    produces: Sequence[str] = (),
    store: Store | None = None,
    transport: QueueTransport | None = None,
    default_tenant: str | None = None,
    payload: type[BaseModel] | None = None,
) -> ProcessorHandler:
    """Build a handler for a processor outside an :class:`App` (seed 002 factory)."""
    if isinstance(processor, type):
        processor = processor()
    impl = processor if isinstance(processor, ProcessorInterface) else FunctionProcessor(processor)
    proc_name = name or (config.processor_name if config and config.processor_name else "")
    proc_name = proc_name or str(impl.get_processor_info().get("name", type(impl).__name__))
    spec = build_spec(
        proc_name,
        impl,
        consumes=consumes or proc_name,
        schedule=None,
        route=None,
        produces=produces,
        config=config,
        payload=payload,
        options={},
    )
    return ProcessorHandler(spec, store=store, transport=transport, default_tenant=default_tenant)


__all__ = ["Outcome", "OutcomeKind", "ProcessorHandler", "create_processor_handler"]
