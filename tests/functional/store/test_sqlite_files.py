"""A custom SQLite metadata file: the queues go to a sibling file, the payloads with them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from apix_core import App, Message, ProcessorContext
from apix_core.runtime import LocalRunner


async def test_payloads_stay_out_of_a_custom_sqlite_metadata_file(tmp_path: Path) -> None:
    # GIVEN an app on a custom SQLite file, with no queue URL
    meta = tmp_path / "meta.db"
    app = App("custom", database_url=f"sqlite:///{meta}", tenant_id="acme")
    sentinel = "SENTINEL-7f3a9c-payload-value"
    seen: list[str] = []

    @app.processor("ingest", consumes="in", produces=["out"])
    async def ingest(message: Message, ctx: ProcessorContext) -> dict[str, str]:
        ctx.persist_entity("o-1", "order", "shop", message.payload)
        return {"secret": message.payload["secret"]}

    @app.processor("sink", consumes="out")
    async def sink(message: Message, ctx: ProcessorContext) -> None:
        seen.append(message.payload["secret"])

    try:
        # WHEN a message carrying a sentinel flows through the pipeline
        await app.send("in", {"secret": sentinel})
        # (the file and its write-ahead log)
        queued_before_run = b"".join(p.read_bytes() for p in tmp_path.glob("meta-queues.db*"))
        await LocalRunner(app).run()
    finally:
        await app.close()

    # THEN the payload went through the sibling queue file, and never into the metadata file
    assert seen == [sentinel]
    assert sentinel.encode() in queued_before_run
    for path in tmp_path.glob("meta.db*"):  # the file and its WAL
        assert sentinel.encode() not in path.read_bytes(), path
    # the metadata file holds the metadata (the entity), the queue file holds no entities
    with sqlite3.connect(meta) as conn:
        assert conn.execute("SELECT count(*) FROM apix_entities").fetchone() == (1,)
