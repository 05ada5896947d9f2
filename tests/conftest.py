"""Shared fixtures: a real database per test (SQLite file, or PostgreSQL when selected).

The backend comes from ``APIX_TEST_BACKENDS`` (comma list of ``sqlite``, ``postgres``; default
``sqlite``, plus ``postgres`` when ``CI=true``). ``nox -s tests`` runs once per backend. With
``CI=true`` an unreachable PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from apix_core import App

PG_ADMIN_URL = os.environ.get("APIX_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _backends() -> list[str]:
    raw = os.environ.get("APIX_TEST_BACKENDS")
    if raw:
        return [b.strip() for b in raw.split(",") if b.strip()]
    return ["sqlite", "postgres"] if IN_CI else ["sqlite"]


def _pg_available() -> str | None:
    """None if PostgreSQL answers, else the reason."""
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed"

    async def probe() -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(PG_ADMIN_URL), timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}"
    return None


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def pg_server() -> str:
    """Admin URL of a reachable PostgreSQL (skips, or fails under CI, when there is none)."""
    reason = _pg_available()
    if reason is not None and IN_CI:
        # CI must exercise PostgreSQL: try to start the local cluster once before failing.
        subprocess.run(
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            shell=True,
            check=False,
            capture_output=True,
        )
        reason = _pg_available()
        if reason is not None:
            pytest.fail(reason)
    if reason is not None:
        pytest.skip(reason)
    return PG_ADMIN_URL


def _create_pg_database(admin_url: str) -> str:
    import asyncpg

    name = f"apix_test_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(admin_url))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return _with_database(admin_url, name)


def _drop_pg_database(admin_url: str, url: str) -> None:
    import asyncpg

    name = url.rpartition("/")[2]

    async def drop() -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(admin_url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture(params=_backends())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database for one test."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}"
        return
    admin = request.getfixturevalue("pg_server")
    url = _create_pg_database(admin)
    try:
        yield url.replace("postgresql://", "postgresql+asyncpg://")
    finally:
        _drop_pg_database(admin, url)


@pytest.fixture
def queue_url(backend: str, tmp_path: Path, database_url: str) -> str:
    """The local transport's database: a separate SQLite file, or the same PostgreSQL database."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'queues.db'}"
    return database_url


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read a developer's APIX_* settings or write ./.apix."""
    for key in list(os.environ):
        if key.startswith("APIX_") and not key.startswith("APIX_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("APIX_HOME", str(tmp_path / ".apix"))
    monkeypatch.setenv("APIX_AUTO_MIGRATE", "true")


@pytest.fixture
async def make_app(database_url: str, queue_url: str) -> AsyncIterator[object]:
    """Factory for an App on the test's database; apps are closed after the test."""
    apps: list[App] = []

    def factory(name: str = "test", **kwargs: object) -> App:
        kwargs.setdefault("database_url", database_url)
        kwargs.setdefault("queue_url", queue_url)
        app = App(name, **kwargs)  # type: ignore[arg-type]
        apps.append(app)
        return app

    yield factory
    for app in apps:
        await app.close()
