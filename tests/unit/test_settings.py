"""Settings: where the queues go by default, and tenant ids from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from apix_core import ConfigurationError, Settings


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
