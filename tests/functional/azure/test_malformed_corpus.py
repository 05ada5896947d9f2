"""A corpus of malformed Azure inputs, table-driven: every generated function answers with a
typed error and a poison / dead-letter record (or a JSON error for HTTP), never an unhandled
exception and never a processor run."""

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
from azure.functions.servicebus import ServiceBusMessage
from azure.functions.timer import TimerRequest

from apix_azure import function_app
from apix_azure.transport.storage_queue import StorageQueueTransport
from apix_core import App, Message, ProcessorContext
from apix_core.processor import BackoffPolicy
from apix_core.transport.local import LocalTransport

pytestmark = pytest.mark.azure

ONCE = BackoffPolicy(max_retries=0)


def envelope(**fields: Any) -> str:
    doc: dict[str, Any] = {
        "apix": 1,
        "message_id": "o-1",
        "correlation_id": "o-1",
        "tenant_id": "acme",
        "type": "queue",
        "payload": {"id": 1},
        "metadata": {},
        "created_at": "2026-11-30T10:00:00+00:00",
    }
    for key, value in fields.items():
        if value is ...:
            doc.pop(key)
        else:
            doc[key] = value
    return json.dumps(doc)


def _deep(levels: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for _ in range(levels):
        doc = {"a": doc}
    return doc


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def principal(doc: Any) -> str:
    return b64(json.dumps(doc))


# (id, kind, input) — kind: queue (QueueMessage kwargs), servicebus (ServiceBusMessage kwargs),
# http (headers, body), timer (TimerRequest kwargs).
CORPUS: list[tuple[str, str, Any]] = [
    # -- Storage Queue messages (the host hands over the base64-decoded body) --------------
    ("queue-double-base64", "queue", {"body": b64(envelope())}),
    ("queue-bad-base64-text", "queue", {"body": "SGVsbG8=!!not base64"}),
    ("queue-invalid-utf8", "queue", {"body": b"\xc3\x28\xa0\xa1"}),
    ("queue-truncated-json", "queue", {"body": envelope()[:-7]}),
    ("queue-unknown-type", "queue", {"body": envelope(type="bogus")}),
    ("queue-no-version", "queue", {"body": envelope(apix=...)}),
    ("queue-future-version", "queue", {"body": envelope(apix=99)}),
    ("queue-no-tenant", "queue", {"body": envelope(tenant_id=...)}),
    ("queue-bad-tenant", "queue", {"body": envelope(tenant_id="../../etc")}),
    ("queue-payload-list", "queue", {"body": envelope(payload=[1, 2])}),
    ("queue-payload-too-deep", "queue", {"body": envelope(payload=_deep(300))}),
    ("queue-message-id-object", "queue", {"body": envelope(message_id={"a": 1})}),
    ("queue-bad-created-at", "queue", {"body": envelope(created_at="yesterday")}),
    ("queue-metadata-string", "queue", {"body": envelope(metadata="x")}),
    ("queue-zero-dequeue", "queue", {"body": "garbage", "dequeue_count": 0}),
    ("queue-no-dequeue-count", "queue", {"body": "garbage", "dequeue_count": None}),
    ("queue-no-id", "queue", {"body": "garbage", "id": None}),
    # -- Service Bus messages ---------------------------------------------------------------
    ("sb-not-json", "servicebus", {"body": b"<xml/>"}),
    ("sb-invalid-utf8", "servicebus", {"body": b"\xff\xff\xff"}),
    ("sb-no-tenant", "servicebus", {"body": envelope(tenant_id=...).encode()}),
    ("sb-wrong-envelope", "servicebus", {"body": b'{"order": 7}'}),
    ("sb-oversize-garbage", "servicebus", {"body": b"x" * (300 * 1024)}),
    ("sb-no-delivery-count", "servicebus", {"body": b"?", "delivery_count": None}),
    ("sb-negative-delivery-count", "servicebus", {"body": b"?", "delivery_count": -4}),
    ("sb-no-message-id", "servicebus", {"body": b"?", "message_id": None}),
    (
        "sb-odd-properties",
        "servicebus",
        {"body": b"?", "application_properties": {b"tenant_id": b"acme", "n": None, "x": 1.5}},
    ),
    ("sb-tenant-property-only", "servicebus", {"body": b'{"apix": 1}'}),
    ("sb-odd-session", "servicebus", {"body": b"?", "session_id": "\x00" * 3}),
    # -- HTTP requests --------------------------------------------------------------------
    ("http-not-json", "http", ({"X-Tenant-Id": "acme"}, b"<html>", 400)),
    ("http-invalid-utf8", "http", ({"X-Tenant-Id": "acme"}, b"\xff\xfe\xfd", 400)),
    ("http-array", "http", ({"X-Tenant-Id": "acme"}, b"[1]", 400)),
    ("http-no-tenant", "http", ({}, b"{}", 400)),
    ("http-tenant-with-spaces", "http", ({"X-Tenant-Id": "a b"}, b"{}", 400)),
    ("http-tenant-unicode", "http", ({"X-Tenant-Id": "ácme"}, b"{}", 400)),
    (
        "http-empty-idempotency-key",
        "http",
        ({"X-Tenant-Id": "acme", "Idempotency-Key": ""}, b"{}", 400),
    ),
    ("http-oversize", "http", ({"X-Tenant-Id": "acme"}, b" " * (17 * 1024 * 1024), 413)),
    ("principal-not-base64", "principal", ({"x-ms-client-principal": "%%%"}, b"{}", 401)),
    ("principal-not-json", "principal", ({"x-ms-client-principal": b64("nope")}, b"{}", 401)),
    ("principal-no-claims", "principal", ({"x-ms-client-principal": principal({})}, b"{}", 401)),
    (
        "principal-claims-not-list",
        "principal",
        ({"x-ms-client-principal": principal({"claims": "tid"})}, b"{}", 401),
    ),
    (
        "principal-claim-value-number",
        "principal",
        ({"x-ms-client-principal": principal({"claims": [{"typ": "tid", "val": 7}]})}, b"{}", 401),
    ),
    (
        "principal-bad-tenant-claim",
        "principal",
        (
            {"x-ms-client-principal": principal({"claims": [{"typ": "tid", "val": "a b"}]})},
            b"{}",
            400,
        ),
    ),
    # -- timer invocations ----------------------------------------------------------------
    ("timer-past-due-string", "timer", {"past_due": "yes", "schedule_status": None}),
    ("timer-garbage-status", "timer", {"past_due": False, "schedule_status": {"Last": "x"}}),
    (
        "timer-none-everything",
        "timer",
        {"past_due": None, "schedule_status": None, "schedule": None},
    ),
]


@dataclass
class Corpus:
    functions: dict[str, Callable[..., Any]]
    sb_function: Callable[..., Any]
    sb_app: App
    timer_function: Callable[..., Any]
    calls: list[Message] = field(default_factory=list)


@pytest.fixture
async def corpus(
    tmp_path: Path, azurite: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Corpus]:
    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    calls: list[Message] = []
    app = App(
        "corpus",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}",
        queue_url=f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}",
    )

    @app.processor("ingest", consumes=queue_name, backoff=ONCE, max_attempts=3)
    async def ingest(message: Message, ctx: ProcessorContext) -> None:
        calls.append(message)

    @app.processor("api", route="POST /orders/{shop}")
    async def api(message: Message, ctx: ProcessorContext) -> None:
        calls.append(message)

    fapp = function_app(app)
    functions = {str(f.get_function_name()): f.get_user_function() for f in fapp.get_functions()}

    monkeypatch.setenv("APIX_AZURE_TRIGGER", "servicebus")
    sb_app = App(
        "corpus-sb",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'sb.db'}",
        queue_url=f"sqlite+aiosqlite:///{tmp_path / 'sbq.db'}",
    )

    @sb_app.processor("orders", consumes="orders", backoff=ONCE, max_attempts=3)
    async def orders(message: Message, ctx: ProcessorContext) -> None:
        calls.append(message)

    [sb_fn] = [f.get_user_function() for f in function_app(sb_app).get_functions()]
    monkeypatch.delenv("APIX_AZURE_TRIGGER")
    timer_app = App(
        "corpus-timer", database_url=f"sqlite+aiosqlite:///{tmp_path / 't.db'}", tenant_id="acme"
    )

    @timer_app.processor("tick", schedule="*/5 * * * *")
    async def tick(message: Message, ctx: ProcessorContext) -> None:
        pass

    [timer_fn] = [f.get_user_function() for f in function_app(timer_app).get_functions()]
    yield Corpus(functions, sb_fn, sb_app, timer_fn, calls)
    await app.close()
    await sb_app.close()
    await timer_app.close()
    await fapp.apix_runtime.poison_transport().close()  # type: ignore[attr-defined]


