"""``lambda_handler(app, "processor")``: one Lambda function per processor.

The handler recognises its trigger from the event's shape (SQS batch, API Gateway 1.0/2.0 or
Function URL, EventBridge schedule / Scheduler / custom event, Kinesis or DynamoDB Streams
batch), builds deliveries and drives the core. One event loop (``run_sync``) and one started
``App`` per warm container. See docs/aws.md.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

from apix_aws.errors import InvocationRetryError, MalformedEventError, UnsupportedEventError
from apix_aws.events import apigw, eventbridge, sqs, streams
from apix_aws.settle import batch_response
from apix_core.constants import QUEUE_URL_ENV
from apix_core.errors import ApixError, redact_error_message
from apix_core.processing.outcomes import Outcome, OutcomeKind, dead_letter_info
from apix_core.transport.base import Consumer, DeadLetterInfo, ReceivedMessage

if TYPE_CHECKING:
    from apix_aws.transport.sqs import SqsTransport
    from apix_core import App
    from apix_core.processor import ProcessorSpec

_log = logging.getLogger("apix.aws")

#: Set by the Lambda runtime in every function's environment.
LAMBDA_FUNCTION_ENV = "AWS_LAMBDA_FUNCTION_NAME"

#: Seconds kept back from the Lambda's remaining time: settle and answer before the timeout.
DEADLINE_MARGIN_ENV = "APIX_LAMBDA_DEADLINE_MARGIN_SECONDS"
DEFAULT_DEADLINE_MARGIN = 2.0

_settle_transports: dict[tuple[str, str], SqsTransport] = {}
_NOTHING_TO_SETTLE = frozenset({OutcomeKind.COMPLETED, OutcomeKind.DUPLICATE})

Handler = Callable[[dict[str, Any], Any], "dict[str, Any] | None"]
T = TypeVar("T")


def lambda_handler(app: App, processor: str) -> Handler:
    """The Lambda entry point of ``processor``: ``handler = lambda_handler(app, "normalize")``."""
    if processor not in app.specs:
        from apix_core.errors import ConfigurationError

        raise ConfigurationError(f"no processor named {processor!r} in app {app.name!r}")
    if os.environ.get(LAMBDA_FUNCTION_ENV) and not os.environ.get(QUEUE_URL_ENV):
        # On Lambda the queues are SQS queues unless configured otherwise (Settings are read
        # when the app starts, so an App built with its own queue_url keeps it).
        os.environ[QUEUE_URL_ENV] = "sqs://"
    return _LambdaHandler(app, processor)


class _LambdaHandler:
    def __init__(self, app: App, processor: str) -> None:
        self.app = app
        self.processor = processor
        self._prepared = False
        # sqs:// straight to its factory: no scan of every installed package's entry points
        # at cold start (the registry's fallback).
        from apix_core.transport.registry import register_transport

        register_transport("sqs", _sqs_transport, replace=False)
        # Read once, when the function's module is imported: os.environ costs µs a batch.
        try:
            margin = float(os.environ.get(DEADLINE_MARGIN_ENV) or DEFAULT_DEADLINE_MARGIN)
        except ValueError:
            margin = DEFAULT_DEADLINE_MARGIN
        self._margin = max(0.0, margin)

    @property
    def spec(self) -> ProcessorSpec:
        return self.app.specs[self.processor]

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any] | None:
        run_sync = _run_sync or _load_run_sync()
        if type(event) is not dict and not isinstance(event, Mapping):
            self._unsupported(f"event is a {type(event).__name__}, not an object")
        if sqs.is_sqs(event):
            # Eager: a batch that never waits (the embedded store, no persistence) completes
            # without a turn of the event loop (run_sync).
            return run_sync(self._sqs(event, context), eager=True)
        if apigw.is_http(event):
            if self.spec.route is None:
                self._unsupported("an HTTP event, but the processor has no route", "route")
            return run_sync(self._http(event))
        if eventbridge.is_eventbridge(event):
            return run_sync(self._eventbridge(event, context))
        if streams.is_stream(event):
            if not self.spec.consumes:
                self._unsupported("a stream batch, but the processor consumes no queue", "stream")
            return run_sync(self._streams(event, context))
        self._unsupported("an event of no known shape")

    def _unsupported(self, what: str, missing: str | None = None) -> NoReturn:
        """A deployment mistake (an event source wired to the wrong function, or a trigger the
        processor lacks): raised, so Lambda marks the invocation failed (its ``Errors`` metric
        and alarm), an asynchronous event goes to Lambda's retries and on-failure destination
        and a stream batch waits in its shard until the fix, never silently dropped. Logged
        once here, without a traceback; the message says what to change."""
        fix = _unsupported_fix(self.app, self.spec, missing)
        got = what if what.startswith(("a ", "an ")) else f"an unusable event ({what})"
        exc = UnsupportedEventError(f"processor {self.processor!r} got {got}. {fix}")
        _log.error(
            str(exc),
            extra={"processor": self.processor, "error_code": exc.code, "event": what},
        )
        raise exc

    # -- shared ----------------------------------------------------------------------------
    async def _started(self) -> App:
        await self.app.start()  # once per container: start() is a no-op when started
        if not self._prepared:
            self._prepared = True
            await self._prepare()
        return self.app

    async def _prepare(self) -> None:
        """Cold-start warm-up: resolve the queues this processor sends to (URL and size limit,
        cached per process), all at once, so the first dispatch waits for none of it. A
        processor that sends nothing does nothing here (boto3 stays unloaded)."""
        queues = list(self.spec.produces)
        prepare = getattr(self.app.transport, "prepare", None)
        if not queues or prepare is None:
            return
        try:
            await prepare(queues)
        except Exception as exc:
            # Not fatal: the first send resolves again and raises its own typed error.
            _log.warning(
                "could not resolve the output queues at cold start",
                extra={"queues": queues, "error": redact_error_message(exc)},
            )

    def _deadline(self, context: Any) -> float | None:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return None
        try:
            seconds = float(remaining()) / 1000
        except (TypeError, ValueError):
            return None
        return time.monotonic() + max(0.0, seconds - self._margin)

    async def _run(
        self, deliveries: Sequence[ReceivedMessage], deadline: float | None
    ) -> list[Outcome]:
        app = self.app
        if not (self._prepared and app.started):  # warm: no start() coroutine per batch
            app = await self._started()
        return await app.handler(self.processor).handle_batch(deliveries, deadline=deadline)

    # -- SQS ------------------------------------------------------------------------------
    async def _sqs(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        records_raw = event.get("Records") or []
        queue = self.spec.consumes
        if not queue:
            # Never fail an SQS batch: report every record, so the queue's redrive policy
            # moves them to its dead-letter queue instead of dropping them.
            exc = UnsupportedEventError(
                f"processor {self.processor!r} got an SQS batch but consumes no queue"
            )
            _log.error(str(exc), extra={"processor": self.processor, "error_code": exc.code})
            return batch_response(_item_ids(records_raw))
        deliveries: list[ReceivedMessage] = []
        unusable: list[tuple[object, MalformedEventError]] = []
        parse = sqs.parse_delivery
        for raw in records_raw:
            try:
                deliveries.append(parse(queue, raw))
            except MalformedEventError as exc:
                # Without a messageId it cannot be reported (that fails the whole batch):
                # it goes to the dead-letter queue instead, after the batch.
                unusable.append((raw, exc))
        accepted = records_raw
        if unusable:
            skipped = {id(raw) for raw, _ in unusable}
            accepted = [raw for raw in records_raw if id(raw) not in skipped]
            await self._dead_letter_unusable(queue, unusable)
        if not deliveries:
            return batch_response([])
        deadline = self._deadline(context)
        try:
            if sqs.is_fifo(event):
                records = sqs.records_of(accepted, deliveries)
                failed = await self._sqs_fifo(queue, records, deadline)
            else:
                outcomes = await self._run(deliveries, deadline)
                failed = []  # the common case: Lambda deletes them all, no SQS call here
                for o in outcomes:  # a loop, not all(<generator>): a few µs a batch less
                    if o.kind not in _NOTHING_TO_SETTLE:
                        records = sqs.records_of(accepted, deliveries)
                        failed = await self._settler().settle(queue, records, outcomes)
                        break
        except Exception as exc:
            _log.error(
                "SQS batch not processed; reporting every record for redelivery",
                extra={"queue": queue, "error": redact_error_message(exc)},
            )
            failed = _item_ids(accepted)
        return batch_response(failed)

    async def _sqs_fifo(
        self, queue: str, records: Sequence[sqs.SqsRecord], deadline: float | None
    ) -> list[str]:
        """One record at a time, in order: a group stops at its first failure (that record and
        every later one of the group are reported, unprocessed); other groups go on."""
        settler = self._settler()
        stopped: set[str | None] = set()
        failed: list[str] = []
        for record in records:
            if record.group in stopped:
                failed.append(record.item_id)
                continue
            outcomes = await self._run([record.delivery], deadline)
            reported = await settler.settle(queue, [record], outcomes)
            if reported:
                failed.extend(reported)
                stopped.add(record.group)
        return failed

    async def _dead_letter_unusable(
        self, queue: str, unusable: Sequence[tuple[object, MalformedEventError]]
    ) -> None:
        """Records AWS would never send (no ``messageId``, not an object): kept, not lost, in
        the queue's dead-letter queue with their error; logged when even that fails."""
        from apix_core.transport.base import DeadLetterInfo

        for raw, exc in unusable:
            delivery = sqs.unusable_delivery(queue, raw)
            info = DeadLetterInfo(exc.code, "validation", str(exc), 1, self.processor)
            try:
                await self._settle_transport().dead_letter(queue, delivery, info)
            except Exception as failed:
                _log.error(
                    "unusable SQS record could not be dead-lettered; skipped",
                    extra={
                        "error_code": exc.code,
                        "error": str(exc),
                        "queue": queue,
                        "dead_letter_error": redact_error_message(failed),
                    },
                )
            else:
                _log.error(
                    "unusable SQS record dead-lettered",
                    extra={"error_code": exc.code, "error": str(exc), "queue": queue},
                )

    def _settler(self) -> Any:
        from apix_aws.settle import SqsSettler

        return SqsSettler(self._settle_transport(), self.processor)

    def _settle_transport(self) -> SqsTransport:
        from apix_aws.transport.sqs import SqsTransport, from_url

        transport = self.app.transport
        if isinstance(transport, SqsTransport):
            return transport
        url = os.environ.get("APIX_QUEUE_URL") or ""
        if not url.startswith("sqs://"):
            url = "sqs://"
        key = (url, os.environ.get("APIX_SQS_ENDPOINT_URL") or "")
        cached = _settle_transports.get(key)
        if cached is None:
            cached = _settle_transports[key] = from_url(url)
        return cached

    # -- API Gateway / Function URLs --------------------------------------------------------
    async def _http(self, event: Mapping[str, Any]) -> dict[str, Any]:
        app = await self._started()
        try:
            request = apigw.parse_request(event, app.settings.tenant_header)
        except MalformedEventError as exc:
            return apigw.proxy_response(
                400,
                _json({"error": exc.code, "message": str(exc)}),
                {"Content-Type": "application/json"},
            )
        response = await app.handle_http(
            request.method,
            request.path,
            headers=request.headers,
            body=request.body,
            query=request.query,
        )
        return apigw.proxy_response(response.status_code, response.text(), response.headers)

    # -- EventBridge --------------------------------------------------------------------------
    async def _eventbridge(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        spec = self.spec
        if eventbridge.is_schedule(event):
            if not spec.schedule:
                self._unsupported("a schedule event, but the processor has no schedule", "schedule")
            app = await self._started()
            message = app.timer_message(spec, eventbridge.fire_time(event))
            outcome = await app.handler(self.processor).handle(
                message, deadline=self._deadline(context)
            )
        else:
            if not spec.consumes:
                self._unsupported(
                    "an EventBridge event, but the processor consumes no queue", "event"
                )
            delivery = eventbridge.custom_delivery(spec.consumes or "", event)
            (outcome,) = await self._run([delivery], self._deadline(context))
        return self._single(outcome)

    def _single(self, outcome: Outcome) -> dict[str, Any]:
        """A one-message invocation: RETRY raises (Lambda's async retries run it again);
        DEAD_LETTER is logged and recorded as a processing error by the core, not raised."""
        message_id = outcome.message.message_id if outcome.message else None
        if outcome.kind is OutcomeKind.RETRY:
            error = outcome.error
            raise InvocationRetryError(
                f"{self.processor}: {error.code if error else 'RETRY'}: "
                f"{error.message if error else 'not processed'}"
            )
        if outcome.kind is OutcomeKind.DEAD_LETTER:
            _log.error(
                "message failed for good",
                extra={
                    "processor": self.processor,
                    "message_id": message_id,
                    "error_code": outcome.error.code if outcome.error else None,
                },
            )
        return {"outcome": outcome.kind.value, "message_id": message_id}

    # -- Kinesis / DynamoDB Streams ---------------------------------------------------------
    async def _streams(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        queue = self.spec.consumes or ""
        records: list[streams.StreamRecord] = []
        positions: list[int] = []  # each record's place in the batch
        unusable: list[tuple[int, object, MalformedEventError]] = []
        for position, raw in enumerate(event.get("Records") or []):
            try:
                records.append(streams.parse_record(queue, raw))
            except MalformedEventError as exc:
                # Never reported (a record that can never be processed would hold the shard):
                # dead-lettered after the batch.
                unusable.append((position, raw, exc))
            else:
                positions.append(position)
        outcomes: list[Outcome] = []
        reported = [False] * len(records)
        if records:
            try:
                outcomes = await self._run([r.delivery for r in records], self._deadline(context))
            except Exception as exc:
                _log.error(
                    "stream batch not processed; reporting it from its first record",
                    extra={"queue": queue, "error": redact_error_message(exc)},
                )
                reported = [True] * len(records)
            else:
                reported = [o.kind is OutcomeKind.RETRY for o in outcomes]
        # Lambda retries a shard from its reported record: a record after it that failed for
        # good, or is unusable, comes back with it and is dead-lettered then (once, not on
        # every retry).
        retried_from = _retried_from(records, positions, reported)
        if outcomes:
            for outcome, record, position in zip(outcomes, records, positions, strict=True):
                if outcome.kind is OutcomeKind.DEAD_LETTER and position < retried_from.get(
                    record.shard, position + 1
                ):
                    await self._stream_dead_letter(queue, outcome)
        if unusable:
            await self._stream_dead_letter_unusable(
                queue,
                [
                    (raw, exc)
                    for position, raw, exc in unusable
                    if position < retried_from.get(streams.record_shard(raw), position + 1)
                ],
            )
        return batch_response(_first_per_shard(records, reported))

    async def _stream_dead_letter(self, queue: str, outcome: Outcome) -> None:
        """Skipped (never reported: that would hold the shard); recorded as a dead letter on
        the app's transport when it keeps them, else only as the core's processing error."""
        info = dead_letter_info(outcome, self.processor)
        _log.error(
            "stream record failed for good; skipped",
            extra={
                "queue": queue,
                "message_id": outcome.delivery.message_id,
                "error_code": info.error_code,
            },
        )
        await self._keep_stream_dead_letter(queue, outcome.delivery, info)

    async def _keep_stream_dead_letter(
        self, queue: str, delivery: ReceivedMessage, info: DeadLetterInfo
    ) -> bool:
        """On the app's transport when it keeps dead letters; whether it was kept there."""
        transport = self.app.transport
        if not isinstance(transport, Consumer):
            return False
        try:
            await transport.dead_letter(queue, delivery, info)
        except Exception as exc:
            _log.warning(
                "could not record the stream record's dead letter",
                extra={"queue": queue, "error": redact_error_message(exc)},
            )
            return False
        return True

    async def _stream_dead_letter_unusable(
        self, queue: str, unusable: Sequence[tuple[object, MalformedEventError]]
    ) -> None:
        """Records the core never sees (no sequence number, data not base64, a DynamoDB value
        of no known type): skipped, never reported, but kept like a failed record — a dead
        letter on the app's transport when it keeps them, and a processing-error row of the
        default tenant (stream records carry no tenant attribute), for ``apix dlq list`` and
        ``apix errors``. Logged when neither can be written."""
        from apix_core.errors import classify
        from apix_core.processing.unit_of_work import ErrorRecord
        from apix_core.tenancy import is_valid_tenant_id

        if not unusable:
            return
        started = False
        store: Any = None
        tenant: str | None = None
        try:
            handler = (await self._started()).handler(self.processor)
        except Exception as exc:
            _log.error(
                "app not started: unusable stream records are only logged",
                extra={"queue": queue, "error": redact_error_message(exc)},
            )
        else:
            started = True
            store = handler.store
            default = handler.default_tenant
            tenant = default if default and is_valid_tenant_id(default) else None
        for raw, problem in unusable:
            delivery = streams.unusable_delivery(queue, raw)
            error = classify(problem)
            info = DeadLetterInfo(
                error.code, error.category.value, error.message, 1, self.processor, tenant
            )
            kept = started and await self._keep_stream_dead_letter(queue, delivery, info)
            recorded = False
            if store is not None and tenant is not None:
                record = ErrorRecord(delivery.message_id, error, 1, True)
                try:
                    await store.record_errors(tenant, self.processor, [record])
                    recorded = True
                except Exception as failed:
                    _log.warning(
                        "could not record the unusable stream record's error",
                        extra={"queue": queue, "error": redact_error_message(failed)},
                    )
            _log.error(
                "unusable stream record skipped"
                + ("; dead-lettered" if kept else "")
                + ("; error recorded" if recorded else ""),
                extra={
                    "queue": queue,
                    "message_id": delivery.message_id,
                    "error_code": problem.code,
                    "error": error.message,
                },
            )


class _RunSync(Protocol):
    def __call__(self, coro: Coroutine[Any, Any, T], *, eager: bool = ...) -> T: ...


_run_sync: _RunSync | None = None


def _load_run_sync() -> _RunSync:
    """``run_sync``, imported on the first invocation, not at module level: apix_core.runtime's
    package loads the local runner (cold start); later calls skip the import statement."""
    global _run_sync
    from apix_core.runtime.invoke import run_sync

    _run_sync = run_sync
    return run_sync


def _sqs_transport(url: str, **kwargs: Any) -> Any:
    from apix_aws.transport.sqs import from_url

    return from_url(url, **kwargs)


def _first_per_shard(records: Sequence[streams.StreamRecord], failed: Sequence[bool]) -> list[str]:
    first: dict[str, str] = {}
    for record, bad in zip(records, failed, strict=True):
        if bad and record.shard not in first:
            first[record.shard] = record.sequence_number
    return list(first.values())


def _retried_from(
    records: Sequence[streams.StreamRecord], positions: Sequence[int], reported: Sequence[bool]
) -> dict[str, int]:
    """Per shard, the batch position Lambda retries it from (its first reported record)."""
    first: dict[str, int] = {}
    for record, position, bad in zip(records, positions, reported, strict=True):
        if bad and record.shard not in first:
            first[record.shard] = position
    return first


#: The start of ``_unsupported``'s description → the decorator argument that accepts that
#: event, with an example.
#: The trigger an event needs (``_unsupported``'s ``missing``) -> the processor argument that
#: gives it, and an example of that argument.
_TRIGGER_OF_EVENT = {
    "route": ("route", 'route="POST /orders"'),
    "schedule": ("schedule", 'schedule="*/5 * * * *"'),
    "event": ("consumes", 'consumes="events"'),
    "stream": ("consumes", 'consumes="changes"'),
}


def _unsupported_fix(app: App, spec: ProcessorSpec, missing: str | None) -> str:
    """What to change for an event the processor has no trigger for: the processor's own
    triggers, and which processors' functions accept such an event (or which argument to add)."""
    own = [
        f"{name} {value}"
        for name, value in (
            ("route", f"'{spec.route.method} {spec.route.path}'" if spec.route else None),
            ("schedule", repr(spec.schedule) if spec.schedule else None),
            ("consumes", repr(spec.consumes) if spec.consumes else None),
        )
        if value
    ]
    triggers = f"it is triggered by {', '.join(own)}" if own else "it has no trigger"
    trigger = _TRIGGER_OF_EVENT.get(missing) if missing else None
    if trigger is None:
        return (
            f"Its function takes the events AWS sends to Lambda ({triggers}): an SQS, Kinesis "
            "or DynamoDB Streams batch, an API Gateway or Function URL request, an EventBridge "
            "event; to send it a message directly, use `apix send` or the queue, not a bare "
            "invocation."
        )
    argument, example = trigger
    takers = [
        repr(other.name)
        for other in app.specs.values()
        if other.name != spec.name and getattr(other, argument)
    ]
    wire = (
        f"wire this event source to the function of processor {' or '.join(takers)} instead"
        if takers
        else "no processor of the app accepts it"
    )
    return (
        f"The event source is wired to the wrong function ({triggers}): {wire}, "
        f"or add {example} to @app.processor({spec.name!r}, ...) if it should handle it."
    )


def _item_ids(records: object) -> list[str]:
    out: list[str] = []
    for r in records if isinstance(records, list) else []:
        item = r.get("messageId") if isinstance(r, Mapping) else None
        if isinstance(item, str) and item:
            out.append(item)
    return out


def _json(body: Mapping[str, Any]) -> str:
    import json

    return json.dumps(body, separators=(",", ":"))


__all__ = ["ApixError", "lambda_handler"]
