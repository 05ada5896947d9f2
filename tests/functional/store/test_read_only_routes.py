"""Read-only HTTP routes (issue #17): a GET/HEAD/OPTIONS route that produces nothing records
nothing — no idempotency row, outbox row or error row — answers the data every time (never
"duplicate"), and a write in it is a typed ``READ_ONLY_ROUTE`` error. Write methods keep their
exactly-once behaviour. Through ``App.handle_http`` and ``apix serve``'s ASGI app."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from apix_core import App, HttpResponse, Message, ProcessingResult, ProcessorContext
from apix_core.errors import TransientError
from apix_core.serve import AppServer
from apix_core.store.database import Database

ACME = {"X-Tenant-Id": "acme"}
RECORD_TABLES = ("apix_idempotency", "apix_outbox", "apix_processing_errors")


async def _counts(db: Database) -> dict[str, int]:
    """Rows of every tenant (the admin connection sees them all on PostgreSQL)."""
    async with db.connect() as conn:
        return {
            t: int((await conn.execute(sa.text(f"SELECT count(*) FROM {t}"))).scalar_one())
            for t in (*RECORD_TABLES, "apix_state")
        }


def _shop(make_app: Any) -> App:
    app: App = make_app("shop")

    @app.processor("create", route="POST /orders")
    async def create(message: Message, ctx: ProcessorContext) -> ProcessingResult:
        order_id = message.payload["id"]
        ctx.persist_entity(order_id, "order", "api", message.payload, state="received")
        await ctx.state.put("last", order_id)
        return ProcessingResult.respond({"id": order_id}, 201)

    @app.processor("one", route="GET /orders/{id}")
    async def one(message: Message, ctx: ProcessorContext) -> HttpResponse:
        order_id = message.metadata["http"]["path_params"]["id"]
        if order_id == "crash":
            raise RuntimeError("the reader broke")
        if order_id == "busy":
            raise TransientError("the replica is busy")
        order = await ctx.entities.find("order", "api", order_id)
        if order is None:
            return HttpResponse(404, {"error": "ORDER_NOT_FOUND"})
        entity = await ctx.aget_entity(order.id)
        last = await ctx.state.value("last", namespace="create")
        return HttpResponse(200, {"id": order_id, "state": entity.state, "last": last})

    @app.processor("orders", route="GET /orders")
    async def orders(message: Message, ctx: ProcessorContext) -> HttpResponse:
        page = await ctx.entities.page(canonical_type="order")
        return HttpResponse(200, {"orders": [e.external_id for e in page.items]})

    @app.processor("head", route="HEAD /orders")
    def head(message: Message, ctx: ProcessorContext) -> None:
        return None

    @app.processor("sneaky", route="GET /sneaky")
    def sneaky(message: Message, ctx: ProcessorContext) -> HttpResponse:
        ctx.persist_entity("s-1", "order", "api", {}, state="received")
        return HttpResponse(200, {"wrote": True})

    @app.processor("counter", route="GET /counter")
    async def counter(message: Message, ctx: ProcessorContext) -> HttpResponse:
        await ctx.state.put("hits", 1)
        return HttpResponse(200, {})

    return app


async def test_reads_leave_no_rows_and_repeat_the_answer(make_app: Any, admin_db: Database) -> None:
    # GIVEN an order created through POST
    app = _shop(make_app)
    created = await app.handle_http(
        "POST", "/orders", headers={**ACME, "Idempotency-Key": "c-1"}, body='{"id": "o-1"}'
    )
    assert created.status_code == 201, created.body
    before = await _counts(admin_db)
    assert before["apix_idempotency"] == 1

    # WHEN it is read many times: with and without an Idempotency-Key, a list, a 404, a HEAD
    answers = []
    for headers in (ACME, ACME, {**ACME, "Idempotency-Key": "k"}, {**ACME, "Idempotency-Key": "k"}):
        answers.append(await app.handle_http("GET", "/orders/o-1", headers=headers))
    listed = await app.handle_http("GET", "/orders", headers={**ACME, "Idempotency-Key": "k"})
    missing = await app.handle_http("GET", "/orders/nope", headers=ACME)
    head = await app.handle_http("HEAD", "/orders", headers=ACME)

    # THEN every read answers the data (never "duplicate"), and no table grew
    for answer in answers:
        assert answer.status_code == 200
        assert answer.body == {"id": "o-1", "state": "received", "last": "o-1"}
    assert listed.body == {"orders": ["o-1"]}
    assert missing.status_code == 404
    assert head.status_code == 200 and head.body["status"] == "completed"
    assert await _counts(admin_db) == before


async def test_reads_are_scoped_to_the_tenant(make_app: Any) -> None:
    # GIVEN acme's order
    app = _shop(make_app)
    await app.handle_http("POST", "/orders", headers=ACME, body='{"id": "o-2"}')
    # WHEN another tenant reads it THEN it is not found, nor listed
    other = {"X-Tenant-Id": "globex"}
    assert (await app.handle_http("GET", "/orders/o-2", headers=other)).status_code == 404
    assert (await app.handle_http("GET", "/orders", headers=other)).body == {"orders": []}


@pytest.mark.parametrize(("path", "what"), [("/sneaky", "persist"), ("/counter", "ctx.state")])
async def test_a_write_in_a_read_route_is_a_typed_error(
    make_app: Any, admin_db: Database, path: str, what: str
) -> None:
    # GIVEN GET routes that persist an entity / change ctx.state
    app = _shop(make_app)
    before = await _counts(admin_db)
    # WHEN called
    response = await app.handle_http("GET", path, headers=ACME)
    # THEN 500 with the typed error saying what to write instead, and nothing was written
    assert response.status_code == 500
    assert response.body["error"] == "READ_ONLY_ROUTE"
    assert what in response.body["message"]
    assert "POST, PUT, PATCH or DELETE" in response.body["message"]
    assert "produces=" in response.body["message"]
    assert await _counts(admin_db) == before
    async with admin_db.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM apix_entities"))).scalar() == 0


async def test_a_crashing_read_is_answered_and_not_recorded(
    make_app: Any, admin_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a GET whose processor raises
    app = _shop(make_app)
    before = await _counts(admin_db)
    # WHEN called
    response = await app.handle_http("GET", "/orders/crash", headers=ACME)
    # THEN a typed error answer (no traceback in it), logged, and no error row
    assert response.status_code == 500
    assert response.body["error"] == "UNEXPECTED_ERROR"
    assert "Traceback" not in json.dumps(response.body)
    # AND the answer neither claims a dead letter (nothing was recorded) nor shows the
    # server's source location
    assert "status" not in response.body
    assert "(at " not in response.body["message"]
    assert any("the reader broke" in r.getMessage() or r.exc_info for r in caplog.records)
    assert await _counts(admin_db) == before


async def test_a_transient_failure_asks_the_client_to_retry(
    make_app: Any, admin_db: Database
) -> None:
    # GIVEN a GET whose processor meets a transient failure
    app = _shop(make_app)
    before = await _counts(admin_db)
    # WHEN called
    response = await app.handle_http("GET", "/orders/busy", headers=ACME)
    # THEN 503 with Retry-After, and no error row
    assert response.status_code == 503
    assert response.body["error"] == "TRANSIENT_ERROR"
    assert int(response.headers["Retry-After"]) >= 1
    assert await _counts(admin_db) == before


async def test_writes_keep_exactly_once(make_app: Any, admin_db: Database) -> None:
    # GIVEN a POST with an Idempotency-Key, sent twice
    app = _shop(make_app)
    headers = {**ACME, "Idempotency-Key": "again"}
    first = await app.handle_http("POST", "/orders", headers=headers, body='{"id": "o-3"}')
    second = await app.handle_http("POST", "/orders", headers=headers, body='{"id": "o-3"}')
    # THEN the first ran, the retry got its answer again, and one idempotency row was recorded
    assert first.status_code == second.status_code == 201
    assert second.body == first.body
    assert (await _counts(admin_db))["apix_idempotency"] == 1


def test_read_only_is_safe_method_without_produces(make_app: Any) -> None:
    # GIVEN routes of each kind
    app: App = make_app("kinds")
    for name, route, produces in (
        ("g", "GET /a", ()),
        ("o", "OPTIONS /a", ()),
        ("gp", "GET /b", ("q",)),
        ("p", "POST /a", ()),
        ("d", "DELETE /a", ()),
    ):
        app.register(lambda m: None, name, route=route, produces=produces)
    # THEN only the safe methods that produce nothing are read-only
    assert {n for n, s in app.specs.items() if s.read_only} == {"g", "o"}


async def test_apix_serve_get_records_nothing(make_app: Any, admin_db: Database) -> None:
    # GIVEN `apix serve`'s ASGI app over the shop, with one order
    app = _shop(make_app)
    await app.handle_http("POST", "/orders", headers=ACME, body='{"id": "o-4"}')
    before = await _counts(admin_db)
    server = AppServer(app, workers=False)
    await server.startup()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/orders/o-4",
        "query_string": b"",
        "headers": [(b"x-tenant-id", b"acme"), (b"idempotency-key", b"same")],
    }
    # WHEN the same GET arrives twice
    try:
        await server(scope, receive, send)
        await server(scope, receive, send)
    finally:
        await server.shutdown()
    # THEN both answers carry the data, and nothing was recorded
    starts = [e for e in sent if e["type"] == "http.response.start"]
    bodies = [json.loads(e["body"]) for e in sent if e["type"] == "http.response.body"]
    assert [s["status"] for s in starts] == [200, 200]
    assert [b["id"] for b in bodies] == ["o-4", "o-4"]
    assert await _counts(admin_db) == before
