"""Issue 13 end to end through moto_server: a 3-stage app (q1 → q2 → q3 → sink), each stage a
Lambda handler called with SQS events built from what moto returned, in AWS's documented
shape; Lambda's event source mapping is played by :func:`_poll` (receive, invoke, delete what
the handler did not report). Then redrive to the dead-letter queue after ``maxReceiveCount``
and ``apix dlq list|show|replay --transport sqs`` through the real command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from apix_aws import lambda_handler
from apix_aws.transport.sqs import SqsTransport
from apix_core import App, Message, ProcessorContext
from apix_core.cli.main import cli
from apix_core.errors import TransientError
from apix_core.processor import BackoffPolicy
from apix_core.runtime.invoke import run_sync
from apix_core.transport.base import DeadLetterInfo, OutgoingMessage

from .conftest import deliver


@pytest.fixture
def env(sqs_queue_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    monkeypatch.setenv("APIX_TENANT_ID", "acme")
    return {"db": f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}", "url": sqs_queue_url}


@pytest.fixture
def sqs_client(sqs: SqsTransport) -> Any:
    return run_sync(sqs._get_client())


def _poll(
    sqs: SqsTransport, client: Any, queue: str, handler: Any, context: Any, *, twice: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """One delivery from ``queue`` (:func:`deliver`); the response and the bodies of the batch."""
    response, got = deliver(client, run_sync(sqs.queue_url(queue)), handler, context, twice=twice)
    return response, [m["Body"] for m in got]


def _drain(sqs: SqsTransport, client: Any, queue: str) -> list[dict[str, Any]]:
    url = run_sync(sqs.queue_url(queue))
    out: list[dict[str, Any]] = []
    while True:
        got = client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not got:
            return out
        for m in got:
            out.append(m)
            client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def _apix(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_three_stages_exactly_once_redrive_and_cli_replay(
    env: dict[str, str],
    sqs: SqsTransport,
    sqs_client: Any,
    lambda_apps: list[object],
    lambda_context: Any,
) -> None:
    # GIVEN three stages on SQS; q2 redrives to its dead-letter queue after 2 receives and its
    # stage fails retryably for "poison" orders while the downstream is "down"
    for queue in ("q1", "q3", "sink"):
        run_sync(sqs.ensure_queue(queue))
    run_sync(sqs.ensure_queue("q2", max_receive_count=2))
    downstream = {"down": True}
    calls: dict[str, int] = {"s1": 0, "s2": 0, "s3": 0}
    app = App("three-stages", database_url=env["db"])
    lambda_apps.append(app)

    @app.processor("s1", consumes="q1", produces="q2")
    async def s1(message: Message, ctx: ProcessorContext) -> None:
        calls["s1"] += 1
        ctx.send("q2", {**message.payload, "s1": True})

    @app.processor(
        "s2",
        consumes="q2",
        produces="q3",
        max_attempts=10,  # above maxReceiveCount: SQS's redrive moves it, not apix
        backoff=BackoffPolicy(max_retries=0, redelivery_seconds=0),
    )
    async def s2(message: Message, ctx: ProcessorContext) -> None:
        calls["s2"] += 1
        if message.payload.get("poison") and downstream["down"]:
            raise TransientError("downstream is down")
        ctx.send("q3", {**message.payload, "s2": True})

    @app.processor("s3", consumes="q3", produces="sink")
    async def s3(message: Message, ctx: ProcessorContext) -> None:
        calls["s3"] += 1
        ctx.send("sink", {**message.payload, "s3": True})

    h1, h2, h3 = (lambda_handler(app, name) for name in ("s1", "s2", "s3"))
    q1 = run_sync(sqs.queue_url("q1"))
    for order in ({"order": "A-1"}, {"order": "B-2", "poison": True}):
        sqs_client.send_message(QueueUrl=q1, MessageBody=json.dumps(order))

    # WHEN every batch is delivered twice (at-least-once) through stages 1 and 2
    first, _ = _poll(sqs, sqs_client, "q1", h1, lambda_context, twice=True)
    second, _ = _poll(sqs, sqs_client, "q2", h2, lambda_context, twice=True)

    # THEN stage 1 ran each order once and sent each once; stage 2 reports only the poison one
    assert first == {"batchItemFailures": []}
    assert calls["s1"] == 2
    assert len(second["batchItemFailures"]) == 1

    # WHEN q2 is polled until empty: the poison order fails again, then SQS redrives it
    for _ in range(6):
        response, bodies = _poll(sqs, sqs_client, "q2", h2, lambda_context)
        if not bodies:
            break
        assert len(response["batchItemFailures"]) == 1
    # AND stage 3 runs (twice per batch)
    third, _ = _poll(sqs, sqs_client, "q3", h3, lambda_context, twice=True)

    # THEN the good order reached the sink once; the poison one is in q2's dead-letter queue
    assert third == {"batchItemFailures": []}
    sunk = [json.loads(m["Body"]) for m in _drain(sqs, sqs_client, "sink")]
    assert [b["payload"]["order"] for b in sunk] == ["A-1"]
    assert sunk[0]["payload"] == {"order": "A-1", "s1": True, "s2": True, "s3": True}

    # WHEN `apix dlq list` peeks at the dead letters (twice: a peek loses nothing) and shows one
    listed = _apix("dlq", "list", "--queue", "q2", "--transport", env["url"], "--json")
    again = _apix("dlq", "list", "--transport", env["url"], "--json")
    assert listed.exit_code == 0, listed.output
    [dead] = json.loads(listed.output)["dead_letters"]
    assert [d["id"] for d in json.loads(again.output)["dead_letters"]] == [dead["id"]]
    shown = _apix("dlq", "show", dead["id"], "--transport", env["url"], "--json")

    # THEN it is the poison order, moved by the redrive policy
    assert dead["queue"] == "q2" and dead["error_code"] == "MAX_RECEIVES_EXCEEDED"
    assert json.loads(shown.output)["body"]["payload"] == {
        "order": "B-2",
        "poison": True,
        "s1": True,
    }

    # WHEN the downstream is back, `apix dlq replay` sends it back to q2, and the stages run
    downstream["down"] = False
    replayed = _apix("dlq", "replay", dead["id"], "--transport", env["url"])
    assert replayed.exit_code == 0, replayed.output
    after_replay = json.loads(_apix("dlq", "list", "--transport", env["url"], "--json").output)
    fourth, _ = _poll(sqs, sqs_client, "q2", h2, lambda_context, twice=True)
    fifth, _ = _poll(sqs, sqs_client, "q3", h3, lambda_context, twice=True)

    # THEN the dead-letter queue is empty and the poison order completed, once
    assert after_replay["dead_letters"] == []
    assert fourth == fifth == {"batchItemFailures": []}
    sunk = [json.loads(m["Body"]) for m in _drain(sqs, sqs_client, "sink")]
    assert [b["payload"]["order"] for b in sunk] == ["B-2"]
    assert calls["s3"] == 2
    for queue in ("q1", "q2", "q3"):
        assert run_sync(sqs.depth(queue)).total == 0, queue


def test_cli_dlq_on_sqs_lists_shows_and_replays_an_apix_dead_letter(
    env: dict[str, str], sqs: SqsTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a message apix dead-lettered with its error (as the Lambda settler does)
    run_sync(sqs.ensure_queue("orders"))
    run_sync(
        sqs.send("orders", OutgoingMessage("o-1", '{"n":1}', attributes={"tenant_id": "acme"}))
    )
    [msg] = run_sync(sqs.receive("orders", 1))
    info = DeadLetterInfo(
        "INVALID_PAYLOAD", "validation", "n: must be a string", 1, "orders", "acme"
    )
    run_sync(sqs.dead_letter("orders", msg, info))
    monkeypatch.setenv("APIX_QUEUE_URL", "sqlite:///nowhere.db")  # --transport wins

    # WHEN the dead letters are listed, one is shown and replayed (--transport: the SQS URL)
    listed = _apix("dlq", "list", "--transport", env["url"])
    doc = json.loads(_apix("dlq", "list", "--transport", env["url"], "--json").output)
    [dead] = doc["dead_letters"]
    shown = _apix("dlq", "show", dead["id"], "--transport", env["url"])
    replayed = _apix("dlq", "replay", dead["id"], "--transport", env["url"], "--json")
    missing = _apix("dlq", "show", dead["id"], "--transport", env["url"])

    # THEN list and show print the error; replay puts it back on its queue; it is gone after
    assert listed.exit_code == 0 and "INVALID_PAYLOAD" in listed.output, listed.output
    assert (dead["queue"], dead["message_id"], dead["processor"]) == ("orders", "o-1", "orders")
    assert "n: must be a string" in shown.output and '"n": 1' in shown.output
    assert json.loads(replayed.output)["replayed"] == [
        {"id": dead["id"], "queue": "orders", "message_id": "o-1"}
    ]
    assert missing.exit_code == 2 and "no dead letter" in missing.output
    [back] = run_sync(sqs.receive("orders", 1))
    assert (back.message_id, back.body) == ("o-1", '{"n":1}')


APP = """
import json
from pathlib import Path

