"""docs/aws.md "Run locally against moto_server": an app with a queue pipeline and a schedule,
its queues created as the page says, run by ``apix run --transport sqs`` on moto_server; what
a new user meets there (a missing queue, dead letters, ``apix send --transport``)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apix_aws.transport.sqs import SqsTransport
from apix_core import App, Message
from apix_core.cli.main import cli
from apix_core.runtime.invoke import run_sync
from apix_core.topology import SCHEDULE_QUEUE_PREFIX

pytestmark = pytest.mark.aws

REGION = "us-east-1"

APP = textwrap.dedent(
    """
    import json
    import os

    from apix_core import App, Message

    app = App("shop", tenant_id="acme")


    def _note(line: dict) -> None:
        with open(os.environ["TRIAL_LOG"], "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\\n")


    @app.processor("normalize", consumes="raw-orders", produces=["orders"])
    def normalize(message: Message) -> dict:
        return {"order_id": message.payload["order_id"]}


    @app.processor("store", consumes="orders")
    def store(message: Message) -> None:
        _note({"stored": message.payload["order_id"]})


    @app.processor("nightly", schedule="0 2 * * *")
    def nightly(message: Message) -> None:
        _note({"tick": message.payload["schedule"]})
    """
)


async def test_schedule_queues_get_an_sqs_name_and_keep_their_apix_name(
    sqs: SqsTransport,
) -> None:
    # GIVEN the queue `apix run` puts a schedule's ticks on (dots: no SQS name can hold it)
    queue = f"{SCHEDULE_QUEUE_PREFIX}nightly"
    # WHEN it is created
    url = await sqs.ensure_queue(queue)
    # THEN SQS names it apix-schedule-NAME, and apix lists it under its own name
    assert url.endswith(f"/{sqs.queue_prefix}apix-schedule-nightly")
    assert sqs.sqs_name(queue) == f"{sqs.queue_prefix}apix-schedule-nightly"
    assert queue in await sqs.queues()


def test_an_app_with_a_schedule_runs_on_sqs_as_the_docs_say(
    sqs: SqsTransport,
    moto_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN the user's app.py, and its queues created like the docs' create_queues.py
    (tmp_path / "app.py").write_text(APP, encoding="utf-8")
    log = tmp_path / "trial.jsonl"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRIAL_LOG", str(log))
    monkeypatch.setenv("APIX_SQS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.delenv("APIX_QUEUE_URL", raising=False)
    app = App("shop", tenant_id="acme")

    @app.processor("normalize", consumes="raw-orders", produces=["orders"])
    def normalize(message: Message) -> None: ...

    @app.processor("store", consumes="orders")
    def store(message: Message) -> None: ...

    @app.processor("nightly", schedule="0 2 * * *")
    def nightly(message: Message) -> None: ...

    names = set(app.topology.queues())
    names.update(app.topology.input_queue(spec) for spec in app.topology.schedules())
    for name in sorted(n for n in names if n):
        run_sync(sqs.ensure_queue(name))
    transport = f"sqs://?prefix={sqs.queue_prefix}&wait=0"
    runner = CliRunner()
    sent = runner.invoke(
        cli,
        ["send", "raw-orders", json.dumps({"order_id": "A-1"}), "--tenant", "acme"],
        env={"APIX_QUEUE_URL": transport},
    )
    assert sent.exit_code == 0, sent.output
    # WHEN `apix run app.py --transport sqs` runs
    result = runner.invoke(cli, ["run", "app.py", "--transport", transport])
    # THEN it drains: the message went through both stages and the schedule fired once
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert {"stored": "A-1"} in lines
    assert {"tick": "0 2 * * *"} in lines
    assert len(lines) == 2


GUARD = """
    from apix_core import App, Message, PermanentError

    app = App("guard", tenant_id="acme")


    @app.processor("check", consumes="raw-orders")
    def check(message: Message) -> None:
        raise PermanentError(f"order {message.payload['order_id']} is invalid")
"""


@pytest.mark.parametrize("command", ["run", "worker"])
def test_a_missing_queue_is_one_line_naming_it_without_a_traceback(
    apix, write_app, moto_endpoint: str, queue_prefix: str, monkeypatch, command: str
) -> None:
    # GIVEN an app whose queue was never created on SQS
    path = write_app(GUARD)
    monkeypatch.setenv("APIX_SQS_ENDPOINT_URL", moto_endpoint)
    transport = f"sqs://?prefix={queue_prefix}&wait=0"

    # WHEN it runs on SQS
    result = apix(command, str(path), "--transport", transport, "--max-seconds", "10")

    # THEN one line names the queue and how to create it: exit 2, no traceback
    assert result.exit_code == 2, result.output
    assert (
        f"error: SQS queue '{queue_prefix}raw-orders' (apix queue 'raw-orders') does not exist"
        in result.output
    )
    assert "ensure_queue" in result.output
    assert "Traceback" not in result.output
    assert "worker iteration failed" not in result.output
    lines = [x for x in result.output.splitlines() if x and "Ctrl-C or SIGTERM stops it" not in x]
    assert len(lines) == 1, result.output


def test_dead_letter_queues_are_not_unconsumed_queues(
    apix, write_app, sqs: SqsTransport, moto_endpoint: str, monkeypatch
) -> None:
    # GIVEN an app whose processor refuses every order, its queue (with raw-orders-dlq) and a
    # stray queue on SQS, and an order sent with `apix send --transport`
    path = write_app(GUARD)
    monkeypatch.setenv("APIX_SQS_ENDPOINT_URL", moto_endpoint)
    run_sync(sqs.ensure_queue("raw-orders"))
    run_sync(sqs.ensure_queue("stray", dlq=False))
    transport = f"sqs://?prefix={sqs.queue_prefix}&wait=0"
    sent = apix("send", "raw-orders", '{"order_id": "A-1"}', "-t", "acme", "--transport", transport)
    assert sent.exit_code == 0, sent.output
    assert f"to raw-orders (sqs transport: {transport})" in sent.output

    # WHEN it runs, then runs again strictly
    first = apix("run", str(path), "--transport", transport)
    again = apix("run", str(path), "--transport", transport, "--strict")

    # THEN the dead letter is reported with commands the SQS transport supports, its queue is
    # never taken for an unconsumed one, and --strict passes while it holds the dead letter
    assert first.exit_code == 0, first.output
    assert f"inspect with `apix dlq list --transport '{transport}'`" in first.output
    assert "raw-orders-dlq" not in first.output + again.output
    assert again.exit_code == 0, again.output
    listed = apix("dlq", "list", "--transport", transport, "--json")
    sent_id = re.search(r"sent (\S+) to", sent.output)
    assert sent_id is not None
    assert [r["message_id"] for r in json.loads(listed.output)["dead_letters"]] == [
        sent_id.group(1)
    ]

    # AND a message on a queue no processor consumes is reported without `apix queues peek`
    apix("send", "stray", '{"order_id": "B-2"}', "-t", "acme", "--transport", transport)
    stray = apix("run", str(path), "--transport", transport)
    assert "1 message(s) on queue stray, which no processor of guard consumes" in stray.output
    assert "the sqs transport cannot peek at or purge a queue" in stray.output
    assert "apix queues" not in stray.output
