"""A read-only route as an Azure Functions HTTP function, called with real
``azure.functions.HttpRequest`` objects: the same GET twice answers the data both times and
records no idempotency row (issue #17)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import azure.functions as func

from apix_azure import function_app
from apix_core import App, HttpResponse, Message, ProcessorContext


def _rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM apix_idempotency").fetchone()[0])


def _request(method: str, order_id: str, body: bytes = b"") -> func.HttpRequest:
    return func.HttpRequest(
        method,
        f"http://localhost/api/orders/{order_id}",
        headers={"X-Tenant-Id": "acme", "Idempotency-Key": f"{method}-{order_id}"},
        params={},
        route_params={"id": order_id},
        body=body,
    )


async def test_get_twice_answers_the_data_and_records_nothing(tmp_path: Path) -> None:
    # GIVEN a Functions app with a PUT that stores an order and a GET that reads it
    app = App(
        "azread",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}",
        queue_url=f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}",
    )

    @app.processor("put", route="PUT /orders/{id}")
    async def put(message: Message, ctx: ProcessorContext) -> None:
        order_id = message.metadata["http"]["path_params"]["id"]
        ctx.persist_entity(order_id, "order", "api", message.payload, state="received")

    @app.processor("get", route="GET /orders/{id}")
    async def get(message: Message, ctx: ProcessorContext) -> HttpResponse:
        order = await ctx.entities.find(
            "order", "api", message.metadata["http"]["path_params"]["id"]
        )
        if order is None:
            return HttpResponse(404, {"error": "ORDER_NOT_FOUND"})
        return HttpResponse(200, {"id": order.external_id, "state": order.state})

    fapp = function_app(app)
    fns = {str(f.get_function_name()): f.get_user_function() for f in fapp.get_functions()}
    try:
        assert (await fns["put"](_request("PUT", "o-1", b'{"n": 1}'))).status_code == 200
        assert _rows(tmp_path / "apix.db") == 1

        # WHEN the same GET (same Idempotency-Key) arrives twice
        answers = [await fns["get"](_request("GET", "o-1")) for _ in range(2)]

        # THEN both carry the order, and no idempotency row was added
        for answer in answers:
            assert answer.status_code == 200
            assert json.loads(answer.get_body()) == {"id": "o-1", "state": "received"}
        assert _rows(tmp_path / "apix.db") == 1
    finally:
        await app.close()
