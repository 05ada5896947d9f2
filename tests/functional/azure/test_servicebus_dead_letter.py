"""Service Bus dead-lettering by apix: recorded in the store when the host settles, through the
settlement client when apix settles. No emulator runs here: the tests stop at the SDK boundary
(the real SDK methods and the arguments they are called with), never a faked broker."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from azure.functions.servicebus import ServiceBusMessage

from apix_azure import function_app
from apix_azure.functions import RetryLater
from apix_azure.servicebus_settlement import dead_letter_reason, settlement_call
from apix_core import App, Message, ProcessorContext
from apix_core.errors import ConfigurationError, ErrorInfo, PermanentError, TransientError
from apix_core.message import build_message
from apix_core.processing.outcomes import Outcome, OutcomeKind
from apix_core.processor import BackoffPolicy
from apix_core.transport.base import ReceivedMessage
from apix_core.transport.local import LocalTransport

CONNECTION = "Endpoint=sb://127.0.0.1:9/;SharedAccessKeyName=k;SharedAccessKey=dGVzdA=="


def sb(body: str, message_id: str, delivery_count: int = 1) -> ServiceBusMessage:
    return ServiceBusMessage(
        body=body.encode(),
        message_id=message_id,
        delivery_count=delivery_count,
        application_properties={"tenant_id": "acme"},
        user_properties={},
    )


def envelope(payload: dict[str, Any], message_id: str) -> str:
    return build_message(message_id=message_id, tenant_id="acme", payload=payload).to_json()


@pytest.fixture
async def sb_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    monkeypatch.setenv("APIX_AZURE_TRIGGER", "servicebus")
    app = App(
        "sbdl",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}",
        queue_url=f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}",
        tenant_id="acme",
    )

    @app.processor(
        "orders", consumes="orders", backoff=BackoffPolicy(max_retries=0), max_attempts=3
    )
    async def orders(message: Message, ctx: ProcessorContext) -> None:
        if message.payload.get("fail") == "permanent":
            raise PermanentError("order has no lines")
        if message.payload.get("fail") == "transient":
            raise TransientError("partner down")
        ctx.persist_entity(str(message.payload["id"]), "order", "shop", message.payload)

    fapp = function_app(app)
    [fn] = [f.get_user_function() for f in fapp.get_functions()]
    yield app, fn
    await app.close()


async def store_dead_letters(app: App) -> list[Any]:
    assert app.store is not None
    return await LocalTransport(app.store.db).list_dead_letters("orders")


async def test_non_retryable_failure_is_recorded_and_completed(sb_app: Any) -> None:
    app, fn = sb_app
    # WHEN the processor rejects a message for good
    await fn(sb(envelope({"id": 1, "fail": "permanent"}, "sb-p"), "sb-p"))
    # THEN the function returns (the host completes it) and the store holds the dead letter
    [record] = await store_dead_letters(app)
    assert (record.message_id, record.error_code, record.processor) == (
        "sb-p",
        "VALIDATION_ERROR",
        "orders",
    )
    assert record.tenant_id == "acme"


async def test_attempt_past_max_is_dead_lettered_not_abandoned(sb_app: Any) -> None:
    app, fn = sb_app
    # GIVEN a retryable failure: below max_attempts it raises (the host abandons)
    with pytest.raises(RetryLater):
        await fn(sb(envelope({"id": 2, "fail": "transient"}, "sb-t"), "sb-t", delivery_count=1))
    assert await store_dead_letters(app) == []
    # WHEN the delivery count reaches max_attempts THEN apix dead-letters it and returns
    await fn(sb(envelope({"id": 2, "fail": "transient"}, "sb-t"), "sb-t", delivery_count=3))
    [record] = await store_dead_letters(app)
    assert record.attempts == 3


async def test_garbage_is_recorded_never_raised(sb_app: Any) -> None:
    app, fn = sb_app
    await fn(sb("not json {", "sb-g"))
    [record] = await store_dead_letters(app)
    assert record.body == "not json {"


def _outcome(kind: OutcomeKind) -> Outcome:
    from apix_core.errors import ErrorCategory

    error = ErrorInfo("VALIDATION_ERROR", ErrorCategory.VALIDATION, "x" * 5000, retryable=False)
    delivery = ReceivedMessage(queue="orders", message_id="m", body="{}")
    return Outcome(kind, delivery, error=error)


def test_dead_letter_arguments_fit_the_servicebus_receiver() -> None:
    from azure.servicebus.aio import ServiceBusClient

    # GIVEN a real azure.servicebus receiver (not connected: nothing is sent)
    receiver = ServiceBusClient.from_connection_string(CONNECTION).get_queue_receiver("orders")
    # WHEN apix picks the settlement call of a dead letter
    method, kwargs = settlement_call(receiver, "deadletter", _outcome(OutcomeKind.DEAD_LETTER))
    # THEN it is the SDK's dead_letter_message, and its arguments bind to the SDK's signature
    assert method.__func__ is type(receiver).dead_letter_message
    inspect.signature(method).bind(object(), **kwargs)
    assert kwargs["reason"] == "VALIDATION_ERROR"
    assert kwargs["error_description"].startswith("validation: xxx")
    assert len(kwargs["error_description"]) == 1024
    for verb, name in (("complete", "complete_message"), ("abandon", "abandon_message")):
        method, kwargs = settlement_call(receiver, verb, _outcome(OutcomeKind.COMPLETED))
        assert (method.__name__, kwargs) == (name, {})


def test_dead_letter_arguments_fit_the_functions_settlement_client() -> None:
    ext = pytest.importorskip("azurefunctions.extensions.bindings.servicebus")
    # A real ServiceBusMessageActions without its gRPC channel (only the host opens one).
    actions = ext.ServiceBusMessageActions.__new__(ext.ServiceBusMessageActions)
    method, kwargs = settlement_call(actions, "deadletter", _outcome(OutcomeKind.DEAD_LETTER))
    assert method.__func__ is ext.ServiceBusMessageActions.deadletter
    inspect.signature(method).bind(object(), **kwargs)
    assert kwargs["deadletter_reason"] == "VALIDATION_ERROR"


def test_a_non_client_is_refused_with_what_to_pass() -> None:
    from apix_core.errors import TransportError

    with pytest.raises(TransportError, match="no Service Bus settlement client"):
        settlement_call(object(), "complete", _outcome(OutcomeKind.COMPLETED))


def test_reason_is_short_and_description_clipped() -> None:
    reason, description = dead_letter_reason(_outcome(OutcomeKind.DEAD_LETTER))
    assert reason == "VALIDATION_ERROR"
    assert len(description) == 1024


def test_apix_settlement_binds_the_settlement_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ext = pytest.importorskip("azurefunctions.extensions.bindings.servicebus")
    monkeypatch.setenv("APIX_AZURE_TRIGGER", "servicebus")
    monkeypatch.setenv("APIX_AZURE_SERVICEBUS_SETTLEMENT", "apix")
    app = App("sbsdk", database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")

    @app.processor("orders", consumes="orders")
    async def orders(message: Message, ctx: ProcessorContext) -> None: ...

    [f] = function_app(app).get_functions()
    # THEN the host does not auto-complete (apix settles) ...
    [binding] = [b for b in f.get_bindings() if b.type == "serviceBusTrigger"]
    assert binding.get_dict_repr()["autoCompleteMessages"] is False
    # ... and the one unbound parameter is the settlement client, typed as the worker wants
    fn = f.get_user_function()
    assert list(inspect.signature(fn).parameters) == ["msg", "message_actions"]
    hints = fn.__annotations__
    assert hints["msg"] is ext.ServiceBusReceivedMessage
    assert hints["message_actions"] is ext.ServiceBusMessageActions


def test_unknown_settlement_mode_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIX_AZURE_TRIGGER", "servicebus")
    monkeypatch.setenv("APIX_AZURE_SERVICEBUS_SETTLEMENT", "broker")
    app = App("sbbad", database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")

    @app.processor("orders", consumes="orders")
    async def orders(message: Message, ctx: ProcessorContext) -> None: ...

    with pytest.raises(ConfigurationError, match="'host' or 'apix'"):
        function_app(app)
