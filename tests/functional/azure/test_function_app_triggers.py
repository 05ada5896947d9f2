"""The generated functions called with real azure.functions objects, as the worker calls them:
queue messages settle (return, raise for a retry, poison into Azurite), HTTP answers, timer
ticks run once."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from apix_azure import function_app
from apix_azure.functions import RetryLater
from apix_azure.transport.storage_queue import StorageQueueTransport
from apix_core import App, Message, ProcessorContext
from apix_core.errors import PermanentError, TransientError
from apix_core.message import build_message
from apix_core.processor import BackoffPolicy
from apix_core.tenancy import tenant_context

NO_RETRIES = BackoffPolicy(max_retries=0)


@dataclass
class Deployed:
    app: App
    functions: dict[str, Callable[..., Any]]
    calls: list[Message] = field(default_factory=list)


@pytest.fixture
async def deployed(
    tmp_path: Path, azurite: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Deployed]:
    """A 3-processor app (queue, HTTP, schedule) as a Functions app; storage is Azurite."""
    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    app = App(
        "azfn",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}",
        queue_url=f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}",
        tenant_id="acme",
    )
    calls: list[Message] = []

    @app.processor("ingest", consumes=queue_name, backoff=NO_RETRIES, max_attempts=3)
    async def ingest(message: Message, ctx: ProcessorContext) -> None:
        calls.append(message)
        kind = message.payload.get("fail")
        if kind == "permanent":
            raise PermanentError("order has no lines")
        if kind == "transient":
            raise TransientError("partner API is down")
        ctx.persist_entity(str(message.payload["id"]), "order", "shop", message.payload)

    @app.processor("api", route="POST /orders/{shop}", produces=[queue_name])
    async def api(message: Message, ctx: ProcessorContext) -> None:
        calls.append(message)
        ctx.send(queue_name, {"id": message.payload.get("id")})

    @app.processor("yearly", schedule="0 0 1 1 *")
    async def yearly(message: Message, ctx: ProcessorContext) -> None:
        calls.append(message)

    fapp = function_app(app)
    functions = {str(f.get_function_name()): f.get_user_function() for f in fapp.get_functions()}
    yield Deployed(app, functions, calls)
    await app.close()
    await fapp.apix_runtime.poison_transport().close()  # type: ignore[attr-defined]


def queue_message(body: bytes | str, dequeue_count: int = 1, msg_id: str = "m-1") -> QueueMessage:
    now = datetime.now(UTC)
    return QueueMessage(  # type: ignore[no-untyped-call]
        id=msg_id,
        body=body,
        dequeue_count=dequeue_count,
        pop_receipt="receipt",
        insertion_time=now,
        expiration_time=now,
        time_next_visible=now,
    )


def envelope(payload: dict[str, Any], message_id: str = "order-1") -> str:
    return build_message(message_id=message_id, tenant_id="acme", payload=payload).to_json()


async def poisoned(azurite: str, queue: str) -> list[Any]:
    t = StorageQueueTransport(azurite)
    try:
        return await t.list_dead_letters(queue)
    finally:
        await t.close()


# -- storage queue -------------------------------------------------------------------------


async def test_queue_message_is_processed(
    deployed: Deployed, azurite: str, queue_name: str
) -> None:
    # GIVEN a valid order message as the host hands it over (base64 already decoded)
    body = envelope({"id": "o-1", "total": 10})
    # WHEN the queue function runs
    result = await deployed.functions["ingest"](queue_message(body))
    # THEN it returns normally (the host deletes the message) and the entity is stored
    assert result is None
    with tenant_context("acme"):
        assert deployed.app.store is not None
        assert await deployed.app.store.entities.count() == 1
    # AND a redelivery of the same message is a duplicate: the processor does not run again
    await deployed.functions["ingest"](queue_message(body, dequeue_count=2))
    assert len(deployed.calls) == 1
    assert await poisoned(azurite, queue_name) == []


async def test_permanent_failure_goes_to_the_poison_queue(
    deployed: Deployed, azurite: str, queue_name: str
) -> None:
    # GIVEN a message the processor rejects for good
    body = envelope({"fail": "permanent"})
    # WHEN the queue function runs
    result = await deployed.functions["ingest"](queue_message(body, msg_id="m-perm"))
    # THEN it returns normally (so the host deletes it) ...
    assert result is None
    # ... after apix moved it to <queue>-poison with its error
    [record] = await poisoned(azurite, queue_name)
    assert record.body == body
    assert record.message_id == "m-perm"
    assert record.processor == "ingest"
    assert "order has no lines" in record.error_message
    assert record.error_code != "POISONED"


async def test_retryable_failure_raises_so_the_host_retries(
    deployed: Deployed, azurite: str, queue_name: str
) -> None:
    # GIVEN a message that fails transiently, on its first delivery
    body = envelope({"fail": "transient"})
    # WHEN the queue function runs THEN it raises a typed retry error
    with pytest.raises(RetryLater, match="partner API is down"):
        await deployed.functions["ingest"](queue_message(body, dequeue_count=1))
    # AND nothing was poisoned
    assert await poisoned(azurite, queue_name) == []


async def test_retryable_failure_at_max_attempts_is_poisoned(
    deployed: Deployed, azurite: str, queue_name: str
) -> None:
    # GIVEN a transient failure on the delivery that reaches max_attempts (3)
    body = envelope({"fail": "transient"})
    # WHEN the queue function runs
    result = await deployed.functions["ingest"](queue_message(body, dequeue_count=3))
    # THEN apix poisons it and returns
    assert result is None
    [record] = await poisoned(azurite, queue_name)
    assert record.attempts == 3
    assert "gave up after 3 attempts" in record.error_message


async def test_max_dequeue_count_poisons_before_the_host_does(
    deployed: Deployed, azurite: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the host's maxDequeueCount (2) below the processor's max_attempts (3)
    monkeypatch.setenv("APIX_AZURE_MAX_DEQUEUE_COUNT", "2")
    # WHEN a transient failure reaches it
    result = await deployed.functions["ingest"](
        queue_message(envelope({"fail": "transient"}), dequeue_count=2)
    )
    # THEN apix poisons it with its error (the host would have poisoned it without one)
    assert result is None
    [record] = await poisoned(azurite, queue_name)
    assert "partner API is down" in record.error_message


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe\x00garbage",
        b"",
        b"not json",
        b"[1, 2]",
        b"null",
        "{" * 5000,
        '"just a string"',
        b'"\\ud800"',
        b"\x00" * 64,
        b"true",
        b"1.5",
        b"[" * 40_000,  # deep, and as big as a queue message gets
    ],
    ids=[
        "binary",
        "empty",
        "text",
        "array",
        "null",
        "deep",
        "string",
        "escaped-surrogate",
        "nuls",
        "true",
        "number",
        "very-deep-array",
    ],
)
async def test_garbage_is_poisoned_never_raised(
    deployed: Deployed, azurite: str, queue_name: str, body: bytes | str
) -> None:
    # GIVEN a message that is no apix envelope WHEN the queue function runs
    result = await deployed.functions["ingest"](queue_message(body, msg_id="m-bad"))
    # THEN it returns normally, the processor never ran, and the message is in the poison queue
    assert result is None
    assert deployed.calls == []
    [record] = await poisoned(azurite, queue_name)
    assert record.message_id == "m-bad"


# -- HTTP ----------------------------------------------------------------------------------


def http_request(
    body: bytes, headers: dict[str, str] | None = None, shop: str = "s1"
) -> func.HttpRequest:
    return func.HttpRequest(
        "POST",
        f"http://localhost/api/orders/{shop}",
        headers=headers if headers is not None else {"X-Tenant-Id": "acme"},
        params={"dry": "no"},
        route_params={"shop": shop},
        body=body,
    )


async def test_http_post_is_accepted(deployed: Deployed) -> None:
    # GIVEN a JSON order WHEN POSTed to the route's function
    response = await deployed.functions["api"](http_request(b'{"id": "o-9"}'))
    # THEN 202 with a JSON body, and the processor saw the path and query
    assert response.status_code == 202
    assert response.mimetype == "application/json"
    assert json.loads(response.get_body())["status"] == "completed"
    [message] = deployed.calls
    assert message.tenant_id == "acme"
    assert message.metadata["http"]["path_params"] == {"shop": "s1"}
    assert message.metadata["http"]["query"] == {"dry": "no"}


async def test_http_bad_json_is_400_without_trace(deployed: Deployed) -> None:
    # GIVEN a body that is not JSON WHEN POSTed
    response = await deployed.functions["api"](http_request(b"{not json"))
    # THEN 400 with a typed error and no stack trace
    assert response.status_code == 400
    body = json.loads(response.get_body())
    assert body["error"]
    assert "Traceback" not in response.get_body().decode()
    assert deployed.calls == []


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"{}", {"X-Tenant-Id": "bad tenant!"}, 400),
        (b"{}", {"X-Tenant-Id": "../evil"}, 400),
        (b"{}", {"X-Tenant-Id": "a" * 500}, 400),
        (b"[1]", None, 400),
        (b"null", None, 400),
        (b"\xff\xfe", None, 400),
        (b"[" * 10_000, None, 400),
        (b'{"a": 1', None, 400),
        (b"{}", {"X-Tenant-Id": "acme", "Idempotency-Key": ""}, 400),
        (b"{}", {"X-Tenant-Id": "acme", "Idempotency-Key": "k" * 300}, 400),
        (b" " * (17 * 1024 * 1024), None, 413),
    ],
)
async def test_http_garbage_gets_a_typed_answer(
    deployed: Deployed, body: bytes, headers: dict[str, str] | None, status: int
) -> None:
    # GIVEN a malformed request WHEN it reaches the HTTP function
    response = await deployed.functions["api"](http_request(body, headers))
    # THEN a JSON error with the expected status, and no processor run
    assert response.status_code == status
    assert json.loads(response.get_body())["error"]
    assert deployed.calls == []


def principal(claims: dict[str, str]) -> str:
    doc = {"auth_typ": "aad", "claims": [{"typ": k, "val": v} for k, v in claims.items()]}
    return base64.b64encode(json.dumps(doc).encode()).decode()


async def test_http_tenant_from_app_service_principal(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN tenants taken from the App Service authentication claim "tid"
    monkeypatch.setenv("APIX_TENANT_CLAIM", "tid")
    # WHEN a request carries the principal and a spoofed tenant header
    headers = {"x-ms-client-principal": principal({"tid": "globex"}), "X-Tenant-Id": "acme"}
    response = await deployed.functions["api"](http_request(b"{}", headers))
    # THEN the claim's tenant is used
    assert response.status_code == 202
    assert [m.tenant_id for m in deployed.calls] == ["globex"]
    # AND without a principal the request is refused
    refused = await deployed.functions["api"](http_request(b"{}", {"X-Tenant-Id": "acme"}))
    assert refused.status_code == 401
    assert len(deployed.calls) == 1


# -- timer ---------------------------------------------------------------------------------


async def test_timer_tick_runs_once(deployed: Deployed) -> None:
    # GIVEN the yearly schedule WHEN the timer fires twice for the same tick (one past due)
    await deployed.functions["yearly"](
        TimerRequest(past_due=False, schedule_status={}, schedule={})
    )
    await deployed.functions["yearly"](TimerRequest(past_due=True, schedule_status={}, schedule={}))
    # THEN the processor ran once, for the tick at New Year (UTC)
    [message] = deployed.calls
    scheduled = datetime.fromisoformat(message.payload["scheduled_time"])
    assert (scheduled.month, scheduled.day, scheduled.hour, scheduled.minute) == (1, 1, 0, 0)


# -- outputs through Azurite, by default ----------------------------------------------------


async def test_outputs_default_to_the_storage_account_and_flow_to_the_next_function(
    tmp_path: Path, azurite: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an app that names no queue URL, deployed with AzureWebJobsStorage set (Azurite)
    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    monkeypatch.delenv("APIX_QUEUE_URL", raising=False)
    app = App("flow", database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}")
    seen: list[dict[str, Any]] = []

    @app.processor("api", route="POST /in", produces=[queue_name])
    async def api(message: Message, ctx: ProcessorContext) -> None:
        ctx.send(queue_name, {"id": message.payload["id"]})

    @app.processor("stage2", consumes=queue_name)
    async def stage2(message: Message, ctx: ProcessorContext) -> None:
        seen.append(message.payload)

    fapp = function_app(app)
    fns = {str(f.get_function_name()): f.get_user_function() for f in fapp.get_functions()}
    reader = StorageQueueTransport(azurite)
    try:
        # WHEN a request comes in
        request = func.HttpRequest(
            "POST", "http://h/api/in", headers={"X-Tenant-Id": "acme"}, body=b'{"id": 7}'
        )
        assert (await fns["api"](request)).status_code == 202
        # THEN its output is a base64 message on the Azure queue, as the host's trigger reads it
        [delivery] = await reader.receive(queue_name, max_messages=5)
        # AND the next stage's function, handed that message, processes it
        await fns["stage2"](queue_message(delivery.body, msg_id=delivery.message_id))
        assert seen == [{"id": 7}]
    finally:
        await reader.close()
        await app.close()


# -- Service Bus -----------------------------------------------------------------------------


async def test_servicebus_message_maps_to_a_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.functions.servicebus import ServiceBusMessage

    # GIVEN a Service Bus–triggered app
    monkeypatch.setenv("APIX_AZURE_TRIGGER", "servicebus")
    app = App(
        "sb",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}",
        queue_url=f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}",
        tenant_id="acme",
    )
    seen: list[Message] = []

    @app.processor("orders", consumes="orders", backoff=NO_RETRIES, max_attempts=3)
    async def orders(message: Message, ctx: ProcessorContext) -> None:
        seen.append(message)
        if message.payload.get("fail"):
            raise TransientError("down")

    fapp = function_app(app)
    [fn] = [f.get_user_function() for f in fapp.get_functions()]

    def sb(body: str, delivery_count: int, message_id: str) -> Any:
        return ServiceBusMessage(
            body=body.encode(),
            message_id=message_id,
            delivery_count=delivery_count,
            application_properties={"tenant_id": "acme", "traceparent": "00-abc-def-01"},
            user_properties={},
            session_id="s-1",
            correlation_id="c-1",
        )

    try:
        # WHEN a message arrives THEN it is processed with its delivery count as the attempt
        await fn(sb(envelope({"ok": 1}, "sb-1"), 2, "sb-1"))
        assert [m.attempt for m in seen] == [2]
        # AND a retryable failure raises (the host abandons; Service Bus redelivers)
        with pytest.raises(RetryLater):
            await fn(sb(envelope({"fail": 1}, "sb-2"), 1, "sb-2"))
        # AND garbage completes without raising (Service Bus would only redeliver it)
        await fn(sb("not json", 1, "sb-3"))
        assert len(seen) == 2
    finally:
        await app.close()
