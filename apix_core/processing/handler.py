"""``ProcessorHandler``: the exactly-once path of one processor, as a straight descent.

For a batch of deliveries (one tenant at a time):

1. parse each body into a :class:`Message` (bad input → a ``DEAD_LETTER`` outcome, typed error);
2. open a unit of work (``unit_of_work.py``: ONE transaction, the batch claimed); completed
   work only re-dispatches its unsent outputs;
3. invoke the processor for each claimed message (``invoke.py``: user code, whose context only
   buffers); keep each success's writes in the unit of work, fail the rest;
4. complete the unit of work (entities written, outbox rows built), record failures, write the
   outputs; commit;
5. dispatch the outbox rows (``outbox.Dispatcher``) and return one :class:`Outcome` per delivery
   for a settler (``settle.py``) to apply.

A crash before commit rolls everything back; a crash after commit leaves unsent outbox rows that
the redelivery of the same input re-sends under the same deterministic ids.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, MutableSequence, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from apix_core.constants import DEFAULT_MAX_ATTEMPTS, TENANT_ATTRIBUTE
from apix_core.errors import (
    ApixError,
    DeadlineExceededError,
    EnvelopeError,
    ErrorCategory,
    ErrorInfo,
    ReadOnlyRouteError,
    TransientError,
    classify,
    is_transient,
    redact_error_message,
)
from apix_core.message import Message
from apix_core.observability.metrics import BatchRecorder
from apix_core.observability.tracing import tracing_enabled
from apix_core.outbox.dispatcher import Dispatcher
from apix_core.processing.gc_tuning import MIN_GC_BATCH, batch_gc
from apix_core.processing.invoke import Invocation, Invoker
from apix_core.processing.outcomes import Outcome, OutcomeKind, RetryPolicy
from apix_core.processing.read_only import ReadOnlyAccess, check_no_writes
from apix_core.processing.unit_of_work import ErrorRecord, KeptAnswer, error_record
from apix_core.processor import (
    FunctionProcessor,
    ProcessorConfig,
    ProcessorInterface,
    ProcessorSpec,
    build_spec,
)
from apix_core.result import ProcessingResult
from apix_core.tenancy import is_valid_tenant_id, tenant_context
from apix_core.transport.base import ReceivedMessage

if TYPE_CHECKING:
    from apix_core.outputs import OutboxRow
    from apix_core.processing.unit_of_work import MetadataStore
    from apix_core.transport.base import Producer

_log = logging.getLogger("apix.handler")


@dataclass(slots=True)
class _Item:
    index: int
    delivery: ReceivedMessage
    message: Message


class ProcessorHandler:
    """Runs one registered processor with idempotency, outbox, retries and error routing."""

    def __init__(
        self,
        spec: ProcessorSpec,
        *,
        store: MetadataStore | None = None,
        transport: Producer | None = None,
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
        self.invoker = Invoker(spec, self.store)  # type: ignore[arg-type]
        self.retry = RetryPolicy(self.max_attempts, self.config.backoff.redelivery_seconds)
        self.dispatcher = Dispatcher(transport, self.store)
        self._log = self.invoker.log
        #: Set by ``App.handle_http`` for an HTTP route: a completed outcome -> the answer to
        #: keep with its claim (None: nothing to keep). Queue processors leave it None.
        self.keep_answer: Callable[[Outcome | None], KeptAnswer | None] | None = None
        # Read once (deployment configuration): os.environ costs a few µs a batch.
        self._tracer_env = bool(os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"))
        self._metrics = BatchRecorder()

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
        t0, q = time.perf_counter(), self.spec.consumes or self.name
        record = self._metrics.record
        if len(deliveries) < MIN_GC_BATCH:
            return record(self.name, q, await self._handle_batch(deliveries, deadline), t0)
        with batch_gc():  # the batch's objects die by refcount: no collections meanwhile
            return record(self.name, q, await self._handle_batch(deliveries, deadline), t0)

    async def _handle_batch(
        self, deliveries: Sequence[ReceivedMessage | Message], deadline: float | None
    ) -> list[Outcome]:
        if self.store is None:
            return await self._handle_stateless(deliveries, deadline)
        outcomes: list[Outcome | None] = [None] * len(deliveries)
        groups: dict[str, list[_Item]] = {}
        rejected: list[Outcome] = []
        for i, raw in enumerate(deliveries):
            try:
                delivery, message = self._parse(raw)
            except EnvelopeError as exc:
                outcomes[i] = outcome = self._rejected(raw, exc)
                rejected.append(outcome)
                continue
            groups.setdefault(message.tenant_id, []).append(_Item(i, delivery, message))

        traced = _traced(self._tracer_env) if groups else False
        for tenant, items in groups.items():
            with tenant_context(tenant):
                await self._process_group(tenant, items, outcomes, deadline, traced)
        if rejected:  # no coroutine per batch when every body parsed
            await self._record_rejected(rejected)
        return [o for o in outcomes if o is not None]

    async def handle_read(self, message: Message) -> Outcome:
        """Run a read-only route's processor (``spec.read_only``) over one request: nothing
        claimed or recorded (no idempotency, outbox or error row; never a duplicate), its reads
        each a tenant-scoped read transaction, any write a :class:`ReadOnlyRouteError`. Failures
        are logged and answered, not recorded."""
        t0 = time.perf_counter()
        item = _Item(0, _as_delivery(message, self.spec), message)
        store = self.invoker.store  # the SQL store ctx.entities reads (None: no persistence)
        access = ReadOnlyAccess(self.spec, store) if store is not None else None
        with tenant_context(message.tenant_id):
            inv = await self.invoker.invoke(message, access, None, _traced(self._tracer_env))
            if inv.ok:
                try:
                    check_no_writes(self.spec, inv.ctx, inv.handlers)
                except ReadOnlyRouteError as exc:
                    inv = self.invoker.failed(inv.ctx, exc)
        if inv.ok:
            outcome = Outcome(OutcomeKind.COMPLETED, item.delivery, message, result=inv.result)
        elif inv.error is not None and inv.error.category is ErrorCategory.TRANSIENT:
            outcome = self._failure(item, inv)  # 503 + Retry-After: the client may try again
        else:
            # Nothing to redeliver: a crash is answered 500 now (a validation error 400).
            outcome = Outcome(OutcomeKind.DEAD_LETTER, item.delivery, message, error=inv.error)
        return self._metrics.record(self.name, self.name, [outcome], t0)[0]

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

    def _parse(self, raw: ReceivedMessage | Message) -> tuple[ReceivedMessage, Message]:
        """The delivery and its message; raises :class:`EnvelopeError` for a body that is no
        message (``_handle_stateless`` has this inline)."""
        if type(raw) is ReceivedMessage or isinstance(raw, ReceivedMessage):
            count = raw.receive_count
            return raw, Message.create_from_queue_data(
                raw.body,
                default_tenant=raw.attributes.get(TENANT_ATTRIBUTE) or self.default_tenant,
                transport_message_id=raw.message_id,
                attempt=count if count > 1 else 1,
            )
        return _as_delivery(raw, self.spec), raw

    def _rejected(self, raw: ReceivedMessage | Message, exc: EnvelopeError) -> Outcome:
        """The DEAD_LETTER outcome of a delivery whose body is no message (logged)."""
        assert isinstance(raw, ReceivedMessage)  # a Message needs no parsing
        self._log.warning(
            "rejected malformed message",
            extra={"message_id": raw.message_id, "error_code": exc.code, "error": str(exc)},
        )
        return Outcome(OutcomeKind.DEAD_LETTER, raw, error=classify(exc))

    # -- one tenant's batch ---------------------------------------------------------------
    async def _process_group(
        self,
        tenant: str,
        items: list[_Item],
        outcomes: list[Outcome | None],
        deadline: float | None,
        traced: bool,
    ) -> None:
        assert self.store is not None
        ids = list(dict.fromkeys(it.message.message_id for it in items))
        try:
            async with self.store.unit_of_work(
                tenant=tenant,
                processor=self.name,
                config=self.config,
                message_ids=ids,
                producer=self.transport,
            ) as uow:
                done = [i for i in ids if i not in uow.claimed]
                redispatch = await uow.pending_outputs(done)
                ran: dict[int, tuple[_Item, Invocation]] = {}
                failed: list[tuple[_Item, Outcome]] = []
                seen: set[str] = set()
                late: list[str] = []
                for it in items:
                    mid = it.message.message_id
                    if mid not in uow.claimed or mid in seen:
                        outcomes[it.index] = Outcome(OutcomeKind.DUPLICATE, it.delivery, it.message)
                        continue
                    seen.add(mid)
                    if _past(deadline):
                        outcomes[it.index] = self._late(it)
                        late.append(mid)
                        continue
                    inv = await self.invoker.invoke(it.message, uow.access, deadline, traced)
                    if inv.ok:
                        try:
                            await uow.add(it.index, inv)
                            ran[it.index] = (it, inv)
                            continue
                        except Exception as keep_error:
                            inv = self.invoker.failed(inv.ctx, keep_error)
                    else:
                        await uow.discard()
                    failed.append((it, self._failure(it, inv)))
                completed = await uow.complete()
                for index, build_error in completed.failed:
                    it, inv = ran.pop(index)
                    inv = self.invoker.failed(inv.ctx, build_error)
                    failed.append((it, self._failure(it, inv)))
                for it, inv in ran.values():
                    outcomes[it.index] = Outcome(
                        OutcomeKind.COMPLETED, it.delivery, it.message, result=inv.result
                    )
                for it, outcome in failed:
                    outcomes[it.index] = outcome
                if self.keep_answer is not None and ran:
                    # HTTP routes: a keyed request's answer commits with its claim.
                    await uow.keep_answers(
                        [a for it, _ in ran.values() if (a := self.keep_answer(outcomes[it.index]))]
                    )
                await uow.fail([outcome for _, outcome in failed])
                await uow.release(late)
                rows = await uow.enqueue(completed.rows)
        except Exception as exc:
            # Nothing was committed. A database that is unavailable or contended fails the
            # whole group alike: every delivery is redelivered. Anything else may be one
            # message's doing (a value its column cannot hold...): run the group's messages
            # one per transaction so the others succeed and the culprit alone fails.
            if len(items) > 1 and not is_transient(exc):
                self._log.warning(
                    "transaction failed; retrying its messages one by one",
                    extra={"error": f"{type(exc).__name__}: {exc}"[:500]},
                )
                for it in items:
                    await self._process_group(tenant, [it], outcomes, deadline, traced)
                return
            await self._fail_group(tenant, items, outcomes, exc)
            return
        await self._dispatch(redispatch + rows, items, outcomes)

    def _late(self, item: _Item) -> Outcome:
        """The deadline came before ``item`` was started: not run, redelivered at once."""
        self._log.warning(
            "invocation deadline reached; message left for redelivery",
            extra={"message_id": item.message.message_id, "error_code": "DEADLINE_EXCEEDED"},
        )
        error = classify(DeadlineExceededError("not started: the invocation's deadline came"))
        return Outcome(OutcomeKind.RETRY, item.delivery, item.message, error=error)

    def _failure(self, item: _Item, inv: Invocation) -> Outcome:
        assert inv.error is not None
        return self.retry.outcome(item.delivery, item.message, inv.error, inv.retry_after)

    async def _fail_group(
        self, tenant: str, items: list[_Item], outcomes: list[Outcome | None], exc: Exception
    ) -> None:
        """Outcomes for a group whose transaction failed: retry up to ``max_attempts``, then
        dead-letter (never a poison loop), with a best-effort processing-error row."""
        database_down = is_transient(exc)
        info = ErrorInfo(
            "DATABASE_ERROR" if database_down else "STORE_WRITE_FAILED",
            ErrorCategory.TRANSIENT if database_down else ErrorCategory.UNEXPECTED,
            redact_error_message(exc),
            retryable=True,
        )
        self._log.warning(
            "transaction failed",
            exc_info=info.category is ErrorCategory.UNEXPECTED,
            extra={"error_code": info.code, "error": info.message[:500]},
        )
        records = []
        for it in items:
            outcome = self.retry.outcome(it.delivery, it.message, info)
            outcomes[it.index] = outcome
            records.append(error_record(it.message, outcome))
        if database_down:
            return  # do not insist on writing to it
        assert self.store is not None
        try:
            await self.store.record_errors(tenant, self.name, records)
        except Exception:
            self._log.warning("could not record the failure", exc_info=True)

    async def _record_rejected(self, rejected: list[Outcome]) -> None:
        """Bad input whose tenant is known (attribute or default) is also recorded as an error."""
        if self.store is None:
            return
        for outcome in rejected:
            assert outcome.error is not None
            tenant = outcome.delivery.attributes.get(TENANT_ATTRIBUTE) or self.default_tenant
            if not tenant or not is_valid_tenant_id(tenant):
                continue  # the dead letter keeps it; no tenant's error list can
            record = ErrorRecord(
                outcome.delivery.message_id, outcome.error, outcome.delivery.receive_count, True
            )
            try:
                await self.store.record_errors(tenant, self.name, [record])
            except Exception as exc:
                if not isinstance(exc, ApixError) and not _is_database_error(exc):
                    raise
                # The dead letter is the record that matters; the error row is a convenience.
                self._log.warning("could not record envelope error", exc_info=True)

    async def _dispatch(
        self,
        rows: list[OutboxRow],
        items: list[_Item],
        outcomes: MutableSequence[Outcome] | MutableSequence[Outcome | None],
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
                    outcomes[it.index] = self.retry.outcome(it.delivery, it.message, info)

    # -- without persistence --------------------------------------------------------------
    async def _handle_stateless(
        self, deliveries: Sequence[ReceivedMessage | Message], deadline: float | None
    ) -> list[Outcome]:
        """Nothing to claim or commit: parse, run and judge each delivery in one pass, in
        order, in its tenant's scope; then send what the successes produced. (The warm path of
        a Lambda or Azure function: ``_parse`` and ``_past`` are inline, and no per-message
        object is made that the outcome does not need.)"""
        outcomes: list[Outcome] = []
        sends: list[OutboxRow] = []
        sent: list[_Item] = []  # the successes that produced rows (a failed dispatch retries)
        create = Message.create_from_queue_data
        default_tenant = self.default_tenant
        invoke = self.invoker.runner(_traced(self._tracer_env))
        monotonic = time.monotonic
        completed = OutcomeKind.COMPLETED
        scope: tenant_context | None = None
        tenant: str | None = None
        try:
            for raw in deliveries:
                try:
                    if type(raw) is ReceivedMessage or isinstance(raw, ReceivedMessage):
                        delivery = raw
                        count = raw.receive_count
                        message = create(
                            raw.body,
                            default_tenant=raw.attributes.get(TENANT_ATTRIBUTE) or default_tenant,
                            transport_message_id=raw.message_id,
                            attempt=count if count > 1 else 1,
                        )
                    else:
                        delivery, message = _as_delivery(raw, self.spec), raw
                except EnvelopeError as exc:
                    outcomes.append(self._rejected(raw, exc))
                    continue
                if message.tenant_id != tenant:
                    if scope is not None:
                        scope.__exit__()
                        scope = None
                    entering = tenant_context(message.tenant_id)
                    tenant = entering.__enter__()
                    scope = entering
                if deadline is not None and monotonic() >= deadline:
                    outcomes.append(self._late(_Item(len(outcomes), delivery, message)))
                    continue
                inv = await invoke(message, None, deadline)
                if inv.ok and inv.handlers:
                    try:
                        rows = inv.build_rows(self.name, self.transport)
                    except Exception as exc:
                        inv = self.invoker.failed(inv.ctx, exc)
                    else:
                        sends.extend(rows)
                        sent.append(_Item(len(outcomes), delivery, message))
                if inv.ok:
                    # Positional: a keyword argument costs a little more per message.
                    outcomes.append(Outcome(completed, delivery, message, None, 0.0, inv.result))
                else:
                    outcomes.append(self._failure(_Item(len(outcomes), delivery, message), inv))
        finally:
            if scope is not None:
                scope.__exit__()
        if sends:  # no coroutine per batch when nothing was sent
            await self._dispatch(sends, sent, outcomes)
        return outcomes


def _traced(tracer_env: bool) -> bool:
    """:func:`tracing_enabled`, without importing the OpenTelemetry API (~15 ms of a cold
    start) while nothing has: installing an SDK provider imports it, and a provider named by
    ``OTEL_PYTHON_TRACER_PROVIDER`` (``tracer_env``: it is set) is loaded by the API itself."""
    if not tracer_env and "opentelemetry.trace" not in sys.modules:
        return False
    return tracing_enabled()


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _is_database_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("sqlalchemy", "asyncpg", "sqlite3"))


def _as_delivery(message: Message, spec: ProcessorSpec) -> ReceivedMessage:
    return ReceivedMessage(
        queue=spec.consumes or spec.name,
        message_id=message.message_id,
        body="",
        receive_count=message.attempt,
        attributes={TENANT_ATTRIBUTE: message.tenant_id},
    )


def create_processor_handler(
    processor: ProcessorInterface | Any,
    config: ProcessorConfig | None = None,
    *,
    name: str | None = None,
    consumes: str | None = None,
    produces: Sequence[str] = (),
    store: MetadataStore | None = None,
    transport: Producer | None = None,
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
