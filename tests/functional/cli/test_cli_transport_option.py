"""``--transport`` on run, worker, send, dlq and queues: a transport URL or a bare scheme, which
sets APIX_QUEUE_URL for the command; an unknown scheme is a one-line error with exit code 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from apix_core.cli._common import transport_option, transport_url
from apix_core.errors import ConfigurationError

INBOX = """
    from apix_core import App, Message

    app = App("opt", tenant_id="t1")

    @app.processor("sink", consumes="inbox")
    def sink(message: Message) -> None:
        pass
"""

COMMANDS = [
    ["queues", "list"],
    ["queues", "peek", "inbox"],
    ["queues", "purge", "inbox", "--yes"],
    ["dlq", "list"],
    ["dlq", "show", "dl-1"],
    ["dlq", "replay", "dl-1"],
    ["dlq", "delete", "dl-1"],
    ["dlq", "purge", "--yes"],
    ["send", "inbox", '{"n": 1}', "-t", "t1"],
]


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("sqs", "sqs://"),
        ("sqs:", "sqs://"),
        (" azure-queue ", "azure-queue://"),
        ("sqs://?prefix=dev-", "sqs://?prefix=dev-"),
        ("sqlite:///tmp/q.db", "sqlite:///tmp/q.db"),
    ],
)
def test_a_bare_scheme_means_scheme_url(given: str, url: str) -> None:
    assert transport_url(given) == url


def test_an_empty_transport_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="--transport is empty"):
        transport_url("  ")


@pytest.mark.parametrize(
    ("given", "suggested"),
    [
        (None, ""),
        ("sqs", " --transport sqs"),
        ("sqs://?prefix=dev-&wait=0", " --transport 'sqs://?prefix=dev-&wait=0'"),
        ("postgresql://apix:s3cret@db/apix", " --transport 'postgresql://apix:***@db/apix'"),
    ],
)
def test_suggested_commands_repeat_the_transport_quoted_and_masked(
    given: str | None, suggested: str
) -> None:
    assert transport_option(given) == suggested


@pytest.mark.parametrize("command", [*COMMANDS, ["run", "APP"], ["worker", "APP"]])
def test_an_unknown_scheme_is_one_line_exit_2(apix, write_app, command: list[str]) -> None:
    # GIVEN a transport scheme nothing provides
    args = [str(write_app(INBOX)) if a == "APP" else a for a in command]

    # WHEN a command is given it
    result = apix(*args, "--transport", "carrier-pigeon")

    # THEN the registry's error, exit 2, no traceback
    assert result.exit_code == 2, result.output
    assert "no transport for carrier-pigeon:// URLs" in result.output
    assert "Traceback" not in result.output


def test_transport_url_points_the_command_at_other_queues(
    apix, write_app, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    # GIVEN a message on the environment's queues, and a second, empty queue database
    path = write_app(INBOX)
    apix("send", "inbox", '{"n": 1}', "-t", "t1")
    other = f"sqlite+aiosqlite:///{tmp_path / 'other-queues.db'}"

    # WHEN queues are listed with --transport, then without it; then run on the other queues
    elsewhere = json.loads(apix("queues", "list", "--transport", other, "--json").output)
    ran = apix("run", str(path), "--transport", other)
    os.environ["APIX_QUEUE_URL"] = cli_env["APIX_QUEUE_URL"]  # --transport set it for this process
    here = json.loads(apix("queues", "list", "--json").output)

    # THEN --transport read the other database (empty; the run there processed nothing) and
    # the message is still waiting on the environment's queues
    assert elsewhere["queues"] == []
    assert ran.exit_code == 0, ran.output
    assert {r["queue"]: r["total"] for r in here["queues"]} == {"inbox": 1}


def test_send_says_where_it_sent_and_follows_transport(
    apix, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    # GIVEN the environment's queue database, and a second one
    other = f"sqlite+aiosqlite:///{tmp_path / 'other-queues.db'}"

    # WHEN a message is sent without --transport, then one with it
    here = apix("send", "inbox", '{"n": 1}', "-t", "t1", "--message-id", "m-here")
    there = apix("send", "inbox", '{"n": 2}', "-t", "t1", "--transport", other)
    elsewhere = json.loads(apix("queues", "list", "--transport", other, "--json").output)
    os.environ["APIX_QUEUE_URL"] = cli_env["APIX_QUEUE_URL"]  # --transport set it for this process
    home = json.loads(apix("queues", "list", "--json").output)

    # THEN each went to its own queues, and said which transport and queue database it used
    assert here.exit_code == 0 and there.exit_code == 0, here.output + there.output
    assert f"sent m-here to inbox (local transport: {cli_env['APIX_QUEUE_URL']})" in here.output
    assert f"to inbox (local transport: {other})" in there.output
    assert {r["queue"]: r["total"] for r in home["queues"]} == {"inbox": 1}
    assert {r["queue"]: r["total"] for r in elsewhere["queues"]} == {"inbox": 1}


@pytest.mark.parametrize("command", [*COMMANDS, ["run"], ["worker"]])
def test_help_lists_the_transport_option(apix, command: list[str]) -> None:
    result = apix(*command[:2], "--help")
    assert result.exit_code == 0, result.output
    assert "--transport" in result.output
