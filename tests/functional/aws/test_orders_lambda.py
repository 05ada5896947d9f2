"""The flagship (examples/orders) unchanged under apix_aws: orders posted as API Gateway v2
events into the HTTP function, the stages as Lambda handlers fed SQS events from moto_server
(Lambda's event source mapping played by ``_pump``), the same final states as locally, order
by order; reads answered through API Gateway v1, v2 and a function URL alike. And
``apix deploy aws`` on the example: a template cfn-lint accepts, handlers that import."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from apix_aws import lambda_handler
from apix_aws.transport.sqs import SqsTransport
from apix_core import App
from apix_core.cli.app import cli
from apix_core.cli.loader import load_app
from apix_core.runtime.invoke import run_sync

from .conftest import deliver

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "orders"
STAGES = ["validate", "reserve_stock", "charge_payment", "fulfil", "notify"]


def _scenario() -> Any:
    spec = importlib.util.spec_from_file_location("orders_scenario", EXAMPLE / "scenario.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def orders(
    sqs_queue_url: str,
    sqs: SqsTransport,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    lambda_apps: list[object],
) -> App:
    """The example's App as its Lambda functions see it: SQS queues (moto), a SQLite store."""
    monkeypatch.setenv("APIX_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}")
    monkeypatch.setenv("APIX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORDERS_DB", str(tmp_path / "shop.db"))
    app = load_app(str(EXAMPLE / "app.py"))
    lambda_apps.append(app)
    for name in STAGES:
        queue = app.input_queue(app.specs[name])
        assert queue is not None
        run_sync(sqs.ensure_queue(queue))
    return app


def _v2(load_event: Any, method: str, path: str, body: Any = None, **headers: str) -> Any:
    """An API Gateway HTTP API (v2) event for ``method path``, shaped as AWS sends it."""
    event = load_event("aws_apigw_http_v2")
    event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} {path}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["rawQueryString"] = ""
    event.pop("queryStringParameters", None)
    event.pop("pathParameters", None)
    event["headers"] = {"content-type": "application/json", "x-tenant-id": "demo-shop"} | {
        k.replace("_", "-").lower(): v for k, v in headers.items()
    }
    event["body"] = json.dumps(body) if body is not None else None
    event["isBase64Encoded"] = False
    return event


def _pump(app: App, sqs: SqsTransport, client: Any, handlers: dict[str, Any], context: Any) -> int:
    """Deliver every queue's messages to its stage's handler until no queue has any: what
    Lambda's event source mapping does. Returns how many records were delivered."""
    delivered = 0
    while True:
        moved = 0
        for name in STAGES:
            url = run_sync(sqs.queue_url(app.input_queue(app.specs[name])))  # type: ignore[arg-type]
            moved += len(deliver(client, url, handlers[name], context)[1])
        delivered += moved
        if not moved:
            return delivered


def test_orders_reach_the_same_final_states_on_lambda_and_sqs(
    orders: App, sqs: SqsTransport, load_event: Any, lambda_context: Any
) -> None:
    # GIVEN the example's functions: POST /orders, GET /orders/{orderId}, and the five stages
    scenario = _scenario()
    post = lambda_handler(orders, "create_order")
    get = lambda_handler(orders, "get_order")
    stages = {name: lambda_handler(orders, name) for name in STAGES}
    client = run_sync(sqs._get_client())

    # WHEN the scenario's orders arrive as API Gateway v2 requests
    for order, _, _ in scenario.SCENARIO:
        event = _v2(load_event, "POST", "/orders", order, idempotency_key=order["order_id"])
        answer = post(event, lambda_context)
        assert answer["statusCode"] == 202, answer
        assert json.loads(answer["body"])["order_id"] == order["order_id"]
    # AND SQS delivers each stage's queue to its function until all are empty
    delivered = _pump(orders, sqs, client, stages, lambda_context)

    # THEN every order reached the final state it reaches locally, with the same reason
    assert delivered >= len(scenario.SCENARIO)
    for order, state, reason in scenario.SCENARIO:
        answer = get(_v2(load_event, "GET", f"/orders/{order['order_id']}"), lambda_context)
        assert answer["statusCode"] == 200, answer
        body = json.loads(answer["body"])
        assert (body["status"], body["history"][-1]["reason"]) == (state, reason), order
    # AND nothing is left on any queue
    for name in STAGES:
        assert run_sync(sqs.depth(orders.input_queue(orders.specs[name]))).total == 0  # type: ignore[arg-type]


