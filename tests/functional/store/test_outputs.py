"""File and no-op outputs, and the path checks that keep file outputs inside their directory."""

from __future__ import annotations

import gzip
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apix_core import (
    App,
    FileOutputHandler,
    Message,
    NoOpOutputHandler,
    OutcomeKind,
    ProcessingResult,
    ProcessorContext,
    QueueOutputHandler,
    tenant_context,
)
from apix_core.outbox import OutboxRow, insert_rows
from apix_core.runtime import LocalRunner


def _row(destination: Path | str, tenant: str = "acme", **config: Any) -> OutboxRow:
    return OutboxRow(
        id="7b0c6a4e-0000-5000-8000-000000000001",
        tenant_id=tenant,
        processor="export",
        source_message_id="m-1",
        seq=0,
        kind="file",
        destination=str(destination),
        body='{"total": 12}',
        delay_seconds=0.0,
        created_at=datetime(2024, 5, 17, 8, 30, tzinfo=UTC),
        config=dict(config) or None,
    )


def _file_app(make_app: Any, out: Path, pattern: str, compress: bool = False) -> App:
    app: App = make_app("files")

    @app.processor("export", route="POST /export")
    async def export(message: Message, ctx: ProcessorContext) -> ProcessingResult:
        return ProcessingResult.create_success(
            output_handlers=[
                FileOutputHandler(
                    destination=str(out),
                    payload={"exported": message.payload},
                    config={"file_pattern": pattern, "compress": compress},
                )
            ]
        )

    return app


async def test_http_tenant_header_cannot_traverse_out_of_a_file_destination(
    make_app: Any, tmp_path: Path
) -> None:
    # GIVEN a route whose file output is partitioned by tenant
    out = tmp_path / "a" / "out"
    app = _file_app(make_app, out, "{tenant_id}/{message_id}.json")

    # WHEN a request claims the tenant "../../escaped"
    response = await app.handle_http(
        "POST", "/export", headers={"X-Tenant-Id": "../../escaped"}, body=b'{"n": 1}'
    )

    # THEN it is refused with a typed 400, and no file is written, inside or outside
    assert response.status_code == 400
    assert response.body["error"] == "INVALID_TENANT"
    assert not (tmp_path / "escaped").exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".json"] == []
    # AND a valid tenant writes under the destination
    ok = await app.handle_http("POST", "/export", headers={"X-Tenant-Id": "acme"}, body=b"{}")
    assert ok.status_code == 200, ok.body
    assert [p.parent.name for p in out.rglob("*.json")] == ["acme"]


# -- file and no-op outputs through the app ------------------------------------------------------


async def test_file_output_with_pattern_and_compression_writes_the_payload(
    make_app: Any, tmp_path: Path
) -> None:
    # GIVEN a processor with a gzip file output named by tenant, date and message id
    out = tmp_path / "out"
    app = _file_app(make_app, out, "{tenant_id}/{date}/{message_id}.json", compress=True)

    # WHEN it handles a request (real dispatch after commit)
    response = await app.handle_http(
        "POST", "/export", headers={"X-Tenant-Id": "acme"}, body=b'{"sku": "A-1", "qty": 2}'
    )
    assert response.status_code == 200, response.body

    # THEN one gzip file exists at the patterned path, holding exactly the payload
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == 1
    rel = files[0].relative_to(out).as_posix()
    assert re.fullmatch(r"acme/\d{4}-\d{2}-\d{2}/[0-9a-f-]{36}\.json\.gz", rel), rel
    data = files[0].read_bytes()
    assert data[:2] == b"\x1f\x8b"  # gzip magic
    assert json.loads(gzip.decompress(data)) == {"exported": {"sku": "A-1", "qty": 2}}
    # AND nothing is left pending in the outbox
    with tenant_context("acme"):
        assert app.store is not None
        assert await app.store.idempotency.pending_outbox() == 0


async def test_noop_output_sends_nothing_while_a_queue_output_does(make_app: Any) -> None:
    # GIVEN one processor that may produce to "next"; its output depends on the payload
    app: App = make_app("noop", tenant_id="acme")
    received: list[dict[str, Any]] = []

    @app.processor("stage", consumes="in", produces=["next"])
    async def stage(message: Message, ctx: ProcessorContext) -> ProcessingResult:
        handler = (
            QueueOutputHandler("next", payload={"n": message.payload["n"]})
            if message.payload["send"]
            else NoOpOutputHandler()
        )
        return ProcessingResult.create_success(output_handlers=[handler])

    @app.processor("sink", consumes="next")
    async def sink(message: Message, ctx: ProcessorContext) -> None:
        received.append(message.payload)

    await app.start()

    # WHEN a message takes the no-op output, the pipeline drains
    await app.send("in", {"n": 1, "send": False})
    stats = await LocalRunner(app).run()

    # THEN it completed and nothing reached "next" or stayed in the outbox
    assert stats.queues["in"].completed == 1
    assert received == []
    assert stats.queues["next"].received == 0
    with tenant_context("acme"):
        assert app.store is not None
        assert await app.store.idempotency.pending_outbox() == 0

    # AND the same processor with a queue output does deliver (the check above can fail)
    await app.send("in", {"n": 2, "send": True})
    await LocalRunner(app).run()
    assert received == [{"n": 2}]


async def test_sweeper_skips_an_unwritable_file_row_and_sends_the_rest(
    make_app: Any, tmp_path: Path
) -> None:
    # GIVEN unsent outbox rows left by a crash: one file row that escapes its destination and
    # one good file row
    app: App = make_app("sweep", tenant_id="acme")

    @app.processor("noop", consumes="in")
    async def noop(message: Message, ctx: ProcessorContext) -> None:
        return None

    await app.start()
    assert app.store is not None
    good = _row(tmp_path / "out", file_pattern="good-{message_id}.json")
    bad = _row(tmp_path / "out", file_pattern="../{message_id}.json")
    bad.id, bad.seq = "7b0c6a4e-0000-5000-8000-000000000002", 1
    async with app.store.db.transaction(tenant_id="acme") as conn:
        await insert_rows(conn, [bad, good])

    # WHEN a run starts (it sweeps stale rows first)
    await LocalRunner(app, sweep_outbox_after=0).run()

    # THEN the run did not crash, the good file is written, and the bad row stays unsent
    assert (tmp_path / "out" / f"good-{good.id}.json").read_text() == good.body
    assert not (tmp_path / f"{bad.id}.json").exists()
    with tenant_context("acme"):
        assert await app.store.idempotency.pending_outbox() == 1


async def test_http_outcome_for_a_good_and_a_bad_tenant_header(make_app: Any) -> None:
    # GIVEN a plain route
    app: App = make_app("tenants")
    calls: list[str] = []

    @app.processor("hello", route="POST /hello")
    async def hello(message: Message, ctx: ProcessorContext) -> None:
        calls.append(ctx.tenant_id)

    # WHEN called with tenants of every kind
    bad = await app.handle_http("POST", "/hello", headers={"X-Tenant-Id": "a b"})
    good = await app.handle_http("POST", "/hello", headers={"X-Tenant-Id": "org:42"})

    # THEN only the valid one reached the processor
    assert (bad.status_code, bad.body["error"]) == (400, "INVALID_TENANT")
    assert good.status_code == 200
    assert calls == ["org:42"]
    assert OutcomeKind.COMPLETED.value == good.body["status"]
