"""A read-only route behind API Gateway HTTP API (payload 2.0): the same GET twice, with the
same Idempotency-Key, answers the data both times and records no idempotency row (issue #17)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apix_aws import lambda_handler
from apix_core import App, HttpResponse, Message, ProcessorContext

Event = Callable[[str], dict[str, Any]]


def _rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM apix_idempotency").fetchone()[0])


def test_http_v2_get_twice_answers_the_data_and_records_nothing(
    tmp_path: Path, lambda_apps: list[object], load_event: Event, lambda_context: Any
) -> None:
    # GIVEN an app with a POST that creates an order and a GET that reads it
    app = App(
        "lambda-read",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}",
        queue_url=f"sqlite+aiosqlite:///{tmp_path / 'queues.db'}",
    )
    lambda_apps.append(app)

    @app.processor("create", route="POST /orders/{tenant}")
    async def create(message: Message, ctx: ProcessorContext) -> None:
        ctx.persist_entity(message.payload["order_id"], "order", "api", message.payload)

    @app.processor("read", route="GET /orders/{tenant}/{id}")
    async def read(message: Message, ctx: ProcessorContext) -> HttpResponse:
        order_id = message.metadata["http"]["path_params"]["id"]
        order = await ctx.entities.find("order", "api", order_id)
        if order is None:
            return HttpResponse(404, {"error": "ORDER_NOT_FOUND"})
        return HttpResponse(200, {"order_id": order.external_id})

    created = lambda_handler(app, "create")(load_event("aws_apigw_http_v2"), lambda_context)
    assert created is not None and created["statusCode"] == 200, created
    assert _rows(tmp_path / "apix.db") == 1
    get = load_event("aws_apigw_http_v2")
    get |= {
        "routeKey": "GET /orders/{tenant}/{id}",
        "rawPath": "/orders/acme/A-1002",
        "rawQueryString": "",
        "queryStringParameters": None,
        "pathParameters": {"tenant": "acme", "id": "A-1002"},
        "body": None,
        "isBase64Encoded": False,
    }
    get["headers"] = {
        k: v for k, v in get["headers"].items() if k not in ("content-length", "content-type")
    } | {"idempotency-key": "read-1"}
    get["requestContext"]["http"] |= {"method": "GET", "path": "/orders/acme/A-1002"}
    get["requestContext"]["routeKey"] = get["routeKey"]
    handler = lambda_handler(app, "read")

    # WHEN the same GET arrives twice
    answers = [handler(json.loads(json.dumps(get)), lambda_context) for _ in range(2)]

    # THEN both answer the order (no "duplicate"), and no idempotency row was added
    for answer in answers:
        assert answer is not None and answer["statusCode"] == 200, answer
        assert json.loads(answer["body"]) == {"order_id": "A-1002"}
    assert _rows(tmp_path / "apix.db") == 1
