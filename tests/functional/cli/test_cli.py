"""The ``apix`` command line against real databases (SQLite files or PostgreSQL)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from apix_core.store.migrate import alembic_config

PIPELINE = """
    import json
    from pathlib import Path

    from apix_core import App, Message, ProcessorContext

    app = App("cli-test", tenant_id="t1")
    OUT = Path(__file__).with_name("seen.jsonl")

    @app.processor("tick", schedule="0 0 1 1 *", produces=["numbers"])
    def tick(message: Message, ctx: ProcessorContext) -> None:
        for i in range(3):
            ctx.send("numbers", {"n": i})

    @app.processor("double", consumes="numbers", produces=["doubled"])
    def double(message: Message) -> dict:
        return {"n": message.payload["n"] * 2}

    @app.processor("sink", consumes="doubled")
    def sink(message: Message) -> None:
        with OUT.open("a") as fh:
            fh.write(json.dumps(message.payload) + "\\n")
"""

GUARDED = """
    from pathlib import Path

    from apix_core import App, Message, ProcessorContext, PermanentError

    app = App("guarded", tenant_id="t1")
    ALLOW = Path(__file__).with_name("allow")

    @app.processor("guard", consumes="inbox", max_attempts=3)
    def guard(message: Message, ctx: ProcessorContext) -> None:
        if not ALLOW.exists():
            raise PermanentError(f"order {message.payload['order']} is not allowed yet")
        eid = ctx.persist_entity(str(message.payload["order"]), "order", "cli", message.payload)
        ctx.transition(eid, "accepted", "guard passed")
