"""The flagship demo (examples/orders/app.py) end to end through ``apix run``."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from apix_core.cli.loader import load_app

DEMO = Path(__file__).resolve().parents[2] / "examples" / "orders" / "app.py"

ORDER = {
    "order_id": "API-0001",
    "customer": {"customer_id": "cust-1", "email": "jo@example.com", "name": "Jo"},
    "items": [{"product_id": "SKU-1003", "quantity": 2, "unit_price": 69.0}],
    "shipping_address": {
        "street": "1 Main St",
        "city": "Graz",
        "postal_code": "8010",
        "country": "AT",
    },
    "shipping": "express",
}


async def _post(order: dict, headers: dict[str, str]) -> tuple[int, dict]:
    app = load_app(str(DEMO))
    try:
        response = await app.handle_http("POST", "/orders", headers=headers, body=json.dumps(order))
        return response.status_code, response.body
    finally:
        await app.close()


def test_orders_demo_end_to_end(apix) -> None:
    # GIVEN one order posted to the demo's HTTP route (and one invalid post)
    status, body = asyncio.run(_post(ORDER, {"X-Tenant-Id": "demo-shop"}))
    bad_status, bad_body = asyncio.run(_post({**ORDER, "items": []}, {"X-Tenant-Id": "demo-shop"}))
    assert status == 202, body
    assert bad_status == 400 and bad_body["error"] == "INVALID_PAYLOAD"

    # WHEN the demo runs: its schedule imports 200 partner orders, 5 of them invalid
    result = apix("run", str(DEMO))

    # THEN 196 orders went through all six stages, the 5 invalid ones were dead-lettered
    assert result.exit_code == 0, result.output
    assert "drained" in result.output
    assert f"{1 + 196 * 6} completed" in result.output
    assert "5 dead-lettered" in result.output
    dead = apix("dlq", "list", "--queue", "raw-orders")
    assert dead.output.count("INVALID_PAYLOAD") == 5
    assert dead.output.count("│ validate ") == 5

    # AND one JSONL shipment notice per good order was written under APIX_HOME
    out = Path(os.environ["APIX_HOME"]) / "out" / "orders"
    files = sorted(out.rglob("*.jsonl"))
    assert len(files) == 196
    notices = [json.loads(f.read_text().strip()) for f in files]
    assert all(f.read_text().count("\n") <= 1 for f in files)
    by_id = {n["order_id"]: n for n in notices}
    assert len(by_id) == 196
    assert by_id["API-0001"]["carrier"] == "ExpressAir"
    assert by_id["API-0001"]["total"] == round(138 + 14.90 + 26.22, 2)

    # AND every order is an entity; good ones completed, bad ones failed
    listing = apix("entities", "list", "--tenant", "demo-shop", "-n", "1")
    assert "(1 of 201)" in listing.output
    failed = apix("entities", "list", "--tenant", "demo-shop", "--state", "failed")
    assert "(5 of 201)" in failed.output
    completed = apix(
        "entities", "list", "--tenant", "demo-shop", "--state", "completed", "-n", "500"
    )
    assert "(196 of 201)" in completed.output
    errors = apix("errors", "--tenant", "demo-shop")
    # the five invalid imports, plus the invalid HTTP post
    assert "6 error(s) in 2 group(s)" in errors.output

    # WHEN it runs again without a new tick
    again = apix("run", str(DEMO), "--no-schedules")

    # THEN nothing is processed twice
    assert again.exit_code == 0, again.output
    assert "0 completed" in again.output
    assert len(list(out.rglob("*.jsonl"))) == 196


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
