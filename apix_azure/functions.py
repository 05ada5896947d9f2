"""An Azure Functions (Python v2 model) app from an apix ``App``: one function per processor.

::

    # function_app.py
    from apix_azure import function_app
    from myproject.pipeline import app as pipeline
    app = function_app(pipeline)

The worker binds arguments by parameter NAME (``inspect.signature`` + ``typing.get_type_hints``),
so each generated function is a fresh ``async def`` whose parameters are exactly the names its
bindings declare (``msg``, ``timer``, ``req``), annotated with the real ``azure.functions``
types; no ``functools.wraps`` (``__wrapped__`` would expose another signature). Warm invocations
reuse the one started ``App`` (its store pool and transport).

Settlement of a queue trigger (the host deletes a message when the function returns, and makes
it visible again after the host.json ``visibilityTimeout`` when it raises):

- COMPLETED / DUPLICATE: return.
- RETRY: raise :class:`RetryLater`, unless the dequeue count has reached
  ``APIX_AZURE_MAX_DEQUEUE_COUNT`` (default 5, the host's ``maxDequeueCount``): then dead-letter.
- DEAD_LETTER (not retryable, or ``max_attempts`` reached), or anything the core could not
  handle: apix puts the message in ``<queue>-poison`` (base64, as the host does) with its error
  in ``<queue>-poison-info`` and returns, so the host deletes the original.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apix_core.constants import TENANT_ATTRIBUTE
from apix_core.errors import ConfigurationError, TransientError, classify
from apix_core.processing.outcomes import Outcome, OutcomeKind
from apix_core.transport.base import ReceivedMessage

if TYPE_CHECKING:
    import azure.functions as func

    from apix_azure.transport.storage_queue import StorageQueueTransport
    from apix_core.app import App
    from apix_core.processor import ProcessorSpec

log = logging.getLogger("apix.azure")

_NOTHING_TO_SETTLE = frozenset({OutcomeKind.COMPLETED, OutcomeKind.DUPLICATE})

TRIGGER_ENV = "APIX_AZURE_TRIGGER"
#: Names of the app settings the bindings read their connection from (as the host does).
STORAGE_SETTING_ENV = "APIX_AZURE_STORAGE_SETTING"
SERVICEBUS_SETTING_ENV = "APIX_AZURE_SERVICEBUS_SETTING"
MAX_DEQUEUE_ENV = "APIX_AZURE_MAX_DEQUEUE_COUNT"
#: ``host`` (default): the host settles Service Bus messages; ``apix``: apix does, through the
#: settlement client of the SDK-type bindings (``azurefunctions-extensions-bindings-servicebus``).
SERVICEBUS_SETTLEMENT_ENV = "APIX_AZURE_SERVICEBUS_SETTLEMENT"
TENANT_CLAIM_ENV = "APIX_TENANT_CLAIM"
DEFAULT_CONNECTION = "AzureWebJobsStorage"
DEFAULT_SERVICEBUS_CONNECTION = "AzureWebJobsServiceBus"
DEFAULT_MAX_DEQUEUE_COUNT = 5  # the host's default maxDequeueCount
PRINCIPAL_HEADER = "x-ms-client-principal"
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_]")


class RetryLater(TransientError):
    """Raised by a queue-triggered function so the host redelivers the message (after
    host.json ``visibilityTimeout``); the message is not lost."""

    code = "AZURE_RETRY"


def function_name(processor: str, taken: set[str]) -> str:
    """A valid, unique Functions name for a processor (letters, digits, ``_``)."""
    base = _INVALID_NAME_CHARS.sub("_", processor)
    if not base[:1].isalpha():
        base = f"p_{base}"
    name, n = base, 2
    while name.lower() in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name.lower())
    return name


def tick_time(expression: str, now: datetime) -> datetime:
    """The schedule tick an invocation at ``now`` belongs to: a tick within 1 s after ``now``
    (the host firing early), else the last tick at or before ``now`` (late or past due)."""
    from croniter import croniter

    from apix_core.schedule import Schedule

    s = Schedule.parse(expression)
    cron = f"{s.minute} {s.hour} {s.day} {s.month} {s.weekday} {s.second}"
    now = now.astimezone(UTC)
    ahead: datetime = croniter(cron, now - timedelta(seconds=1)).get_next(datetime)
    if ahead <= now + timedelta(seconds=1):
        return ahead
    prev: datetime = croniter(cron, now + timedelta(microseconds=1)).get_prev(datetime)
    return prev


def tenant_from_principal(header: str | None, claim: str) -> str | None:
    """The value of ``claim`` in App Service authentication's ``x-ms-client-principal``
    (base64 JSON ``{"claims": [{"typ": ..., "val": ...}]}``); None when absent or unreadable."""
    if not header:
        return None
    try:
        principal = json.loads(base64.b64decode(header, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    claims = principal.get("claims") if isinstance(principal, dict) else None
    for item in claims if isinstance(claims, list) else []:
        if isinstance(item, dict) and item.get("typ") == claim and isinstance(item.get("val"), str):
            return str(item["val"])
    return None


class _Runtime:
    """What the generated functions share: the started app and the dead-letter transport."""

    def __init__(self, pipeline: App) -> None:
        self.app = pipeline
        self._poison: StorageQueueTransport | None = None

    def max_dequeue_count(self) -> int:
        raw = os.environ.get(MAX_DEQUEUE_ENV, "")
        try:
            return int(raw) if raw.strip() else DEFAULT_MAX_DEQUEUE_COUNT
        except ValueError:
            raise ConfigurationError(f"{MAX_DEQUEUE_ENV}={raw!r} is not an integer") from None

    def poison_transport(self) -> StorageQueueTransport:
        from apix_azure.transport.storage_queue import StorageQueueTransport

        if isinstance(self.app.transport, StorageQueueTransport):
            return self.app.transport
        if self._poison is None:
            self._poison = StorageQueueTransport(connection=storage_setting())
        return self._poison

    # -- storage queue -------------------------------------------------------------------
    async def on_queue_message(self, spec: ProcessorSpec, msg: func.QueueMessage) -> None:
        queue = spec.consumes
        assert queue is not None
        dequeue_count = getattr(msg, "dequeue_count", None)
        delivery = ReceivedMessage(
            queue=queue,
            message_id=str(msg.id or ""),
            body=msg.get_body(),
            receipt="",  # the host owns the message: it deletes it when we return
            receive_count=dequeue_count if isinstance(dequeue_count, int) else 1,
            attributes={},
        )
        await self._settle(spec, delivery, await self._process(spec, queue, delivery))

    async def _process(self, spec: ProcessorSpec, queue: str, delivery: ReceivedMessage) -> Outcome:
        try:
            if not self.app.started:  # warm: no start() coroutine per message
                await self.app.start()
            [outcome] = await self.app.process(queue, [delivery])
            return outcome
        except Exception as exc:  # the core should not raise; never lose the message if it does
            log.exception("processor %s failed unexpectedly on %s", spec.name, delivery.message_id)
            info = classify(exc)
            kind = OutcomeKind.RETRY if info.retryable else OutcomeKind.DEAD_LETTER
            return Outcome(kind, delivery, error=info)

    async def _settle(
        self, spec: ProcessorSpec, delivery: ReceivedMessage, outcome: Outcome
    ) -> None:
        if outcome.kind in _NOTHING_TO_SETTLE:
            return
        if outcome.kind is OutcomeKind.RETRY and delivery.receive_count < self.max_dequeue_count():
            error = outcome.error
            raise RetryLater(
                f"{spec.name}: {error.code + ': ' + error.message if error else 'retry'} "
                f"(attempt {delivery.receive_count}; the host redelivers after visibilityTimeout)",
                retry_after=outcome.delay_seconds or None,
            )
        await self._dead_letter(spec, outcome)

    async def _dead_letter(self, spec: ProcessorSpec, outcome: Outcome) -> None:
        from apix_core.processing.outcomes import dead_letter_info

        delivery = outcome.delivery
        info = dead_letter_info(outcome, spec.name)
        # A failure here raises: the host then redelivers (and poisons after maxDequeueCount).
        await self.poison_transport().dead_letter(delivery.queue, delivery, info)
        log.warning(
            "dead-lettered %s from %s: %s %s",
            delivery.message_id,
            delivery.queue,
            info.error_code,
            info.error_message[:200],
        )

    # -- service bus -------------------------------------------------------------------
    async def on_servicebus_message(
        self, spec: ProcessorSpec, msg: Any, actions: Any | None = None
    ) -> None:
        """Settle a Service Bus delivery (see docs/azure.md, "Service Bus").

        Without ``actions`` the host settles: it completes on return and abandons on raise, and
        Service Bus dead-letters after ``MaxDeliveryCount``; a message apix rejects for good is
        recorded in the store's dead letters and completed. With ``actions`` (the Functions
        settlement client, ``ServiceBusMessageActions``, or an ``azure.servicebus``
        ``ServiceBusReceiver``) apix settles itself: complete, abandon, or dead-letter into
        ``<queue>/$deadletterqueue`` with the error as reason and description."""
        queue = spec.consumes
        assert queue is not None
        from apix_azure.servicebus_settlement import servicebus_delivery, settle_servicebus

        delivery = servicebus_delivery(queue, msg)
        outcome = await self._process(spec, queue, delivery)
        if actions is not None:
            verb = await settle_servicebus(actions, msg, outcome)
            if verb == "deadletter":
                log.warning("dead-lettered %s from %s in Service Bus", delivery.message_id, queue)
            return
        if outcome.kind is OutcomeKind.RETRY:
            raise RetryLater(f"{spec.name}: {outcome.error and outcome.error.message}")
        if outcome.kind is OutcomeKind.DEAD_LETTER:
            await self._record_dead_letter(spec, outcome)

    async def _record_dead_letter(self, spec: ProcessorSpec, outcome: Outcome) -> None:
        """The store's dead letters hold what the trigger cannot dead-letter itself; without
        a store (persistence off) the log is the only record."""
        from apix_core.processing.outcomes import dead_letter_info
        from apix_core.transport.local import LocalTransport

        info = dead_letter_info(outcome, spec.name)
        delivery = outcome.delivery
        store = self.app.store
        if store is not None:
            # A failure raises: the host abandons and Service Bus redelivers.
            await LocalTransport(store.db).dead_letter(delivery.queue, delivery, info)
        log.error(
            "processor %s rejected %s for good%s: %s %s",
            spec.name,
            delivery.message_id,
            " (recorded in the store's dead letters)" if store is not None else "",
            info.error_code,
            info.error_message[:200],
        )

    # -- timer --------------------------------------------------------------------------
    async def on_timer(self, spec: ProcessorSpec, timer: func.TimerRequest) -> None:
        from apix_core.topology import schedule_queue

        assert spec.schedule is not None
        when = tick_time(spec.schedule, datetime.now(UTC))
        if timer.past_due:
            log.info("schedule %s is past due; running the tick of %s", spec.name, when)
        message = self.app.timer_message(spec, when)
        queue = schedule_queue(spec)
        delivery = ReceivedMessage(
            queue=queue,
            message_id=message.message_id,
            body=message.to_json(),
            attributes={TENANT_ATTRIBUTE: message.tenant_id},
        )
        await self.app.start()
        [outcome] = await self.app.process(queue, [delivery])
        if outcome.kind is OutcomeKind.RETRY:
            # With a host retry policy the tick re-runs (same id: exactly once); else the next does.
            raise RetryLater(f"schedule {spec.name}: {outcome.error and outcome.error.message}")
        if outcome.kind is OutcomeKind.DEAD_LETTER:
            log.error(
                "schedule %s tick %s failed: %s",
                spec.name,
                when.isoformat(),
                outcome.error and outcome.error.message,
            )

    # -- HTTP ---------------------------------------------------------------------------
    async def on_http(self, spec: ProcessorSpec, req: func.HttpRequest) -> func.HttpResponse:

        assert spec.route is not None
        headers = dict(req.headers)
        claim = os.environ.get(TENANT_CLAIM_ENV, "").strip()
        if claim:
            # The claim, set by App Service authentication, replaces any caller-sent header.
            tenant = tenant_from_principal(_header(headers, PRINCIPAL_HEADER), claim)
            header = self.app.settings.tenant_header
            headers = {k: v for k, v in headers.items() if k.lower() != header.lower()}
            if tenant is None:
                return _json_response(
                    401,
                    {
                        "error": "UNAUTHENTICATED",
                        "message": f"no {claim!r} claim in {PRINCIPAL_HEADER}",
                    },
                )
            headers[header] = tenant
        path = _request_path(spec.route.path, dict(req.route_params or {}), req.url)
        try:
            body = req.get_body()
        except ValueError:
            body = b""
        response = await self.app.handle_http(
            req.method, path, headers=headers, body=body, query=dict(req.params or {})
        )
        return _json_response(response.status_code, response.body, response.headers)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _request_path(pattern: str, route_params: Mapping[str, str], url: str) -> str:
    """The apix path of a request: the processor's pattern with the host's route parameters
    (independent of the host's ``routePrefix``), else the URL's path without ``/api``."""
    segments = pattern.split("/")
    filled = []
    for seg in segments:
        if seg.startswith("{") and seg.endswith("}"):
            value = route_params.get(seg[1:-1])
            if value is None:
                from urllib.parse import urlsplit

                path = urlsplit(url).path
                return path.removeprefix("/api") or "/"
            filled.append(value)
        else:
            filled.append(seg)
    return "/".join(filled)


def _json_response(
    status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> func.HttpResponse:
    import azure.functions as func

    extra = {k: v for k, v in (headers or {}).items() if k.lower() != "content-type"}
    response: func.HttpResponse = func.HttpResponse(
        body=json.dumps(body, separators=(",", ":"), default=str),
        status_code=status,
        headers=extra,
        mimetype="application/json",
        charset="utf-8",
    )
    return response


def storage_setting() -> str:
    return os.environ.get(STORAGE_SETTING_ENV, "").strip() or DEFAULT_CONNECTION


def servicebus_setting() -> str:
    return os.environ.get(SERVICEBUS_SETTING_ENV, "").strip() or DEFAULT_SERVICEBUS_CONNECTION


def _default_outputs(pipeline: App, trigger: str) -> None:
    """Outputs go to the trigger's own service unless the app names a queue URL: Storage
    Queues of the same account (``azure-queue://?connection=<setting>``), or Service Bus."""
    from apix_core.constants import QUEUE_URL_ENV

    # App keeps its constructor overrides privately; nothing public says "no queue URL given".
    overrides: dict[str, Any] = pipeline._overrides
    if (
        overrides.get("queue_url")
        or os.environ.get(QUEUE_URL_ENV)
        or pipeline.transport is not None
        or pipeline._settings is not None
    ):
        return
    if trigger == "servicebus":
        overrides["queue_url"] = f"servicebus://?connection={servicebus_setting()}"
    else:
        overrides["queue_url"] = f"azure-queue://?connection={storage_setting()}"


def _trigger_kind() -> str:
    kind = os.environ.get(TRIGGER_ENV, "storage").strip().lower() or "storage"
    if kind not in ("storage", "servicebus"):
        raise ConfigurationError(f"{TRIGGER_ENV}={kind!r}: use 'storage' or 'servicebus'")
    return kind


def function_app(pipeline: App) -> func.FunctionApp:
    """An ``azure.functions.FunctionApp`` with one function per processor of ``pipeline``."""
    import azure.functions as func

    from apix_azure.transport._settings import queue_prefix
    from apix_azure.transport.servicebus import servicebus_queue_name
    from apix_azure.transport.storage_queue import azure_queue_name
    from apix_core.schedule import Schedule

    runtime = _Runtime(pipeline)
    fapp = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    fapp.apix_runtime = runtime  # type: ignore[attr-defined]  # tests and tools reach the App
    taken: set[str] = set()
    trigger = _trigger_kind()
    prefix = queue_prefix()  # per customer: the transports read the same app setting
    _default_outputs(pipeline, trigger)
    for spec in pipeline.topology:
        name = function_name(spec.name, taken)
        if spec.consumes:
            if trigger == "servicebus":
                settles = _apix_settles_servicebus()
                fn = _servicebus_function(runtime, spec, func, settles)
                deco = fapp.service_bus_queue_trigger(
                    arg_name="msg",
                    queue_name=servicebus_queue_name(prefix + spec.consumes),
                    connection=servicebus_setting(),
                    # apix settles through the settlement client: the host must not as well.
                    auto_complete_messages=False if settles else None,
                )
            else:
                fn = _queue_function(runtime, spec, func)
                deco = fapp.queue_trigger(
                    arg_name="msg",
                    queue_name=azure_queue_name(prefix + spec.consumes),
                    connection=storage_setting(),
                )
        elif spec.schedule:
            fn = _timer_function(runtime, spec, func)
            deco = fapp.timer_trigger(
                schedule=Schedule.parse(spec.schedule).to_ncrontab(), arg_name="timer"
            )
        elif spec.route:
            fn = _http_function(runtime, spec, func)
            deco = fapp.route(
                route=spec.route.path.lstrip("/"),
                trigger_arg_name="req",
                methods=[spec.route.method],
                auth_level=func.AuthLevel.ANONYMOUS,
            )
        else:  # pragma: no cover - build_spec requires one trigger
            continue
        fn.__name__ = fn.__qualname__ = name
        fapp.function_name(name=name)(deco(fn))
    return fapp


def _queue_function(runtime: _Runtime, spec: ProcessorSpec, func: Any) -> Callable[..., Any]:
    from azure.functions import QueueMessage

    async def handler(msg: Any) -> None:
        await runtime.on_queue_message(spec, msg)

    handler.__annotations__ = {"msg": QueueMessage, "return": None}
    return handler


def _timer_function(runtime: _Runtime, spec: ProcessorSpec, func: Any) -> Callable[..., Any]:
    async def handler(timer: Any) -> None:
        await runtime.on_timer(spec, timer)

    handler.__annotations__ = {"timer": func.TimerRequest, "return": None}
    return handler


def _http_function(runtime: _Runtime, spec: ProcessorSpec, func: Any) -> Callable[..., Any]:
    async def handler(req: Any) -> Any:
        return await runtime.on_http(spec, req)

    handler.__annotations__ = {"req": func.HttpRequest, "return": func.HttpResponse}
    return handler


def _apix_settles_servicebus() -> bool:
    mode = os.environ.get(SERVICEBUS_SETTLEMENT_ENV, "host").strip().lower() or "host"
    if mode not in ("host", "apix"):
        raise ConfigurationError(f"{SERVICEBUS_SETTLEMENT_ENV}={mode!r}: use 'host' or 'apix'")
    return mode == "apix"


def _servicebus_function(
    runtime: _Runtime, spec: ProcessorSpec, func: Any, settles: bool
) -> Callable[..., Any]:
    if not settles:

        async def handler(msg: Any) -> None:
            await runtime.on_servicebus_message(spec, msg)

        handler.__annotations__ = {"msg": func.ServiceBusMessage, "return": None}
        return handler
    try:
        from azurefunctions.extensions.bindings import servicebus as sdk_types
    except ImportError:
        raise ConfigurationError(
            f"{SERVICEBUS_SETTLEMENT_ENV}=apix needs the Functions Service Bus SDK-type "
            "bindings: pip install azurefunctions-extensions-bindings-servicebus "
            "(and add it to requirements.txt)"
        ) from None

    # The worker passes the settlement client to the one parameter no binding declares.
    async def settling(msg: Any, message_actions: Any) -> None:
        await runtime.on_servicebus_message(spec, msg, message_actions)

    settling.__annotations__ = {
        "msg": sdk_types.ServiceBusReceivedMessage,
        "message_actions": sdk_types.ServiceBusMessageActions,
        "return": None,
    }
    return settling


__all__ = ["RetryLater", "function_app", "function_name", "tenant_from_principal", "tick_time"]
