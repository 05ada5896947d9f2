"""``app.handle_http``: route processors, tenant header, idempotency keys, error statuses."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from apix_core import App, Message, ProcessorContext, tenant_context
from apix_core.runtime import LocalRunner


class NewOrder(BaseModel):
    sku: str
    qty: int = Field(gt=0)


def _http_app(make_app: Any, calls: list[dict[str, Any]]) -> App:
    # No default tenant: HTTP callers must send X-Tenant-Id.
    app: App = make_app("http")

    @app.processor("create_order", route="POST /orders", payload=NewOrder)
    async def create_order(message: Message, ctx: ProcessorContext) -> None:
        assert isinstance(ctx.payload, NewOrder)
        calls.append({"tenant": ctx.tenant_id, **message.payload})
        ctx.persist_entity(ctx.payload.sku, "order", "web", message.payload)

    @app.processor("update_order", route="PUT /orders/{order_id}", produces=["order-updates"])
    async def update_order(message: Message, ctx: ProcessorContext) -> dict[str, Any]:
        http = message.metadata["http"]
        calls.append({"path_params": http["path_params"], "query": http["query"]})
        return {"order_id": http["path_params"]["order_id"], **message.payload}

    @app.processor("collect_updates", consumes="order-updates")
    async def collect_updates(message: Message, ctx: ProcessorContext) -> None:
        calls.append({"update": message.payload})

    return app


TENANT = {"X-Tenant-Id": "acme"}


async def test_post_runs_the_route_processor(make_app: Any) -> None:
    # GIVEN a POST /orders route
    calls: list[dict[str, Any]] = []
    app = _http_app(make_app, calls)

    # WHEN a valid request arrives (header names are case-insensitive)
    response = await app.handle_http(
        "POST", "/orders", headers={"x-tenant-id": "acme"}, body=b'{"sku": "A-1", "qty": 2}'
    )

    # THEN the processor ran once for that tenant and the response names the message
    assert response.status_code == 200, response.body
    assert response.body["status"] == "completed"
    assert response.body["message_id"]
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.text())["message_id"] == response.body["message_id"]
    assert calls == [{"tenant": "acme", "sku": "A-1", "qty": 2}]
    with tenant_context("acme"):
        entity = await app.store.entities.find("order", "web", "A-1")
    assert entity is not None
    assert response.body["entities_created"] == [entity.id]


async def test_missing_tenant_is_400(make_app: Any) -> None:
    # GIVEN an app without a default tenant
    calls: list[dict[str, Any]] = []
    app = _http_app(make_app, calls)

    # WHEN a request has no tenant header
    response = await app.handle_http("POST", "/orders", headers={}, body='{"sku": "A", "qty": 1}')

    # THEN it is refused before the processor runs
    assert response.status_code == 400
    assert response.body["error"] == "MISSING_TENANT"
    assert "X-Tenant-Id" in response.body["message"]
    assert calls == []


async def test_bad_json_and_non_object_bodies_are_400(make_app: Any) -> None:
    calls: list[dict[str, Any]] = []
    app = _http_app(make_app, calls)

    # GIVEN / WHEN bodies that are not a JSON object
    responses = [
        await app.handle_http("POST", "/orders", headers=TENANT, body=body)
        for body in (b"{sku: A}", b"[1, 2]", b"\xff\xfe", "null")
    ]

    # THEN each is a 400 with a typed error, and the processor never ran
    assert [r.status_code for r in responses] == [400, 400, 400, 400]
    assert {r.body["error"] for r in responses} == {"MALFORMED_MESSAGE"}
    assert calls == []


async def test_payload_validation_error_is_400(make_app: Any) -> None:
    calls: list[dict[str, Any]] = []
    app = _http_app(make_app, calls)

    # WHEN the body fails the route's payload model
    response = await app.handle_http(
        "POST", "/orders", headers=TENANT, body='{"sku": "A", "qty": 0}'
    )

    # THEN the caller learns which field is wrong
    assert response.status_code == 400
    assert response.body["error"] == "INVALID_PAYLOAD"
    assert "qty" in response.body["message"]
    assert calls == []


async def test_idempotency_key_makes_a_retry_the_same_request(make_app: Any) -> None:
    calls: list[dict[str, Any]] = []
    app = _http_app(make_app, calls)
    headers = {**TENANT, "Idempotency-Key": "order-req-1"}
    body = '{"sku": "B-7", "qty": 1}'

    # WHEN the same request is sent twice with the same Idempotency-Key
    first = await app.handle_http("POST", "/orders", headers=headers, body=body)
    second = await app.handle_http("POST", "/orders", headers=headers, body=body)
    # and once more under another tenant, and once without a key
    other_tenant = await app.handle_http(
        "POST",
        "/orders",
        headers={"X-Tenant-Id": "globex", "Idempotency-Key": "order-req-1"},
        body=body,
    )
    no_key = await app.handle_http("POST", "/orders", headers=TENANT, body=body)

    # THEN the retry is the same message, answered as the first time; the processor ran once
    assert first.status_code == second.status_code == 200
    assert first.body["status"] == "completed"
    assert second.body == first.body
    assert other_tenant.body["status"] == "completed"
    assert other_tenant.body["message_id"] != first.body["message_id"]
    assert no_key.body["status"] == "completed"
    assert [c["tenant"] for c in calls] == ["acme", "globex", "acme"]


async def test_path_params_and_query_reach_the_processor(make_app: Any) -> None:
    calls: list[dict[str, Any]] = []
    app = _http_app(make_app, calls)

    # WHEN PUT /orders/{order_id} is called (the route produces to a queue)
    response = await app.handle_http(
        "PUT", "/orders/o-981", headers=TENANT, body='{"qty": 5}', query={"dry_run": "no"}
    )
    await LocalRunner(app).run()

    # THEN it is accepted (202), and the processor saw the path parameter and the query
    assert response.status_code == 202, response.body
    assert calls[0] == {"path_params": {"order_id": "o-981"}, "query": {"dry_run": "no"}}
    assert calls[1] == {"update": {"order_id": "o-981", "qty": 5}}


async def test_unknown_route_is_404(make_app: Any) -> None:
    calls: list[dict[str, Any]] = []
    app = _http_app(make_app, calls)

    # WHEN the method or the path does not match a route
    wrong_method = await app.handle_http("GET", "/orders", headers=TENANT)
    wrong_path = await app.handle_http("POST", "/orders/a/b", headers=TENANT, body="{}")

    # THEN 404, and nothing ran
    assert (wrong_method.status_code, wrong_path.status_code) == (404, 404)
    assert calls == []