def queue_message(**kw: Any) -> QueueMessage:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "id": "m-bad",
        "dequeue_count": 1,
        "pop_receipt": "r",
        "insertion_time": now,
        "expiration_time": now,
        "time_next_visible": now,
        **kw,
    }
    return QueueMessage(**fields)  # type: ignore[no-untyped-call]


def servicebus_message(**kw: Any) -> ServiceBusMessage:
    fields: dict[str, Any] = {
        "message_id": "sb-bad",
        "delivery_count": 1,
        "application_properties": {},
        "user_properties": {},
        **kw,
    }
    return ServiceBusMessage(**fields)


def test_the_corpus_has_at_least_30_inputs() -> None:
    assert len(CORPUS) >= 30
    assert len({case_id for case_id, _, _ in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize(("kind", "given"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
async def test_malformed_input_is_typed_and_recorded(
    corpus: Corpus,
    azurite: str,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    given: Any,
) -> None:
    if kind == "queue":
        # WHEN the queue function gets it THEN it returns and the poison queue has its error
        assert await corpus.functions["ingest"](queue_message(**given)) is None
        transport = StorageQueueTransport(azurite)
        try:
            [record] = await transport.list_dead_letters(queue_name)
        finally:
            await transport.close()
        assert record.error_code not in ("", "UNKNOWN", "POISONED")
        assert record.error_message
    elif kind == "servicebus":
        # WHEN the Service Bus function gets it THEN it returns and the store records it
        assert await corpus.sb_function(servicebus_message(**given)) is None
        assert corpus.sb_app.store is not None
        [record] = await LocalTransport(corpus.sb_app.store.db).list_dead_letters("orders")
        assert record.error_code not in ("", "UNKNOWN")
        assert record.processor == "orders"
    elif kind in ("http", "principal"):
        if kind == "principal":
            monkeypatch.setenv("APIX_TENANT_CLAIM", "tid")
        headers, body, status = given
        request = func.HttpRequest(
            "POST",
            "http://localhost/api/orders/s1",
            headers=headers,
            route_params={"shop": "s1"},
            body=body,
        )
        # WHEN the HTTP function gets it THEN a JSON error with its status, no stack trace
        response = await corpus.functions["api"](request)
        text = response.get_body().decode()
        assert (response.status_code, "Traceback" in text) == (status, False)
        assert json.loads(text)["error"]
    else:
        # WHEN the timer fires oddly THEN the tick runs (or is a duplicate), never raises
        assert await corpus.timer_function(TimerRequest(**given)) is None  # type: ignore[no-untyped-call]
    assert corpus.calls == []
