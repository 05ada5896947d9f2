"""Running a processor over one message: payload model, validation, the call, retries.

Nothing here touches the store: the context buffers entity writes and outputs, and a unit of
work (``unit_of_work.py``) writes them. The only way back to the store is the context's
:class:`~apix_core.context.EntityAccess`, handed in by the orchestrator (read-your-writes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from apix_core.context import ProcessorContext
from apix_core.errors import (
    ConfigurationError,
    ErrorCategory,
    ErrorInfo,
    PayloadValidationError,
    PermanentError,
    TopologyError,
    classify,
    redact_text,
)
from apix_core.hashing import deterministic_id
from apix_core.observability.logging import LOG_FIELDS
from apix_core.observability.tracing import extract_trace_context, get_tracer, inject_trace_context
from apix_core.outputs import OutboxRow, OutputHandler, QueueOutputHandler, RowContext, kind_of
from apix_core.processor import (
    FunctionProcessor,
    ProcessorInterface,
    ProcessorSpec,
    is_async_processor,
)
from apix_core.result import HttpResponse, ProcessingResult

if TYPE_CHECKING:
    from apix_core.context import EntityAccess
    from apix_core.message import Message
    from apix_core.store.repositories import Store
    from apix_core.transport.base import Producer


class ReportedFailure(Exception):
    """A processor returned ``ProcessingResult.create_failure``."""

    def __init__(self, result: ProcessingResult) -> None:
        super().__init__(result.error_message or "processor reported failure")
        self.result = result
        self.retryable = result.can_retry


@dataclass(slots=True)
class Invocation:
    """What one call of the processor produced (its writes wait in ``ctx``)."""

    ok: bool
    ctx: ProcessorContext
    #: None when the processor returned None (a success): the :class:`Outcome` makes the
    #: empty result only when something reads it.
    result: ProcessingResult | None = None
    handlers: list[OutputHandler] = field(default_factory=list)
    #: The trace context outgoing messages carry (the processing span's, or the incoming one).
    trace_context: dict[str, str] = field(default_factory=dict)
    error: ErrorInfo | None = None
    retry_after: float | None = None
    #: Outbox rows of the outputs, once a unit of work has built them (shared empty tuple
    #: until then: one fewer allocation per message).
    rows: Sequence[OutboxRow] = ()

    def build_rows(
        self, processor: str, producer: Producer | None, now: datetime | None = None
    ) -> Sequence[OutboxRow]:
        """The outbox rows of the output handlers (ids derive from the input message), created
        at ``now`` (default: this instant; a unit of work passes its own, one for the batch).

        Raises what an output kind raises for an output that can never be delivered."""
        if not self.handlers:
            return ()
        message = self.ctx.message
        tenant = message.tenant_id
        rc = RowContext(
            tenant,
            processor,
            message,
            self.trace_context,
            datetime.now(UTC) if now is None else now,
            self.ctx.written,
            producer,
        )
        rows: list[OutboxRow] = []
        for seq, handler in enumerate(self.handlers):
            kind = kind_of(handler)
            if kind is not None:  # None: NoOpOutputHandler
                row_id = deterministic_id(tenant, processor, message.message_id, str(seq))
                rows.append(kind.to_row(handler, row_id, seq, rc))
        return rows

    def note_written(self) -> None:
        """List the entities the call created or changed in its result (once each)."""
        written = self.ctx.written
        if not written or not self.ok:
            return
        result = self.result
        if result is None:
            result = self.result = ProcessingResult()
        for w in written.values():
            if w.created:
                if w.entity_id not in result.entities_created:
                    result.entities_created.append(w.entity_id)
            elif not w.duplicate and w.entity_id not in result.entities_updated:
                result.entities_updated.append(w.entity_id)


class Invoker:
    """Calls one registered processor, with its payload model, validation and retry policy."""

    def __init__(self, spec: ProcessorSpec, store: Store | None) -> None:
        self.spec = spec
        self.name = spec.name
        self.config = spec.config
        self.processor = spec.processor
        self.store = store
        self._is_async = is_async_processor(self.processor)
        # Call plain functions directly: the adapter's extra frame shows on no-op processors.
        self._process: Any = self.processor.process
        if isinstance(self.processor, FunctionProcessor):
            fn = self.processor.func
            self._process = fn if self.processor.takes_ctx else (lambda m, _c: fn(m))
        self.log = logging.getLogger(f"apix.processor.{self.name}")
        # The default validate_message accepts everything: skip the call per message.
        validate = getattr(type(self.processor), "validate_message", None)
        self._validates = validate is not ProcessorInterface.validate_message or (
            "validate_message" in getattr(self.processor, "__dict__", ())
        )

    def invoke(
        self,
        message: Message,
        access: EntityAccess | None,
        deadline: float | None,
        traced: bool,
    ) -> Coroutine[Any, Any, Invocation]:
        """Run the processor over ``message`` (await it); never raises for the processor's
        failures. A plain function handing back the coroutine: one frame less per message."""
        return self.runner(traced)(message, access, deadline)

    def runner(
        self, traced: bool
    ) -> Callable[[Message, EntityAccess | None, float | None], Coroutine[Any, Any, Invocation]]:
        """:meth:`invoke` for many messages (a batch): the coroutine function to call per
        message, chosen once. Untraced (no SDK installed), the incoming trace context passes
        through unchanged."""
        return self._run_in_span if traced else self._run

    async def _run_in_span(
        self, message: Message, access: EntityAccess | None, deadline: float | None
    ) -> Invocation:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        with get_tracer().start_as_current_span(
            f"process {self.name}",
            context=extract_trace_context(message.trace_context),
            kind=SpanKind.CONSUMER,
            attributes={
                "apix.processor": self.name,
                "apix.tenant_id": message.tenant_id,
                "messaging.message.id": message.message_id,
                "messaging.message.conversation_id": message.correlation_id,
                "apix.attempt": message.attempt,
            },
        ) as span:
            inv = await self._run(message, access, deadline, inject_trace_context())
            if not inv.ok and inv.error is not None:
                span.set_status(Status(StatusCode.ERROR, inv.error.message))
                span.set_attribute("apix.error_code", inv.error.code)
            return inv

    async def _run(
        self,
        message: Message,
        access: EntityAccess | None,
        deadline: float | None,
        trace_context: dict[str, str] | None = None,
    ) -> Invocation:
        start = time.perf_counter()
        if trace_context is None:
            trace_context = message.trace_context
        fields = {
            "tenant_id": message.tenant_id,
            "correlation_id": message.correlation_id,
            "message_id": message.message_id,
            "processor": self.name,
        }
        base = LOG_FIELDS.get()  # push_log_fields, inline
        token = LOG_FIELDS.set({**base, **fields} if base else fields)
        try:
            ctx = ProcessorContext.for_call(
                message, self.name, self.spec.produces, self.store, self.log, access, deadline
            )
            try:
                if self.spec.payload_model is not None:
                    ctx.payload = self._validated_payload(message)
                if self._validates and not self.processor.validate_message(message):
                    raise PermanentError(f"processor {self.name!r} rejected the message")
                try:
                    if self._is_async:
                        # The common case inline (no _call frame per message).
                        raw = await self._process(message, ctx)
                        result = None if raw is None else self._result(raw)
                    else:
                        result = await self._call(message, ctx)
                except Exception as exc:
                    result = await self._retry(exc, message, ctx, access, deadline)
                if result is None:
                    handlers = ctx.outputs
                elif ctx.outputs:
                    handlers = [*result.output_handlers, *ctx.outputs]
                else:
                    handlers = result.output_handlers
                if handlers:
                    self._check_topology(handlers)
                    if self.config.is_source_processor:
                        self._persist_output_entities(message, ctx, handlers)
                if message.entity is not None and self.config.success_state and message.entity.id:
                    ctx.transition(message.entity.id, self.config.success_state, "processed")
            except Exception as exc:
                return self.failed(ctx, exc, start)
            if self.log.isEnabledFor(logging.DEBUG):
                self.log.debug(
                    "message processed",
                    extra={
                        "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                        "outputs": len(handlers),
                    },
                )
            return Invocation(True, ctx, result, handlers, trace_context)
        finally:
            LOG_FIELDS.reset(token)

    def failed(
        self, ctx: ProcessorContext, exc: Exception, start: float | None = None
    ) -> Invocation:
        """The failed :class:`Invocation` of ``exc`` (logged once)."""
        retry_after = None
        if isinstance(exc, ReportedFailure):
            r = exc.result
            retry_after = r.retry_after_seconds
            category = ErrorCategory.TRANSIENT if r.can_retry else ErrorCategory.VALIDATION
            info = ErrorInfo(
                r.error_code or "PROCESSING_ERROR",
                category,
                redact_text(r.error_message or "failed"),
                r.can_retry,
            )
        else:
            info = classify(exc, self.processor)
            retry_after = info.retry_after
        # An unexpected error's traceback once per message (its first attempt), trimmed to the
        # user's frames; later attempts log one line.
        with_traceback = info.category is ErrorCategory.UNEXPECTED and ctx.message.attempt <= 1
        self.log.warning(
            "processor failed" if info.code != "PROCESSOR_BUG" else "processor bug",
            exc_info=(type(exc), exc, user_traceback(exc.__traceback__))
            if with_traceback
            else None,
            extra={
                "error_code": info.code,
                "error_category": info.category.value,
                "duration_ms": round((time.perf_counter() - start) * 1000, 3) if start else None,
            },
        )
        return Invocation(False, ctx, error=info, retry_after=retry_after)

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

    async def _retry(
        self,
        first_error: Exception,
        message: Message,
        ctx: ProcessorContext,
        access: EntityAccess | None,
        deadline: float | None,
    ) -> ProcessingResult | None:
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
        from tenacity import (
            AsyncRetrying,
            retry_if_exception,
            stop_after_attempt,
            stop_after_delay,
            wait_random_exponential,
        )

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
                    await access.discard()
                if attempt.retry_state.attempt_number == 1:
                    await asyncio.sleep(wait(attempt.retry_state))
                return await self._call(message, ctx)
        raise AssertionError("unreachable")  # pragma: no cover

    def _is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, ReportedFailure):
            return exc.retryable and exc.result.retry_after_seconds is None
        info = classify(exc, self.processor)
        # can_retry() returning False vetoes in-invocation retries too; a failure that asks
        # for a precise delay (retry_after) waits for redelivery instead.
        return info.category is ErrorCategory.TRANSIENT and info.retryable and not info.retry_after

    async def _call(self, message: Message, ctx: ProcessorContext) -> ProcessingResult | None:
        if self._is_async:
            raw = await self._process(message, ctx)
        elif self.config.run_sync_in_thread:
            # The context reaches back into this loop for ctx.get_entity() from the thread.
            ctx.loop = asyncio.get_running_loop()
            raw = await asyncio.to_thread(self._process, message, ctx)
        else:
            raw = self._process(message, ctx)
        return None if raw is None else self._result(raw)

    def _result(self, raw: Any) -> ProcessingResult:
        """The :class:`ProcessingResult` of what the processor returned (not None); raises
        :class:`ReportedFailure` for a result that reports a failure."""
        result = raw if isinstance(raw, ProcessingResult) else self._normalize(raw)
        if not result.success:
            raise ReportedFailure(result)
        return result

    def _normalize(self, raw: Any) -> ProcessingResult:
        if isinstance(raw, dict):
            if len(self.spec.produces) != 1:
                raise TopologyError(
                    f"processor {self.name!r} returned a dict; that shorthand needs exactly one "
                    f"queue in produces= (it has {list(self.spec.produces)})"
                )
            return ProcessingResult(
                output_handlers=[QueueOutputHandler(self.spec.produces[0], payload=raw)]
            )
        if isinstance(raw, HttpResponse):
            # An HTTP processor's own answer (status and body of its choosing).
            return ProcessingResult(http=raw)
        raise ConfigurationError(
            f"processor {self.name!r} returned {type(raw).__name__}; "
            "return a ProcessingResult, an HttpResponse, a dict (one produces queue) or None"
        )

    def _check_topology(self, handlers: list[OutputHandler]) -> None:
        for h in handlers:
            if isinstance(h, QueueOutputHandler) and h.destination not in self.spec.produces:
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


_APIX_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def user_traceback(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` without apix's own frames (the handler, invoker, thread hops): what the user
    needs to find their bug. All of it when every frame is apix's (a bug of ours)."""
    frames: list[TracebackType] = []
    cur = tb
    while cur is not None:
        if not os.path.abspath(cur.tb_frame.f_code.co_filename).startswith(_APIX_DIR):
            frames.append(cur)
        cur = cur.tb_next
    if not frames:
        return tb
    trimmed: TracebackType | None = None
    for frame in reversed(frames):
        trimmed = TracebackType(trimmed, frame.tb_frame, frame.tb_lasti, frame.tb_lineno)
    return trimmed