from apix_core import App, Message, ProcessorContext

app = App("sqs-worker", database_url="sqlite+aiosqlite:///{db}")
OUT = Path({out!r})


@app.processor("relay", consumes="w-in", produces="w-out")
async def relay(message: Message, ctx: ProcessorContext) -> None:
    ctx.send("w-out", {{**message.payload, "relayed": True}})


@app.processor("sink", consumes="w-out")
async def sink(message: Message, ctx: ProcessorContext) -> None:
    with OUT.open("a") as fh:
        fh.write(json.dumps(message.payload) + "\\n")
"""


def test_apix_run_with_transport_sqs_drains_the_app_s_sqs_queues(
    env: dict[str, str],
    sqs: SqsTransport,
    sqs_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN an app module (written for local runs, no SQS in it) and a message on its SQS queue
    out = tmp_path / "out.jsonl"
    path = tmp_path / "app.py"
    path.write_text(APP.format(db=tmp_path / "worker.db", out=str(out)))
    for queue in ("w-in", "w-out"):
        run_sync(sqs.ensure_queue(queue))
    url = run_sync(sqs.queue_url("w-in"))
    sqs_client.send_message(QueueUrl=url, MessageBody=json.dumps({"order": "W-1"}))
    monkeypatch.setenv("APIX_QUEUE_URL", "sqlite:///nowhere.db")  # --transport wins

    # WHEN `apix run` drives it with --transport on SQS
    result = _apix("run", str(path), "--transport", env["url"], "--max-seconds", "60")

    # THEN both stages ran through SQS and the queues are empty
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"order": "W-1", "relayed": True}
    ]
    for queue in ("w-in", "w-out"):
        assert run_sync(sqs.depth(queue)).total == 0, queue