def test_read_answers_through_v1_v2_and_function_urls(
    orders: App, load_event: Any, lambda_context: Any
) -> None:
    # GIVEN one order received (no stage has run yet)
    order = _scenario().SCENARIO[0][0]
    post = lambda_handler(orders, "create_order")
    assert post(_v2(load_event, "POST", "/orders", order), lambda_context)["statusCode"] == 202

    # WHEN it is read through a REST API (v1) event, an HTTP API (v2) event, a function URL,
    # and an unknown id through v2
    v1 = load_event("aws_apigw_rest_v1")
    v1 |= {
        "resource": "/orders/{orderId}",
        "path": f"/orders/{order['order_id']}",
        "httpMethod": "GET",
        "body": None,
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"orderId": order["order_id"]},
    }
    v1["headers"]["X-Tenant-Id"] = "demo-shop"
    v1["multiValueHeaders"]["X-Tenant-Id"] = ["demo-shop"]
    url = load_event("aws_function_url")
    url["rawPath"] = url["requestContext"]["http"]["path"] = "/orders"
    url["requestContext"]["http"]["method"] = "GET"
    url["rawQueryString"] = "status=received&limit=5"
    url["queryStringParameters"] = {"status": "received", "limit": "5"}
    url["headers"]["x-tenant-id"] = "demo-shop"
    url["body"] = None
    answers = [
        lambda_handler(orders, "get_order")(v1, lambda_context),
        lambda_handler(orders, "get_order")(
            _v2(load_event, "GET", f"/orders/{order['order_id']}"), lambda_context
        ),
        lambda_handler(orders, "list_orders")(url, lambda_context),
        lambda_handler(orders, "get_order")(_v2(load_event, "GET", "/orders/NOPE"), lambda_context),
    ]

    # THEN each is the processor's own answer, status and JSON body
    one_v1, one_v2, listing, missing = answers
    assert one_v1["statusCode"] == one_v2["statusCode"] == 200, answers
    assert json.loads(one_v1["body"]) == json.loads(one_v2["body"])
    assert json.loads(one_v1["body"])["status"] == "received"
    assert listing["statusCode"] == 200
    assert [o["order_id"] for o in json.loads(listing["body"])["orders"]] == [order["order_id"]]
    assert missing["statusCode"] == 404
    assert json.loads(missing["body"])["error"] == "ORDER_NOT_FOUND"
    assert missing["headers"]["Content-Type"] == "application/json"


def test_apix_deploy_aws_on_the_example_lints_and_imports(tmp_path: Path) -> None:
    # GIVEN a copy of the example (the generator writes its handler module beside the app)
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text((EXAMPLE / "app.py").read_text(encoding="utf-8"))
    out = tmp_path / "deploy" / "template.yaml"

    # WHEN apix deploy aws runs on it
    result = CliRunner().invoke(cli, ["deploy", "aws", str(src / "app.py"), "--out", str(out)])

    # THEN the template has a function per processor, cfn-lint finds no error
    assert result.exit_code == 0, result.output
    template = yaml.safe_load(out.read_text(encoding="utf-8"))
    functions = {
        k for k, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"
    }
    assert len(functions) == 9, functions
    pytest.importorskip("cfnlint.api")
    from cfnlint.api import ManualArgs, lint_file

    errors = [
        m for m in lint_file(out, config=ManualArgs(regions=["us-east-1"])) if m.rule.id[0] == "E"
    ]
    assert errors == []
    # AND the generated handlers module imports and builds every handler
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import apix_handlers as h; print([n for n in dir(h) if n.startswith('handler_')])",
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    assert check.returncode == 0, check.stderr
    assert "handler_charge_payment" in check.stdout and "handler_get_order" in check.stdout
