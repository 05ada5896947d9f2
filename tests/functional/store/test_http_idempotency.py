"""``Idempotency-Key`` retries: the first answer kept with the claim (migration 0008) and given
again, 422 for the key reused on another request, 409 while the first is in flight, and the
queue path left as it was (no answer columns written)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import sqlalchemy as sa

from apix_core import App, HttpResponse, Message, ProcessingResult, ProcessorContext
from apix_core.http import MAX_KEPT_ANSWER_BYTES
from apix_core.runtime import LocalRunner
from apix_core.store.database import Database

TENANT = {"X-Tenant-Id": "acme"}


def _orders_app(make_app: Any, calls: list[str]) -> App:
    app: App = make_app("idem")

    @app.processor("create", route="POST /orders", produces=["orders"])
    async def create(message: Message, ctx: ProcessorContext) -> ProcessingResult:
        order_id = f"ORD-{len(calls) + 1}"  # differs per run: a replay must not run it again
        calls.append(order_id)
        ctx.send("orders", {"order_id": order_id})
        return ProcessingResult.respond(
            {"order_id": order_id, "status": "received"},
            201,
            headers={"Location": f"/orders/{order_id}"},
        )

    @app.processor("ship", route="POST /shipments/{order_id}")
    async def ship(message: Message, ctx: ProcessorContext) -> None:
        calls.append("ship")  # no answer of its own: apix's mapping answers

    @app.processor("report", route="POST /reports")
    async def report(message: Message, ctx: ProcessorContext) -> HttpResponse:
        calls.append("report")
        return HttpResponse(200, {"rows": ["x" * 100] * (MAX_KEPT_ANSWER_BYTES // 100 + 1)})

    @app.processor("collect", consumes="orders")
    async def collect(message: Message, ctx: ProcessorContext) -> None:
        calls.append(f"queued {message.payload['order_id']}")

    return app


async def test_a_retry_gets_the_first_status_headers_and_body(make_app: Any) -> None:
    # GIVEN a route whose answer differs each time it runs
    calls: list[str] = []
    app = _orders_app(make_app, calls)
    headers = {**TENANT, "Idempotency-Key": "k-1"}

    # WHEN the same request is sent twice, the retry with its keys in another order and spaces
    first = await app.handle_http("POST", "/orders", headers=headers, body='{"a": 1, "b": 2}')
    again = await app.handle_http("POST", "/orders", headers=headers, body='{ "b":2,"a":1 }')

    # THEN the retry is answered exactly as the first request, without running again
    assert (first.status_code, first.body) == (201, {"order_id": "ORD-1", "status": "received"})
    assert (again.status_code, again.body, again.headers) == (
        first.status_code,
        first.body,
        first.headers,
    )
    assert again.headers["Location"] == "/orders/ORD-1"
    assert calls == ["ORD-1"]
    # and its output was queued once
    await LocalRunner(app).run()
    assert calls == ["ORD-1", "queued ORD-1"]


async def test_apix_mapped_answers_are_replayed_as_they_were(make_app: Any) -> None:
    # GIVEN a route without an answer of its own (apix answers 200 {"message_id", "status"})
    calls: list[str] = []
    app = _orders_app(make_app, calls)
    headers = {**TENANT, "Idempotency-Key": "ship-1"}

    # WHEN it is retried
    first = await app.handle_http("POST", "/shipments/7", headers=headers, body="{}")
    again = await app.handle_http("POST", "/shipments/7", headers=headers, body="{}")

    # THEN the retry gets "completed" too: the first answer, not "duplicate"
    assert first.status_code == again.status_code == 200
    assert first.body["status"] == "completed"
    assert again.body == first.body
    assert calls == ["ship"]


async def test_the_same_key_on_another_request_is_refused_with_422(make_app: Any) -> None:
    # GIVEN a completed request under key k-2
    calls: list[str] = []
    app = _orders_app(make_app, calls)
    headers = {**TENANT, "Idempotency-Key": "k-2"}
    first = await app.handle_http("POST", "/orders", headers=headers, body='{"qty": 1}')

    # WHEN the key comes back with another body, and with another query string
    other_body = await app.handle_http("POST", "/orders", headers=headers, body='{"qty": 2}')
    other_query = await app.handle_http(
        "POST", "/orders", headers=headers, body='{"qty": 1}', query={"dry": "1"}
    )
    same = await app.handle_http("POST", "/orders", headers=headers, body='{"qty": 1}')

    # THEN both are refused with a message saying what to do, nothing ran again, and the
    # original request still gets its answer
    for refused in (other_body, other_query):
        assert refused.status_code == 422
        assert refused.body["error"] == "IDEMPOTENCY_KEY_REUSED"
        assert "new key" in refused.body["message"]
    assert (same.status_code, same.body) == (first.status_code, first.body)
    assert calls == ["ORD-1"]


async def test_an_answer_over_the_cap_keeps_its_status_only(make_app: Any) -> None:
    # GIVEN a route answering more than MAX_KEPT_ANSWER_BYTES
    calls: list[str] = []
    app = _orders_app(make_app, calls)
    headers = {**TENANT, "Idempotency-Key": "big-1"}

    # WHEN it is retried
    first = await app.handle_http("POST", "/reports", headers=headers, body="{}")
    again = await app.handle_http("POST", "/reports", headers=headers, body="{}")

    # THEN the retry gets the first status with a duplicate body that says why
    assert first.status_code == again.status_code == 200
    assert len(json.dumps(first.body)) > MAX_KEPT_ANSWER_BYTES
    assert again.body["status"] == "duplicate"
    assert str(MAX_KEPT_ANSWER_BYTES) in again.body["note"]
    assert calls == ["report"]


async def test_a_retry_while_the_first_runs_gets_409_with_retry_after(make_app: Any) -> None:
    # GIVEN a request still running (its processor waits)
    app: App = make_app("slow")
    entered, release = asyncio.Event(), asyncio.Event()
    runs: list[int] = []

    @app.processor("pay", route="POST /payments")
    async def pay(message: Message, ctx: ProcessorContext) -> HttpResponse:
        runs.append(1)
        entered.set()
        await release.wait()
        return HttpResponse(201, {"payment": "P-1"})

    headers = {**TENANT, "Idempotency-Key": "pay-1"}
    first = asyncio.create_task(app.handle_http("POST", "/payments", headers=headers, body="{}"))
    await asyncio.wait_for(entered.wait(), 10)

    # WHEN the same request comes again meanwhile
    during = await app.handle_http("POST", "/payments", headers=headers, body="{}")
    release.set()
    done = await first
    after = await app.handle_http("POST", "/payments", headers=headers, body="{}")

    # THEN it is told to come back, and afterwards gets the first answer; one run
    assert during.status_code == 409
    assert during.body["error"] == "REQUEST_IN_PROGRESS"
    assert during.headers["Retry-After"] == "1"
    assert (done.status_code, after.status_code, after.body) == (201, 201, {"payment": "P-1"})
    assert runs == [1]


async def test_a_retry_at_another_instance_waits_for_the_first_and_gets_its_answer(
    make_app: Any,
) -> None:
    # GIVEN two instances of one app on one store (two processes behind a load balancer), the
    # first running a request
    entered, release = asyncio.Event(), asyncio.Event()
    runs: list[str] = []

    def instance(name: str) -> App:
        app: App = make_app("twin")

        @app.processor("pay", route="POST /payments")
        async def pay(message: Message, ctx: ProcessorContext) -> HttpResponse:
            runs.append(name)
            entered.set()
            await release.wait()
            return HttpResponse(201, {"payment": f"P-{name}"})

        return app

    one, two = instance("one"), instance("two")
    await two.start()
    headers = {**TENANT, "Idempotency-Key": "pay-2"}
    first = asyncio.create_task(one.handle_http("POST", "/payments", headers=headers, body="{}"))
    await asyncio.wait_for(entered.wait(), 10)

    # WHEN the retry reaches the other instance meanwhile
    retry = asyncio.create_task(two.handle_http("POST", "/payments", headers=headers, body="{}"))
    await asyncio.sleep(0.3)
    waiting = not retry.done()
    release.set()
    done, again = await asyncio.wait_for(asyncio.gather(first, retry), 30)

    # THEN it waited for the first to commit and got its answer; the processor ran once
    assert waiting
    assert (done.status_code, done.body) == (201, {"payment": "P-one"})
    assert (again.status_code, again.body) == (201, {"payment": "P-one"})
    assert runs == ["one"]


async def test_a_failed_request_keeps_no_answer_and_runs_again(make_app: Any) -> None:
    # GIVEN a route that refuses its first call
    app: App = make_app("refuse")
    runs: list[int] = []

    @app.processor("charge", route="POST /charges")
    async def charge(message: Message, ctx: ProcessorContext) -> HttpResponse:
        runs.append(1)
        if len(runs) == 1:
            from apix_core import PermanentError

            raise PermanentError("card declined")
        return HttpResponse(201, {"charged": True})

    headers = {**TENANT, "Idempotency-Key": "c-1"}

    # WHEN it is retried after the failure
    first = await app.handle_http("POST", "/charges", headers=headers, body="{}")
    again = await app.handle_http("POST", "/charges", headers=headers, body="{}")

    # THEN the failure was not kept: the retry ran and got its own answer
    assert first.status_code == 400
    assert (again.status_code, again.body) == (201, {"charged": True})
    assert runs == [1, 1]


async def test_queue_claims_and_unkeyed_requests_write_no_answer(make_app: Any) -> None:
    # GIVEN an HTTP request without a key and a queue message
    calls: list[str] = []
    app = _orders_app(make_app, calls)
    await app.handle_http("POST", "/orders", headers=TENANT, body="{}")
    await app.handle_http("POST", "/orders", headers={**TENANT, "Idempotency-Key": "k"}, body="{}")

    # WHEN the queue message is processed
    await LocalRunner(app).run()

    # THEN only the keyed request's claim holds an answer; the others' columns stay NULL
    assert app.store is not None
    async with app.store.db.transaction(tenant_id="acme", write=False) as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT processor, request_hash IS NOT NULL, response_status, "
                    "response_headers IS NOT NULL, response_body IS NOT NULL "
                    "FROM apix_idempotency ORDER BY processor, response_status"
                )
            )
        ).all()
    assert sorted(tuple(r) for r in rows) == sorted(
        [
            ("collect", False, None, False, False),
            ("collect", False, None, False, False),
            ("create", False, None, False, False),
            ("create", True, 201, True, True),
        ]
    )


async def test_downgrade_to_0007_drops_the_answers_and_upgrade_brings_the_columns_back(
    make_app: Any, admin_db: Database
) -> None:
    # GIVEN a kept answer at head
    from alembic import command

    from apix_core.store.migrate import alembic_config

    calls: list[str] = []
    app = _orders_app(make_app, calls)
    headers = {**TENANT, "Idempotency-Key": "k-down"}
    await app.handle_http("POST", "/orders", headers=headers, body="{}")
    await app.close()

    async def columns() -> set[str]:
        async with admin_db.connect() as conn:
            found = await conn.run_sync(lambda c: sa.inspect(c).get_columns("apix_idempotency"))
        return {c["name"] for c in found}

    # WHEN the store is downgraded to 0007, then upgraded again
    await admin_db.run_migration(lambda c: command.downgrade(alembic_config(c), "0007"))
    down = await columns()
    async with admin_db.connect() as conn:
        claims = (await conn.execute(sa.text("SELECT count(*) FROM apix_idempotency"))).scalar()
    await admin_db.upgrade()
    up = await columns()

    # THEN 0007 has the claims without the answer columns; head has the columns again
    answer = {"request_hash", "response_status", "response_headers", "response_body"}
    assert not answer & down and claims == 1
    assert answer <= up
