"""The flagship (examples/orders) unchanged under apix_azure: orders posted as real
``azure.functions.HttpRequest`` objects into the Functions app's HTTP functions, the stages fed
the Azurite queue messages their outputs wrote (the host's queue trigger played by ``_pump``),
the same final states as locally, order by order. And ``apix deploy azure`` on the example: a
``function_app.py`` a fresh interpreter imports, with a function per processor."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage

from apix_azure import function_app
from apix_azure.deploy.generate import generate
from apix_azure.transport.storage_queue import StorageQueueTransport
from apix_core import App
from apix_core.cli.loader import load_app

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "orders"
STAGES = ["validate", "reserve_stock", "charge_payment", "fulfil", "notify"]


def _scenario() -> Any:
    spec = importlib.util.spec_from_file_location("orders_scenario", EXAMPLE / "scenario.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _request(method: str, path: str, body: Any = None, **route: str) -> func.HttpRequest:
    return func.HttpRequest(
        method,
        f"http://localhost/api{path}",
        headers={"X-Tenant-Id": "demo-shop", "Content-Type": "application/json"},
        params={},
        route_params=route,
        body=json.dumps(body).encode() if body is not None else b"",
    )


def _queue_message(body: str, msg_id: str) -> QueueMessage:
    now = datetime.now(UTC)
    return QueueMessage(  # type: ignore[no-untyped-call]
        id=msg_id,
        body=body,
        dequeue_count=1,
        pop_receipt="receipt",
        insertion_time=now,
        expiration_time=now,
        time_next_visible=now,
    )


async def _pump(app: App, fns: dict[str, Any], reader: StorageQueueTransport) -> int:
    """What the host's queue triggers do: hand each message to its stage's function, delete
    it when the function returns. Until every queue is empty."""
    delivered = 0
    while True:
        moved = 0
        for name in STAGES:
            queue = app.input_queue(app.specs[name])
            assert queue is not None
            got = await reader.receive(queue, max_messages=32)
            for delivery in got:
                await fns[name](_queue_message(delivery.body, delivery.message_id))
            await reader.ack(queue, got)
            moved += len(got)
        delivered += moved
        if not moved:
            return delivered


async def test_orders_reach_the_same_final_states_on_functions_and_azurite(
    tmp_path: Path, azurite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the example as a Functions app: storage queues on Azurite (a prefix of its own),
    # the metadata in SQLite
    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    monkeypatch.setenv("APIX_AZURE_QUEUE_PREFIX", f"o{uuid.uuid4().hex[:8]}-")
    monkeypatch.delenv("APIX_QUEUE_URL", raising=False)
    monkeypatch.setenv("APIX_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}")
    monkeypatch.setenv("APIX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORDERS_DB", str(tmp_path / "shop.db"))
    app = load_app(str(EXAMPLE / "app.py"))
    fapp = function_app(app)
    fns = {str(f.get_function_name()): f.get_user_function() for f in fapp.get_functions()}
    reader = StorageQueueTransport(azurite, visibility_timeout=30)
    scenario = _scenario()
    try:
        # WHEN the scenario's orders are POSTed to the HTTP function
        for order, _, _ in scenario.SCENARIO:
            response = await fns["create_order"](_request("POST", "/orders", order))
            assert response.status_code == 202, response.get_body()
            assert json.loads(response.get_body())["order_id"] == order["order_id"]
        # AND each stage's function gets its queue's messages until all are empty
        delivered = await _pump(app, fns, reader)

        # THEN every order reached the final state it reaches locally, with the same reason
        assert delivered >= len(scenario.SCENARIO)
        for order, state, reason in scenario.SCENARIO:
            oid = order["order_id"]
            response = await fns["get_order"](_request("GET", f"/orders/{oid}", orderId=oid))
            assert response.status_code == 200, response.get_body()
            body = json.loads(response.get_body())
            assert (body["status"], body["history"][-1]["reason"]) == (state, reason), oid
        # AND the list answers through the HTTP function too, filtered; unknown ids are 404
        listing = await fns["list_orders"](
            func.HttpRequest(
                "GET",
                "http://localhost/api/orders",
                headers={"X-Tenant-Id": "demo-shop"},
                params={"status": "rejected"},
                body=b"",
            )
        )
        assert listing.status_code == 200
        assert listing.mimetype == "application/json"
        rejected = {o["order_id"] for o in json.loads(listing.get_body())["orders"]}
        assert rejected == {o for o, s in scenario.EXPECTED.items() if s == "rejected"}
        missing = await fns["get_order"](_request("GET", "/orders/NOPE", orderId="NOPE"))
        assert missing.status_code == 404
    finally:
        await reader.close()
        await app.close()


@pytest.mark.slow
def test_apix_deploy_azure_on_the_example_imports(tmp_path: Path) -> None:
    # GIVEN a copy of the example
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text((EXAMPLE / "app.py").read_text(encoding="utf-8"))
    out = tmp_path / "azure"

    # WHEN the project is generated and a fresh interpreter loads its function_app.py
    written = generate(str(src / "app.py"), out)
    probe = (
        "import importlib.util, json\n"
        "spec = importlib.util.spec_from_file_location('function_app', 'function_app.py')\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(json.dumps({f.get_function_name(): json.loads(f.get_function_json())['bindings']"
        " for f in m.app.get_functions()}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{out}:{src}"},
    )

    # THEN it imports, with a function per processor and each trigger in place
    assert proc.returncode == 0, proc.stderr
    functions = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "function_app.py" in {p.name for p in written}
    assert set(functions) == {
        "create_order",
        "list_orders",
        "get_order",
        "import_orders",
        *STAGES,
    }
    http = next(b for b in functions["get_order"] if b["type"] == "httpTrigger")
    assert (http["route"], http["methods"]) == ("orders/{orderId}", ["GET"])
    (timer,) = functions["import_orders"]
    assert timer["type"] == "timerTrigger"
    assert functions["charge_payment"][0]["queueName"].endswith("reserved")
