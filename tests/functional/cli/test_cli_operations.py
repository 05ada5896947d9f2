"""Issue 11 (the command line): user errors, stranded messages, queues, dead-letter admin,
--json output, bulk sends, honest run summaries, read-only ``db current``, fast retries."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

INBOX = """
    import json
    from pathlib import Path

    from apix_core import App, Message, PermanentError

    app = App("ops", tenant_id="t1")
    OUT = Path(__file__).with_name("seen.jsonl")

    @app.processor("sink", consumes="inbox")
    def sink(message: Message) -> None:
        if message.payload.get("bad"):
            raise PermanentError(f"bad order {message.payload.get('n')}")
        with OUT.open("a") as fh:
            fh.write(json.dumps(message.payload) + "\\n")
"""

FLAKY = """
    from apix_core import App, Message, TransientError

    app = App("flaky", tenant_id="t1", max_attempts=3)

    @app.processor("flaky", consumes="inbox")
    def flaky(message: Message) -> None:
        raise TransientError("upstream is down")
"""


def _seen(path: Path) -> list[dict]:
    file = path.with_name("seen.jsonl")
    return [json.loads(x) for x in file.read_text().splitlines()] if file.exists() else []


# -- item 10: user errors are one line and exit 2 ---------------------------------------------
@pytest.mark.parametrize("with_app", [False, True])
def test_send_with_an_invalid_tenant_is_one_line_exit_2(apix, write_app, with_app) -> None:
    # GIVEN a tenant id that is not a valid tenant (a path traversal attempt)
    extra = ["--app", str(write_app(INBOX))] if with_app else []

    # WHEN it is used to send
    result = apix("send", "inbox", '{"n": 1}', "-t", "../evil", *extra)

    # THEN a one-line error, exit 2, no traceback
    assert result.exit_code == 2, result.output
    assert "tenant id '../evil'" in result.output
    assert "Traceback" not in result.output and "pydantic" not in result.output


# -- item 11: stranded messages and `apix queues` ---------------------------------------------
def test_send_with_app_refuses_a_queue_nobody_consumes(apix, write_app) -> None:
    # GIVEN an app consuming only "inbox"
    path = write_app(INBOX)

    # WHEN a message is sent to another queue through the app, and without --app
    refused = apix("send", "no-such-queue", '{"n": 1}', "--app", str(path))
    bare = apix("send", "no-such-queue", '{"n": 1}', "-t", "t1")

    # THEN --app refuses (exit 2, naming what it consumes); without it, a note is printed
    assert refused.exit_code == 2, refused.output
    assert "no processor of ops consumes queue 'no-such-queue'" in refused.output
    assert "inbox" in refused.output
    assert bare.exit_code == 0, bare.output
    assert "not checked that a processor consumes no-such-queue" in bare.output


def test_run_reports_unconsumed_queues_and_strict_fails(apix, write_app) -> None:
    # GIVEN a message on a queue the app does not consume, and one it does
    path = write_app(INBOX)
    apix("send", "stranded", '{"n": 1}', "-t", "t1")
    apix("send", "inbox", '{"n": 2}', "-t", "t1")

    # WHEN the app runs, strictly
    run = apix("run", str(path), "--strict")

    # THEN its own queue drained, the stranded queue is reported and --strict exits 1
    assert run.exit_code == 1, run.output
    assert "drained" in run.output
    assert "1 message(s) on queue stranded, which no processor of ops consumes" in run.output
    assert [r["n"] for r in _seen(path)] == [2]


def test_queues_list_peek_purge(apix, write_app) -> None:
    # GIVEN three messages on one queue and one on another
    path = write_app(INBOX)
    for n in range(3):
        apix("send", "inbox", json.dumps({"n": n}), "-t", "t1", "--message-id", f"m{n}")
    apix("send", "other", '{"n": 9}', "-t", "t1")

    # WHEN queues are listed (with the app: who consumes), peeked at, then one is purged
    listed = apix("queues", "list", "--app", str(path), "--json")
    table = apix("queues", "list")
    peeked = apix("queues", "peek", "inbox", "-n", "2", "--json")
    peek_table = apix("queues", "peek", "inbox")
    declined = apix("queues", "purge", "inbox", input="n\n")
    after_decline = apix("queues", "list", "--json")
    purged = apix("queues", "purge", "inbox", "--yes", "--json")
    after = json.loads(apix("queues", "list", "--json").output)

    # THEN depths and consumers are right, peek shows the oldest without consuming,
    # purge asks first and deletes only when confirmed
    doc = json.loads(listed.output)
    rows = {r["queue"]: r for r in doc["queues"]}
    assert doc["app"] == "ops"
    assert rows["inbox"]["visible"] == 3 and rows["inbox"]["total"] == 3
    assert rows["inbox"]["consumer"] == "sink"
    assert rows["other"]["consumer"] is None and rows["other"]["total"] == 1
    assert "inbox" in table.output and "other" in table.output
    messages = json.loads(peeked.output)["messages"]
    assert [m["message_id"] for m in messages] == ["m0", "m1"]
    assert messages[0]["body"]["payload"] == {"n": 0} and messages[0]["state"] == "visible"
    assert "oldest 3 of 3" in peek_table.output
    assert declined.exit_code == 1
    assert {r["queue"]: r["total"] for r in json.loads(after_decline.output)["queues"]} == {
        "inbox": 3,
        "other": 1,
    }
    assert json.loads(purged.output) == {"queue": "inbox", "purged": 3}
    assert [r["queue"] for r in after["queues"]] == ["other"]


# -- item 12: dead-letter admin -----------------------------------------------------------------
def test_dlq_list_counts_filters_delete_purge_and_replay_force(apix, write_app) -> None:
    # GIVEN four dead letters on two tenants
    path = write_app(INBOX)
    for n, tenant in ((1, "t1"), (2, "t1"), (3, "t2"), (4, "t2")):
        apix("send", "inbox", json.dumps({"n": n, "bad": True}), "-t", tenant)
    assert apix("run", str(path)).exit_code == 0

    # WHEN listed with a small limit, with --all, with filters, as JSON
    limited = apix("dlq", "list", "--limit", "2")
    everything = apix("dlq", "list", "--all", "--json")
    by_tenant = json.loads(apix("dlq", "list", "--tenant", "t2", "--json").output)
    by_code = json.loads(apix("dlq", "list", "--code", "NOPE", "--json").output)
    recent = json.loads(
        apix("dlq", "list", "--since", "1h", "--processor", "sink", "--json").output
    )
    future = json.loads(apix("dlq", "list", "--since", "2999-01-01T00:00:00", "--json").output)
    bad_since = apix("dlq", "list", "--since", "yesterday")

    # THEN "2 of 4" says more exist, and the filters narrow the list
    assert "dead letters (2 of 4)" in limited.output
    assert "--limit N or --all" in limited.output
    doc = json.loads(everything.output)
    assert doc["total"] == 4 and doc["shown"] == 4
    assert {d["error_code"] for d in doc["dead_letters"]} == {"VALIDATION_ERROR"}
    assert by_tenant["total"] == 2 and {d["tenant_id"] for d in by_tenant["dead_letters"]} == {"t2"}
    assert by_code["total"] == 0
    assert recent["total"] == 4
    assert future["total"] == 0
    assert bad_since.exit_code == 2 and "neither a duration" in bad_since.output

    # WHEN one is replayed twice (the second needs --force), one deleted, t2's purged
    first_id = doc["dead_letters"][-1]["id"]
    replayed = apix("dlq", "replay", first_id)
    again = apix("dlq", "replay", first_id)
    forced = apix("dlq", "replay", first_id, "--force")
    deleted = apix("dlq", "delete", doc["dead_letters"][-2]["id"])
    missing = apix("dlq", "delete", "999999")
    purged = apix("dlq", "purge", "--tenant", "t2", "--yes", "--json")
    left = json.loads(apix("dlq", "list", "--json").output)

    # THEN the replay is refused without --force (saying when), and deletes are exact
    assert replayed.exit_code == 0, replayed.output
    assert again.exit_code == 2
    assert "was replayed already, at" in again.output and "--force" in again.output
    assert forced.exit_code == 0, forced.output
    assert deleted.exit_code == 0, deleted.output
    assert missing.exit_code == 2 and "no dead letter with id 999999" in missing.output
    assert json.loads(purged.output)["purged"] == 2
    assert left["total"] == 1 and left["dead_letters"][0]["id"] == first_id


def test_dlq_replay_all_takes_the_filters_of_list(apix, write_app) -> None:
    # GIVEN four dead letters on two tenants
    path = write_app(INBOX)
    for n, tenant in ((1, "t1"), (2, "t1"), (3, "t2"), (4, "t2")):
        apix("send", "inbox", json.dumps({"n": n, "bad": True}), "-t", tenant)
    assert apix("run", str(path)).exit_code == 0

    # WHEN only t2's are replayed, then t2's again, then a filter is given with an id
    t2 = apix("dlq", "replay", "--all", "--tenant", "t2", "--json")
    t2_again = apix("dlq", "replay", "--all", "-t", "t2", "--json")
    listed = json.loads(apix("dlq", "list", "--json").output)["dead_letters"]
    with_id = apix("dlq", "replay", listed[0]["id"], "--tenant", "t1")

    # THEN exactly t2's two were replayed, once, and t1's still wait
    assert t2.exit_code == 0, t2.output
    replayed_ids = {d["id"] for d in json.loads(t2.output)["replayed"]}
    assert replayed_ids == {d["id"] for d in listed if d["tenant_id"] == "t2"}
    assert len(replayed_ids) == 2
    assert json.loads(t2_again.output)["replayed"] == []
    assert {d["tenant_id"] for d in listed if d["replayed_at"] is None} == {"t1"}
    # AND a filter beside an id is a one-line error saying it goes with --all
    assert with_id.exit_code == 2
    assert "--tenant only go(es) with --all" in with_id.output

    # WHEN the app runs again THEN t2's messages come back to it (and fail again as bad)
    assert apix("run", str(path)).exit_code == 0
    after = json.loads(apix("dlq", "list", "--tenant", "t2", "--json").output)
    assert after["total"] == 4


# -- item 13: --json for entities and errors ---------------------------------------------------
def test_entities_and_errors_as_json(apix, write_app) -> None:
    # GIVEN an entity and one processing error
    path = write_app(
        """
        from apix_core import App, Message, ProcessorContext, PermanentError

        app = App("js", tenant_id="t1")

        @app.processor("keep", consumes="inbox")
        def keep(message: Message, ctx: ProcessorContext) -> None:
            if message.payload.get("bad"):
                raise PermanentError("nope")
            eid = ctx.persist_entity("c-1", "customer", "crm", message.payload)
            ctx.transition(eid, "active", "seen")
        """
    )
    apix("send", "inbox", '{"name": "Ada"}', "-t", "t1")
    apix("send", "inbox", '{"bad": true}', "-t", "t1")
    apix("run", str(path))

    # WHEN entities and errors are asked for as JSON
    listed = json.loads(apix("entities", "list", "-t", "t1", "--json").output)
    shown = json.loads(
        apix("entities", "show", listed["entities"][0]["id"], "-t", "t1", "--json").output
    )
    errors = json.loads(apix("errors", "-t", "t1", "--json").output)

    # THEN each is one JSON document with the documented shape
    assert listed["total"] == 1 and listed["entities"][0]["external_id"] == "c-1"
    assert shown["entity"]["state"] == "active"
    assert shown["transitions"][-1]["to_state"] == "active"
    assert len(shown["versions"]) == 1
    assert errors["total"] == 1
    assert errors["groups"][0]["error_code"] == "VALIDATION_ERROR"
    assert errors["groups"][0]["processor"] == "keep"


# -- item 14 and issue 12 item 10: bulk sends from JSONL -----------------------------------------
def test_send_file_and_stdin_jsonl(apix, write_app, tmp_path: Path) -> None:
    # GIVEN a JSONL file, JSONL on stdin, and the app consuming their queue
    path = write_app(INBOX)
    jsonl = tmp_path / "orders.jsonl"
    jsonl.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(5)) + "\n")

    # WHEN both are sent, through the app for one of them
    from_file = apix("send", "inbox", "--file", str(jsonl), "--app", str(path))
    from_stdin = apix("send", "inbox", "-", "-t", "t1", input='{"n": 10}\n{"n": 11}\n')
    run = apix("run", str(path))

    # THEN every line became one message
    assert from_file.exit_code == 0, from_file.output
    assert "sent 5 messages to inbox" in from_file.output
    assert "sent 2 messages to inbox" in from_stdin.output
    assert run.exit_code == 0, run.output
    assert sorted(r["n"] for r in _seen(path)) == [0, 1, 2, 3, 4, 10, 11]


def test_send_jsonl_with_a_bad_line_sends_nothing(apix, tmp_path: Path) -> None:
    # GIVEN a JSONL file whose third line is broken, and one whose second is not an object
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"n": 1}\n{"n": 2}\n{"n": \n')
    listy = tmp_path / "listy.jsonl"
    listy.write_text('{"n": 1}\n[1, 2]\n')

    # WHEN they are sent
    first = apix("send", "inbox", "--file", str(broken), "-t", "t1")
    second = apix("send", "inbox", "--file", str(listy), "-t", "t1")
    queues = json.loads(apix("queues", "list", "--json").output)

    # THEN the line is named, exit 2, and nothing was sent
    assert first.exit_code == 2 and f"{broken} line 3" in first.output
    assert second.exit_code == 2 and "line 2" in second.output
    assert "must be a JSON object" in second.output
    assert queues["queues"] == []


def test_send_stdin_with_invalid_utf8_is_rejected(apix, cli_env) -> None:
    # GIVEN bytes on stdin that are not UTF-8 (latin-1 "café")
    from typer.testing import CliRunner

    from apix_core.cli.main import cli

    # WHEN they are sent
    result = CliRunner().invoke(
        cli, ["send", "inbox", "-", "-t", "t1"], input=b'{"name": "caf\xe9"}\n'
    )

    # THEN a clear error, exit 2, nothing sent
    assert result.exit_code == 2, result.output
    assert "stdin is not valid UTF-8 (line 1" in result.output
    assert json.loads(apix("queues", "list", "--json").output)["queues"] == []


def test_app_send_many_sends_in_batches(write_app, cli_env) -> None:
    # GIVEN an app, and more payloads than one batch holds
    import asyncio

    from apix_core.cli.loader import load_app

    app = load_app(str(write_app(INBOX)))
    app.SEND_MANY_BATCH = 4  # type: ignore[misc]

    async def go() -> tuple[list[str], int]:
        async with app:
            ids = await app.send_many("inbox", [{"n": n} for n in range(10)])
            found = await app.transport.peek("inbox", 100)  # type: ignore[union-attr]
            return ids, len(found)

    # WHEN they are sent at once
    ids, queued = asyncio.run(go())

    # THEN every one is queued, ids in order and distinct
    assert len(ids) == len(set(ids)) == 10
    assert queued == 10


# -- item 15: honest run summaries, read-only db current ---------------------------------------
def test_run_stopped_by_max_seconds_says_so(apix, write_app) -> None:
    # GIVEN an app whose only processor always fails transiently (redelivered after 1 s)
    path = write_app(FLAKY)
    apix("send", "inbox", '{"n": 1}', "-t", "t1")

    # WHEN the run is stopped by --max-seconds before the message is done
    run = apix("run", str(path), "--max-seconds", "0.5")

    # THEN the summary says why it stopped, not "drained"
    assert "drained" not in run.output
    assert "stopped after --max-seconds 0.5 (1 message(s) still queued)" in run.output


def test_db_current_creates_no_files(apix, tmp_path: Path, monkeypatch) -> None:
    # GIVEN a fresh folder, and SQLite databases inside it that do not exist
    fresh = tmp_path / "fresh"
    monkeypatch.setenv("APIX_DATABASE_URL", f"sqlite:///{fresh / 'sub' / 'apix.db'}")
    monkeypatch.setenv("APIX_QUEUE_URL", f"sqlite:///{fresh / 'sub' / 'q.db'}")
    fresh.mkdir()

    # WHEN the read-only command runs
    result = apix("db", "current")

    # THEN it says there is no database, and created nothing
    assert result.exit_code == 0, result.output
    assert result.output.count("no database at") == 2
    assert list(fresh.iterdir()) == []


# -- item 16: help placeholders ----------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        ["send"],
        ["run"],
        ["serve"],
        ["queues", "purge"],
        ["queues", "peek"],
        ["dlq", "list"],
        ["dlq", "purge"],
        ["dlq", "replay"],
        ["entities", "list"],
        ["errors"],
    ],
)
def test_help_has_no_bool_or_brace_placeholders(apix, command: list[str]) -> None:
    # GIVEN / WHEN a command's help is printed
    result = apix(*command, "--help")

    # THEN flags show no <bool> and the usage line no {name}
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    usage = result.output.splitlines()[0]
    assert "{" not in usage and "}" not in usage, usage


# -- item 18: fast retries -----------------------------------------------------------------------
def test_fast_retries_shrink_backoff(apix, write_app, monkeypatch) -> None:
    # GIVEN an app whose processor always fails transiently, 3 attempts, two messages
    path = write_app(FLAKY)
    apix("send", "inbox", '{"n": 1}', "-t", "t1")
    apix("send", "inbox", '{"n": 2}', "-t", "t1")

    # WHEN it runs with --fast-retries
    started = time.monotonic()
    run = apix("run", str(path), "--fast-retries")
    fast = time.monotonic() - started

    # THEN both are dead-lettered after 3 attempts within a couple of seconds (production
    # backoff: 1 s + 2 s of redelivery plus in-invocation retries per message)
    assert run.exit_code == 0, run.output
    assert "2 dead-lettered" in run.output
    assert fast < 2.5, fast


def test_fast_retries_setting_caps_the_policies(monkeypatch) -> None:
    # GIVEN APIX_FAST_RETRIES=true, and an app whose processor has the production backoff
    from apix_core import App
    from apix_core.constants import FAST_RETRY_MAX_SECONDS

    monkeypatch.setenv("APIX_FAST_RETRIES", "true")
    app = App("fr", tenant_id="t1", database_url="sqlite:///:memory:")

    @app.processor("p", consumes="q")
    def p(message: object) -> None: ...

    import asyncio

    async def go() -> tuple[float, float, float, float]:
        async with app:
            h = app.handler("p")
            return (
                h.retry.delay(4),
                h.retry.delay(1, retry_after=60),
                h.invoker.config.backoff.max_seconds,
                app.specs["p"].config.backoff.redelivery_seconds,
            )

    # WHEN its handler is built
    redelivery, asked, backoff_max, registered = asyncio.run(go())

    # THEN every delay is capped, and the registered spec keeps its production backoff
    assert redelivery <= FAST_RETRY_MAX_SECONDS
    assert asked <= FAST_RETRY_MAX_SECONDS
    assert backoff_max <= FAST_RETRY_MAX_SECONDS
    assert registered == 1.0
