"""Settings: where the queues go by default, and tenant ids from the environment."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from apix_core import App, ConfigurationError, Message, ProcessorContext, Settings
from apix_core.runtime import LocalRunner


def test_sqlite_database_file_gets_a_sibling_queue_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN a custom SQLite store and no APIX_QUEUE_URL
    monkeypatch.setenv("APIX_DATABASE_URL", f"sqlite:///{tmp_path}/data/meta.db")
    # WHEN settings are resolved
    settings = Settings.from_env()
    # THEN the queues go to <stem>-queues.db beside it, never into the metadata file
    assert settings.database_url == f"sqlite:///{tmp_path}/data/meta.db"
    assert settings.queue_url == f"sqlite:///{tmp_path}/data/meta-queues.db"


@pytest.mark.parametrize(
    ("database_url", "queue_url"),
    [
        (None, "sqlite+aiosqlite:///{home}/queues.db"),  # embedded default, unchanged
        ("postgresql://apix@db:5432/apix", "postgresql://apix@db:5432/apix"),  # shared on purpose
        ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
        (
            "sqlite+aiosqlite:///rel/apix.sqlite3?timeout=5",
            "sqlite+aiosqlite:///rel/apix-queues.db?timeout=5",
        ),
    ],
)
def test_default_queue_url_per_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str | None, queue_url: str
) -> None:
    if database_url:
        monkeypatch.setenv("APIX_DATABASE_URL", database_url)
    settings = Settings.from_env()
    assert settings.queue_url == queue_url.format(home=tmp_path / ".apix")


def test_explicit_queue_url_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("APIX_DATABASE_URL", f"sqlite:///{tmp_path}/meta.db")
    monkeypatch.setenv("APIX_QUEUE_URL", f"sqlite:///{tmp_path}/meta.db")
    assert Settings.from_env().queue_url == f"sqlite:///{tmp_path}/meta.db"
    assert Settings.from_env(queue_url="sqlite:///q.db").queue_url == "sqlite:///q.db"


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


def test_invalid_tenant_in_the_environment_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APIX_TENANT_ID", "../../escaped")
    with pytest.raises(ConfigurationError, match="APIX_TENANT_ID"):
        Settings.from_env()
    monkeypatch.setenv("APIX_TENANT_ID", "org:acme")
    assert Settings.from_env().tenant_id == "org:acme"
    with pytest.raises(ConfigurationError):
        Settings.from_env(tenant_id="a b")