"""


def _seen(path: Path) -> list[dict]:
    file = path.with_name("seen.jsonl")
    if not file.exists():
        return []
    return [json.loads(line) for line in file.read_text().splitlines()]


def test_run_drains_app_and_prints_summary(apix, write_app) -> None:
    # GIVEN an app whose schedule emits three messages through two stages
    path = write_app(PIPELINE)

    # WHEN it is run in drain mode
    result = apix("run", str(path))

    # THEN every stage ran, the table and a summary line were printed, and the exit code is 0
    assert result.exit_code == 0, result.output
    assert sorted(r["n"] for r in _seen(path)) == [0, 2, 4]
    assert "drained" in result.output
    assert "7 completed" in result.output
    assert "0 dead-lettered" in result.output
    assert "1 schedule tick" in result.output
    for name in ("apix.schedule.tick", "numbers", "doubled"):
        assert name in result.output


def test_send_then_run_processes_the_message(apix, write_app) -> None:
    # GIVEN an app file and two messages sent with the CLI (bare transport and through the app)
    path = write_app(PIPELINE)
    first = apix("send", "numbers", '{"n": 10}', "--tenant", "t1", "--message-id", "m-1")
    second = apix("send", "numbers", '{"n": 20}', "--app", str(path))
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert "sent m-1 to numbers" in first.output

    # WHEN the app runs without firing its schedule
    result = apix("run", str(path), "--no-schedules")

    # THEN both messages went through both stages
    assert result.exit_code == 0, result.output
    assert sorted(r["n"] for r in _seen(path)) == [20, 40]
    assert "4 completed" in result.output


def test_send_same_message_id_twice_is_processed_once(apix, write_app) -> None:
    # GIVEN the same message sent twice with one message id
    path = write_app(PIPELINE)
    for _ in range(2):
        assert apix("send", "numbers", '{"n": 1}', "-t", "t1", "--message-id", "dup").exit_code == 0
        # WHEN the app runs after each send
        assert apix("run", str(path), "--no-schedules").exit_code == 0

    # THEN the effect happened once
    assert [r["n"] for r in _seen(path)] == [2]


def test_send_reads_payload_from_stdin(apix, write_app) -> None:
    # GIVEN a payload on stdin
    path = write_app(PIPELINE)

    # WHEN it is sent with "-"
    result = apix("send", "numbers", "-", "-t", "t1", input='{"n": 5}')
    apix("run", str(path), "--no-schedules")

    # THEN it was processed
    assert result.exit_code == 0, result.output
    assert [r["n"] for r in _seen(path)] == [10]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object"), ('"x"', "JSON object")],
)
def test_send_rejects_invalid_json(apix, payload: str, expected: str) -> None:
    # GIVEN a payload that is not a JSON object
    # WHEN it is sent
    result = apix("send", "numbers", payload, "--tenant", "t1")

    # THEN the CLI exits 2 with a clear message and no traceback
    assert result.exit_code == 2
    assert expected in result.output
    assert "Traceback" not in result.output


def test_missing_tenant_exits_2(apix) -> None:
    # GIVEN no --tenant and no APIX_TENANT_ID
    # WHEN tenant-scoped commands run
    for args in (["entities", "list"], ["errors"], ["send", "q", "{}"]):
        result = apix(*args)

        # THEN each exits 2 and says how to give a tenant
        assert result.exit_code == 2, args
        assert "--tenant" in result.output and "APIX_TENANT_ID" in result.output


def test_tenant_falls_back_to_env(apix, monkeypatch) -> None:
    # GIVEN APIX_TENANT_ID in the environment
    monkeypatch.setenv("APIX_TENANT_ID", "env-tenant")

    # WHEN entities are listed without --tenant
    result = apix("entities", "list")

    # THEN the environment's tenant is used
    assert result.exit_code == 0, result.output
    assert "entities of env-tenant (0 of 0)" in result.output


def test_dead_letter_list_show_replay_round_trip(apix, write_app, tmp_path: Path) -> None:
    # GIVEN a processor that rejects messages with a PermanentError, and two messages
    path = write_app(GUARDED)
    apix("send", "inbox", '{"order": 1}', "-t", "t1", "--message-id", "order-1")
    apix("send", "inbox", '{"order": 2}', "-t", "t1", "--message-id", "order-2")

    # WHEN the app runs (strict: dead letters make the exit code 1)
    run = apix("run", str(path), "--strict")

    # THEN both are dead-lettered at once (validation errors are never retried)
    assert run.exit_code == 1, run.output
    assert "2 dead-lettered" in run.output
    listing = apix("dlq", "list", "--queue", "inbox")
    assert listing.exit_code == 0, listing.output
    assert listing.output.count("VALIDATION_ERROR") == 2
    ids = re.findall(r"^│ (\d+) ", listing.output, re.MULTILINE)
    assert len(ids) == 2
    assert "dead letters (0 of 0)" in apix("dlq", "list", "--queue", "other").output

    # AND show gives the error, the attempts and the original message
    shown = apix("dlq", "show", ids[-1])
    assert shown.exit_code == 0, shown.output
    assert "order-1" in shown.output
    assert "order 1 is not allowed yet" in shown.output
    assert '"order": 1' in shown.output
    assert "guard" in shown.output

    # WHEN the cause is fixed and one dead letter is replayed, then the rest with --all
    (tmp_path / "allow").touch()
    one = apix("dlq", "replay", ids[-1])
    assert one.exit_code == 0, one.output
    assert "1 dead letter(s) replayed" in one.output
    rest = apix("dlq", "replay", "--all", "--queue", "inbox")
    assert "1 dead letter(s) replayed" in rest.output
    again = apix("dlq", "replay", "--all")
    rerun = apix("run", str(path), "--strict")

    # THEN nothing is replayed twice, and both messages now complete
    assert "0 dead letter(s) replayed" in again.output
    assert rerun.exit_code == 0, rerun.output
    assert "2 completed" in rerun.output
    assert "0 dead-lettered" in rerun.output
    entities = apix("entities", "list", "--tenant", "t1")
    assert "(2 of 2)" in entities.output
    assert "accepted" in entities.output


def test_dlq_errors_exit_2(apix) -> None:
    # GIVEN an empty dead-letter table
    # WHEN an unknown id is shown, or replay gets no id
    missing = apix("dlq", "show", "999")
    bad = apix("dlq", "show", "abc")
    neither = apix("dlq", "replay")

    # THEN each is a clear error with exit code 2
    assert missing.exit_code == 2 and "no dead letter with id 999" in missing.output
    assert bad.exit_code == 2 and "integers" in bad.output
    assert neither.exit_code == 2 and "--all" in neither.output


def test_entities_list_and_show(apix, write_app, tmp_path: Path) -> None:
    # GIVEN three processed orders, one of them sent twice with new content (a new version)
    path = write_app(GUARDED)
    (tmp_path / "allow").touch()
    apix("send", "inbox", '{"order": 7, "qty": 1}', "-t", "t1")
    apix("send", "inbox", '{"order": 8}', "-t", "t1")
    apix("send", "inbox", '{"order": 9}', "-t", "t1")
    assert apix("run", str(path)).exit_code == 0
    apix("send", "inbox", '{"order": 7, "qty": 2}', "-t", "t1")
    assert apix("run", str(path)).exit_code == 0

    # WHEN entities are listed (with a type filter and a limit) and one is shown
    listing = apix("entities", "list", "--tenant", "t1", "--type", "order", "--limit", "10")
    limited = apix("entities", "list", "--tenant", "t1", "-n", "1")
    other_type = apix("entities", "list", "--tenant", "t1", "--type", "invoice")
    other_tenant = apix("entities", "list", "--tenant", "t2")
    row = next(line for line in listing.output.splitlines() if "│ 7 " in line)
    entity_id = re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", row).group(0)
    shown = apix("entities", "show", entity_id, "--tenant", "t1")

    # THEN the list holds the tenant's three orders, and show has both versions and transitions
    assert listing.exit_code == 0, listing.output
    assert "(3 of 3)" in listing.output
    assert "(1 of 3)" in limited.output
    assert "(0 of 3)" in other_type.output
    assert "(0 of 0)" in other_tenant.output
    assert shown.exit_code == 0, shown.output
    assert "versions" in shown.output and "state transitions" in shown.output
    assert re.search(r"│ 2 +│ [0-9a-f]{16} │ guard", shown.output)
    assert "received" in shown.output and "accepted" in shown.output
    assert "guard passed" in shown.output
    # the store holds metadata only: the payload's values never show up
    assert '"qty"' not in shown.output
    # another tenant cannot see the entity
    hidden = apix("entities", "show", entity_id, "--tenant", "t2")
    assert hidden.exit_code == 2 and "no entity" in hidden.output


def test_graph_prints_mermaid_with_queues(apix, write_app) -> None:
    # GIVEN an app file
    path = write_app(PIPELINE)

    # WHEN its graph is printed
    result = apix("graph", str(path))

    # THEN it is a Mermaid flowchart naming every queue and processor
    assert result.exit_code == 0, result.output
    assert result.output.startswith("flowchart LR")
    for name in ('("numbers")', '("doubled")', '["tick"]', '["double"]', '["sink"]'):
        assert name in result.output
    assert "q_numbers --> p_double" in result.output


def test_app_loading_errors_and_attribute_selection(apix, write_app) -> None:
    # GIVEN files with no App, with two Apps, and a missing file
    none = write_app("x = 1\n", "none.py")
    two = write_app(
        """
        from apix_core import App
        first = App("one")
        second = App("two")

        @second.processor("p", consumes="q2")
        def p(message):
            return None
        """,
        "two.py",
    )

    # WHEN graph is asked for each
    # THEN each failure is a clear message with exit code 2, and :attr picks one App
    no_app = apix("graph", str(none))
    assert no_app.exit_code == 2 and "defines no apix App" in no_app.output
    several = apix("graph", str(two))
    assert several.exit_code == 2 and "first, second" in several.output
    picked = apix("graph", f"{two}:second")
    assert picked.exit_code == 0 and '("q2")' in picked.output
    wrong = apix("graph", f"{two}:missing")
    assert wrong.exit_code == 2 and "no attribute 'missing'" in wrong.output
    absent = apix("graph", "does/not/exist.py")
    assert absent.exit_code == 2 and "no such file" in absent.output


def test_db_upgrade_and_current(apix, backend: str, monkeypatch, empty_database_url) -> None:
    # GIVEN fresh databases (on PostgreSQL reached as the superuser: it migrates) and no
    # automatic migration
    monkeypatch.setenv("APIX_AUTO_MIGRATE", "false")
    if backend == "postgres":
        monkeypatch.setenv("APIX_DATABASE_URL", empty_database_url)
        monkeypatch.setenv("APIX_QUEUE_URL", empty_database_url)
    before = apix("db", "current")
    listing = apix("dlq", "list")

    # WHEN the schema is upgraded
    upgraded = apix("db", "upgrade")
    after = apix("db", "current")

    # THEN current reports no database (SQLite files are not created by it) or no revision
    # before, and the head revision after, for each database
    expected_dbs = 2 if backend == "sqlite" else 1
    assert before.exit_code == 0, before.output
    missing = "no database at" if backend == "sqlite" else "none (run `apix db upgrade`)"
    assert before.output.count(missing) == expected_dbs
    assert listing.exit_code == 2 and "apix db upgrade" in listing.output
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.output.count("upgraded") == expected_dbs
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert after.output.count(f": {head}") == expected_dbs
    assert "dead letters (0 of 0)" in apix("dlq", "list").output


def test_errors_summary_groups_by_processor_and_code(apix, write_app) -> None:
    # GIVEN three messages rejected by one processor
    path = write_app(GUARDED)
    for i in range(3):
        apix("send", "inbox", json.dumps({"order": i}), "-t", "t1")
    apix("run", str(path))

    # WHEN the errors are summarised (and for a tenant that had none)
    result = apix("errors", "--tenant", "t1", "--since", "1h", "--window", "5m")
    empty = apix("errors", "--tenant", "t2")
    invalid = apix("errors", "--tenant", "t1", "--since", "yesterday")

    # THEN one group shows the processor, the code, the count and that all were dead-lettered
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "VALIDATION_ERROR" in line)
    cells = [c.strip() for c in row.split("│")]
    assert cells[2:7] == ["guard", "VALIDATION_ERROR", "validation", "3", "3"]
    assert "3 error(s) in 1 group(s)" in result.output
    assert "0 error(s) in 0 group(s)" in empty.output
    assert invalid.exit_code == 2 and "not a duration" in invalid.output


def test_worker_runs_until_max_seconds(apix, write_app) -> None:
    # GIVEN a queued message
    path = write_app(PIPELINE)
    apix("send", "numbers", '{"n": 3}', "-t", "t1")

    # WHEN a worker runs with a time limit and no schedules
    result = apix("worker", str(path), "--max-seconds", "1", "--no-schedules")

    # THEN it processed the message and stopped by itself, under its own name
    assert result.exit_code == 0, result.output
    assert [r["n"] for r in _seen(path)] == [6]
    assert "2 completed" in result.output
    assert "apix worker: cli-test" in result.output
    assert "apix run:" not in result.output


def test_run_schedule_without_tenant_is_a_clear_error(apix, write_app) -> None:
    # GIVEN a schedule processor in an app with no tenant (and no APIX_TENANT_ID)
    path = write_app(
        """
        from apix_core import App

        app = App("no-tenant")

        @app.processor("tick", schedule="* * * * *")
        def tick(message):
            return None
        """
    )

    # WHEN it is run
    result = apix("run", str(path))

    # THEN the run fails with exit code 2 and says how to set a tenant
    assert result.exit_code == 2
    assert "needs a tenant" in result.output and "APIX_TENANT_ID" in result.output


def test_db_prune_reports_counts_and_keeps_live_rows(apix, write_app) -> None:
    # GIVEN a store with a freshly completed message (idempotency row, sent outbox row)
    app_file = write_app(
        """
        from apix_core import App
        app = App("prune", tenant_id="t1")

        @app.processor("a", consumes="in", produces=["out"])
        async def a(message, ctx):
            return {"ok": True}

        @app.processor("b", consumes="out")
        async def b(message, ctx):
            return None
        """
    )
    assert apix("send", "in", '{"x": 1}', "--tenant", "t1").exit_code == 0
    assert apix("run", str(app_file)).exit_code == 0

    # WHEN pruning everything older than one day
    result = apix("db", "prune", "--older-than", "1d")

    # THEN it succeeds (idempotency age is clamped to the 14-day floor) and deletes nothing live
    assert result.exit_code == 0, result.output
    assert "pruned" in result.output
    text = " ".join(result.output.split())  # the console wraps long lines (the URL)
    assert "idempotency: 0" in text and "sent_outbox: 0" in text
    # AND a malformed age is a clear error
    bad = apix("db", "prune", "--older-than", "soon")
    assert bad.exit_code == 2
    assert "not a duration" in bad.output


def test_db_prune_prunes_each_database_of_what_it_holds(apix, write_app, cli_env) -> None:
    # GIVEN a dead letter that was replayed (its record lives with the queues)
    app_file = write_app(
        """
        from apix_core import App, PermanentError
        app = App("prune", tenant_id="t1")

        @app.processor("a", consumes="in")
        async def a(message, ctx):
            raise PermanentError("bad")
        """
    )
    assert apix("send", "in", '{"x": 1}', "--tenant", "t1").exit_code == 0
    assert apix("run", str(app_file)).exit_code == 0
    assert apix("dlq", "replay", "--all").exit_code == 0

    # WHEN, a second later, pruning everything older than a second
    time.sleep(1.1)
    result = apix("db", "prune", "--older-than", "1s")

    # THEN the replayed dead letter is gone, and each database reports only what it holds
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.output.split("pruned ")[1:]]
    if cli_env["APIX_QUEUE_URL"] == cli_env["APIX_DATABASE_URL"]:
        (both,) = lines
        assert both.startswith("store and queue database")
        assert "replayed_dead_letters: 1" in both and "idempotency: 0" in both
    else:
        store, queues = lines
        assert store.startswith("store ") and "queues.db" not in store
        assert "idempotency: 0" in store and "replayed_dead_letters" not in store
        assert queues.startswith("queue database ") and "queues.db" in queues
        assert queues.endswith("— replayed_dead_letters: 1")
    assert json.loads(apix("dlq", "list", "--json").output)["total"] == 0


def test_db_prune_does_not_create_a_missing_sqlite_store(apix, tmp_path, monkeypatch) -> None:
    # GIVEN SQLite files that do not exist (nothing ran yet)
    store, queues = tmp_path / "none" / "apix.db", tmp_path / "none" / "queues.db"
    monkeypatch.setenv("APIX_DATABASE_URL", f"sqlite+aiosqlite:///{store}")
    monkeypatch.setenv("APIX_QUEUE_URL", f"sqlite+aiosqlite:///{queues}")

    # WHEN pruning
    result = apix("db", "prune")

    # THEN it says there is nothing to prune, and creates nothing
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"no store at {store}: nothing to prune" in text
    assert f"no queue database at {queues}: nothing to prune" in text
    assert not store.exists() and not queues.exists()

    # WHEN the files exist but were never migrated THEN it says how to create the tables
    store.parent.mkdir()
    store.touch()
    queues.touch()
    empty = " ".join(apix("db", "prune").output.split())
    assert "store sqlite+aiosqlite:///" in empty
    assert "has no apix tables (`apix db upgrade` creates them)" in empty
    assert "pruned" not in empty
