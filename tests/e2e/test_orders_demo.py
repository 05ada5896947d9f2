"""The flagship (examples/orders, seed 004) locally: the HTTP API, the workflow's final states
order by order, ``apix run`` with the partner feed, and the demo script."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from apix_core import App
from apix_core.cli.loader import load_app
from apix_core.runtime import LocalRunner

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "orders"
DEMO = EXAMPLE / "app.py"
SHOP = {"X-Tenant-Id": "demo-shop"}


def _scenario() -> Any:
    spec = importlib.util.spec_from_file_location("orders_scenario", EXAMPLE / "scenario.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """APIX_HOME and the shop's own database in this test's folder."""
    monkeypatch.setenv("APIX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORDERS_DB", str(tmp_path / "shop.db"))
    return tmp_path / "home"


@pytest.fixture
async def orders(home: Path, cli_env: dict[str, str]) -> Any:
    """The example's App on this test's store and queues (``APIX_DATABASE_URL``...)."""
    app = load_app(str(DEMO))
    yield app
    await app.close()


async def _get(app: App, path: str, **query: str) -> Any:
    return await app.handle_http("GET", path, headers=SHOP, query=query)


async def test_every_path_of_the_workflow_reaches_its_final_state(orders: App) -> None:
    # GIVEN the seven scenario orders posted through POST /orders
    scenario = _scenario()
    for order, _, _ in scenario.SCENARIO:
        headers = {**SHOP, "Idempotency-Key": order["order_id"]}
        response = await orders.handle_http(
            "POST", "/orders", headers=headers, body=json.dumps(order)
        )
        assert response.status_code == 202, response.body
        assert response.body == {"order_id": order["order_id"], "status": "received"}

    # WHEN the queues are drained
    stats = await LocalRunner(orders, fire_schedules=False).run()

    # THEN each order is in its final state with its reason, and nothing was dead-lettered
    assert stats.dead_lettered == 0
    for order, state, reason in scenario.SCENARIO:
        got = await _get(orders, f"/orders/{order['order_id']}")
        assert got.status_code == 200, got.body
        assert (got.body["status"], got.body["history"][-1]["reason"]) == (state, reason)
    # AND a completed order's history is every stage of seed 004, with its totals
    ok = (await _get(orders, "/orders/S-OK-1")).body
    assert [h["state"] for h in ok["history"]] == [
        "received",
        "validated",
        "reserved",
        "paid",
        "fulfilled",
        "completed",
    ]
    assert ok["totals"] == {
        "subtotal": 49.8,
        "shipping": 4.9,
        "tax": 9.46,
        "total": 64.16,
        "currency": "EUR",
    }
    assert [h["by"] for h in ok["history"]][1:] == [
        "validate",
        "reserve_stock",
        "charge_payment",
        "fulfil",
        "notify",
    ]
    # AND stock moved: shipped units left the shelf, declined reservations came back
    shop = orders.specs["fulfil"].processor.func.__globals__
    with shop["shop_db"]() as db:
        stock = dict(db.execute("SELECT product_id, on_hand - reserved FROM stock").fetchall())
        timeouts = db.execute("SELECT order_id FROM gateway_calls WHERE calls > 1").fetchall()
    assert stock["SKU-1001"] == 900 - 2
    assert stock["SKU-1003"] == 260  # S-LIMIT was declined: its 25 grinders are back
    assert stock["SKU-1007"] == 240  # S-OUT reserved nothing
    # AND the gateway's first call timed out for the orders its rule picks (one in 8 by id),
    # retried within the invocation: a timeout is not an outcome
    assert sorted(t for (t,) in timeouts) == ["S-CREDIT", "S-LIMIT", "S-TIMEOUT-9"]


async def test_post_validates_as_seed_004_and_honours_the_idempotency_key(orders: App) -> None:
    # GIVEN a seed-004 order without an id, and one missing its customer's email and items
    order = _scenario().order("X", [("SKU-1001", 1, 24.9)])
    del order["order_id"]
    broken = {**order, "customer": {"customer_id": "c", "name": "n"}, "items": []}
    key = {**SHOP, "Idempotency-Key": "client-req-1"}

    # WHEN the broken one is posted, then the good one twice under one key, then another order
    # under that key
    bad = await orders.handle_http("POST", "/orders", headers=key, body=json.dumps(broken))
    first = await orders.handle_http("POST", "/orders", headers=key, body=json.dumps(order))
    again = await orders.handle_http("POST", "/orders", headers=key, body=json.dumps(order))
    other = _scenario().order("Y", [("SKU-1002", 2, 9.5)])
    reused = await orders.handle_http("POST", "/orders", headers=key, body=json.dumps(other))

    # THEN 400 lists each field; 202 gives the order id; the retry gets that answer again;
    # the key reused for another order is refused
    assert bad.status_code == 400
    assert bad.body["error"] == "INVALID_PAYLOAD"
    assert {f["field"] for f in bad.body["fields"]} == {"customer.email", "items"}
    assert first.status_code == 202
    order_id = first.body["order_id"]
    assert order_id.startswith("ORD-")
    assert (again.status_code, again.body) == (202, {"order_id": order_id, "status": "received"})
    assert (reused.status_code, reused.body["error"]) == (422, "IDEMPOTENCY_KEY_REUSED")
    listed = (await _get(orders, "/orders")).body["orders"]
    assert [o["order_id"] for o in listed] == [order_id]


async def test_get_orders_filters_pages_and_is_tenant_scoped(orders: App) -> None:
    # GIVEN the scenario orders processed
    scenario = _scenario()
    for order, _, _ in scenario.SCENARIO:
        await orders.handle_http("POST", "/orders", headers=SHOP, body=json.dumps(order))
    await LocalRunner(orders, fire_schedules=False).run()

    # WHEN orders are listed three at a time following next_cursor, and filtered by status
    seen: list[str] = []
    query: dict[str, str] = {"limit": "3"}
    while True:
        page = (await _get(orders, "/orders", **query)).body
        seen += [o["order_id"] for o in page["orders"]]
        if page["next_cursor"] is None:
            break
        query = {"limit": "3", "cursor": page["next_cursor"]}
    declined = (await _get(orders, "/orders", status="payment_declined")).body

    # THEN every order once; the filter gives the declined ones; bad input is a 400
    assert sorted(seen) == sorted(scenario.EXPECTED)
    assert {o["order_id"] for o in declined["orders"]} == {"S-LIMIT", "S-CREDIT"}
    assert (await _get(orders, "/orders", limit="0")).status_code == 400
    assert (await _get(orders, "/orders", cursor="garbage")).status_code == 400

    # AND an unknown id, or another tenant's order, is a 404
    unknown = await _get(orders, "/orders/NOPE")
    other = await orders.handle_http("GET", "/orders/S-OK-1", headers={"X-Tenant-Id": "other-shop"})
    assert unknown.status_code == other.status_code == 404
    assert other.body["error"] == "ORDER_NOT_FOUND"
    assert (await orders.handle_http("GET", "/orders", headers={"X-Tenant-Id": "other-shop"})).body[
        "orders"
    ] == []


def test_apix_run_imports_the_partner_feed(apix: Any, home: Path) -> None:
    # WHEN `apix run` fires the feed's schedule once: 200 partner orders, 5 of them broken
    result = apix("run", str(DEMO))

    # THEN it drains; the 5 broken ones are dead letters (not business outcomes)
    assert result.exit_code == 0, result.output
    assert "drained" in result.output
    assert "5 dead-lettered" in result.output
    dead = apix("dlq", "list", "--queue", "raw-orders")
    assert dead.output.count("INVALID_PAYLOAD") == 5

    # AND every order ends in a terminal state; one shipment notice per completed order
    app = load_app(str(DEMO))

    async def states() -> Counter[str]:
        try:
            found: Counter[str] = Counter()
            cursor = ""
            while True:
                page = (await _get(app, "/orders", limit="100", cursor=cursor)).body
                found.update(o["status"] for o in page["orders"])
                if not (cursor := page["next_cursor"]):
                    return found
        finally:
            await app.close()

    counted = asyncio.run(states())
    assert sum(counted.values()) == 200
    assert counted["failed"] == 5
    assert set(counted) <= {"completed", "rejected", "payment_declined", "failed"}
    assert counted["completed"] > 150
    notices = sorted((home / "out" / "orders").rglob("*.jsonl"))
    assert len(notices) == counted["completed"]

    # WHEN it runs again without a new tick THEN nothing is processed twice
    again = apix("run", str(DEMO), "--no-schedules")
    assert again.exit_code == 0, again.output
    assert "0 completed" in again.output


def test_the_demo_script_prints_the_summary_and_writes_the_graph(tmp_path: Path) -> None:
    # GIVEN a fresh home WHEN the demo runs with a few orders and the feed
    env = {**os.environ, "APIX_HOME": str(tmp_path / "demo")}
    env.pop("APIX_DATABASE_URL", None)
    env.pop("APIX_QUEUE_URL", None)
    env.pop("ORDERS_DB", None)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / "demo.py"), "--orders", "5"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "COLUMNS": "200"},
        cwd=tmp_path,
    )

    # THEN it succeeds and shows each part of the summary, and the graph is in a file
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "POST /orders: 6 × 202, 2 × 400, 1 × 422" in out
    assert "the retried Idempotency-Key: the first answer again, one order" in out
    for part in ("orders per final state", "messages per queue", "dead letters: 5", "messages/s"):
        assert part in out, out
    graph = (tmp_path / "demo" / "orders-pipeline.mmd").read_text()
    assert graph.startswith("flowchart LR")
    assert "charge_payment" in graph and graph.strip() in out


def test_orders_demo_sample_batches_are_deterministic() -> None:
    # GIVEN the demo module
    app = load_app(str(DEMO))
    sample_orders = app.specs["import_orders"].processor.func.__globals__["sample_orders"]

    # WHEN the same tick is sampled twice, and another tick once
    a = sample_orders("2026-01-01T10:00:00+00:00")
    b = sample_orders("2026-01-01T10:00:00+00:00")
    c = sample_orders("2026-01-01T10:05:00+00:00")

    # THEN one tick always gives the same 200 orders; another tick gives new order ids
    assert a == b
    assert len(a) == 200
    assert {o["order_id"] for o in a}.isdisjoint({o["order_id"] for o in c})
