"""Shared fixtures: a real database per test (SQLite file, or PostgreSQL when selected).

The backend comes from ``APIX_TEST_BACKENDS`` (comma list of ``sqlite``, ``postgres``; default
``sqlite``, plus ``postgres`` when ``CI=true``). ``nox -s tests`` runs once per backend. With
``CI=true`` an unreachable PostgreSQL fails the run instead of skipping.

Every test is marked ``unit``, ``functional`` or ``e2e`` by its folder, and ``postgres`` when it
needs PostgreSQL (see tests/README.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from apix_core import App
from apix_core.cli.main import cli
from apix_core.store.database import Database

PG_ADMIN_URL = os.environ.get("APIX_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


TESTS_DIR = Path(__file__).parent
EVENTS_DIR = TESTS_DIR / "events"
GROUPS = ("unit", "functional", "e2e")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by its folder (``unit``/``functional``/``e2e``), and ``postgres`` when it
    sits in a ``postgres`` folder or runs with the PostgreSQL backend."""
    for item in items:
        try:
            parts = item.path.relative_to(TESTS_DIR).parts
        except ValueError:
            continue
        if parts[0] not in GROUPS:
            raise pytest.UsageError(
                f"{item.nodeid}: tests live under tests/unit, tests/functional or tests/e2e"
            )
        item.add_marker(parts[0])
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("backend") == "postgres"
        if on_postgres or "postgres" in parts[:-1] or "pg_server" in item.fixturenames:
            item.add_marker("postgres")
    _deselect_for_backend_session(config, items)


def _deselect_for_backend_session(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``APIX_TEST_BACKEND_SESSION=true`` (set by ``nox -s tests``) each backend session
    runs only its share: the postgres session the tests marked ``postgres`` (the ``backend``
    fixture on PostgreSQL, ``postgres`` folders, ``pg_server``), the sqlite session the rest —
    the tests that do not touch the backend run once per Python, not twice. Deselected, never
    skipped."""
    if os.environ.get("APIX_TEST_BACKEND_SESSION", "").lower() != "true":
        return
    backends = _backends()
    if backends not in (["sqlite"], ["postgres"]):
        return
    want_postgres = backends == ["postgres"]
    keep, drop = [], []
    for item in items:
        on_postgres = item.get_closest_marker("postgres") is not None
        (keep if on_postgres is want_postgres else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


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


#: The LOGIN role the suite runs as on PostgreSQL: a member of ``apix_app``, not an owner, not
#: a superuser, so every backend=postgres test is subject to row-level security.
PG_APP_LOGIN = "apix_test_app"


def _ensure_role(conn_sql: str) -> str:
    # Roles are cluster-wide: a parallel run (or another database's migration) may race us.
    return f"""
        DO $$ BEGIN
            {conn_sql}
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$
    """


@pytest.fixture(scope="session")
def pg_app_login(pg_server: str) -> str:
    """The application LOGIN role (member of ``apix_app``), created once per cluster."""
    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(pg_server))
        try:
            await conn.execute(
                _ensure_role(
                    "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'apix_app') THEN "
                    "CREATE ROLE apix_app NOLOGIN; END IF;"
                )
            )
            await conn.execute(
                _ensure_role(
                    f"IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{PG_APP_LOGIN}') "
                    f"THEN CREATE ROLE {PG_APP_LOGIN} LOGIN IN ROLE apix_app; END IF;"
                )
            )
        finally:
            await conn.close()

    asyncio.run(create())
    return PG_APP_LOGIN


def _as_role(url: str, role: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{role}@{rest.rpartition('@')[2]}"


def _migrate(url: str) -> None:
    async def upgrade() -> None:
        database = Database(url)
        try:
            await database.upgrade()
        finally:
            await database.dispose()

    asyncio.run(upgrade())


@pytest.fixture(params=_backends())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def _pg_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL database migrated to head by the superuser; its admin URL."""
    admin = request.getfixturevalue("pg_server")
    request.getfixturevalue("pg_app_login")
    url = _create_pg_database(admin)
    try:
        admin_url = url.replace("postgresql://", "postgresql+asyncpg://")
        # Only the superuser may create the schema (and the roles and functions of migrations).
        _migrate(admin_url)
        yield admin_url
    finally:
        _drop_pg_database(admin, url)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh database for one test: an empty SQLite file, or a PostgreSQL database migrated to
    head that the test reaches as the application role (:data:`PG_APP_LOGIN`)."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}"
    return _as_role(request.getfixturevalue("_pg_database"), PG_APP_LOGIN)


@pytest.fixture
def admin_database_url(backend: str, database_url: str, request: pytest.FixtureRequest) -> str:
    """The test's database as its superuser (migrations, catalogs, roles); SQLite: the same."""
    if backend == "sqlite":
        return database_url
    return str(request.getfixturevalue("_pg_database"))


@pytest.fixture
def empty_database_url(
    backend: str, database_url: str, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A database without schema, for migration tests: the test's SQLite file (not created
    yet), or a fresh PostgreSQL database as the superuser (only it may migrate)."""
    if backend == "sqlite":
        yield database_url
        return
    admin = request.getfixturevalue("pg_server")
    url = _create_pg_database(admin)
    try:
        yield url.replace("postgresql://", "postgresql+asyncpg://")
    finally:
        _drop_pg_database(admin, url)


@pytest.fixture
async def admin_db(admin_database_url: str) -> AsyncIterator[Database]:
    """The test's database, migrated to head, as its superuser on PostgreSQL."""
    database = Database(admin_database_url)
    await database.upgrade()
    yield database
    await database.dispose()


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


# -- a migrated store and a token endpoint (store, PostgreSQL and e2e tests) ----------------


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The test's database, migrated to head."""
    database = Database(database_url)
    await database.upgrade()
    yield database
    await database.dispose()


@dataclass
class TokenServer:
    """An OAuth2-style token endpoint on 127.0.0.1 that counts its requests."""

    url: str = ""
    requests: int = 0
    fail_next: int = 0
    fail_status: int = 503
    expires_in: float = 3600.0
    delay: float = 0.2
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    state = TokenServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                state.requests += 1
                n = state.requests
                fail = state.fail_next > 0
                if fail:
                    state.fail_next -= 1
            # A slow endpoint widens the window in which concurrent callers could double-fetch.
            time.sleep(state.delay)
            if fail:
                self.send_response(state.fail_status)
                self.end_headers()
                return
            body = json.dumps(
                {"access_token": f"tok-secret-{n}-plaintext", "expires_in": state.expires_in}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/oauth/token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# -- the real ``apix`` command line, in-process (CLI and e2e tests) -------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, queue_url: str) -> dict[str, str]:
    """Point every command at this test's store and queue databases."""
    env = {"APIX_DATABASE_URL": database_url, "APIX_QUEUE_URL": queue_url}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def apix(cli_env: dict[str, str]) -> Callable[..., Result]:
    """``apix(*args, input=None)`` runs the real command line and returns the CLI Result."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def write_app(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a Python module (dedented source) to ``tmp_path`` and return its path."""

    def write(source: str, name: str = "app.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write


# -- platform events (the AWS and Azure adapters' tests) -----------------------------------


@pytest.fixture
def load_event() -> Callable[[str], dict[str, Any]]:
    """``load_event(name)`` returns ``tests/events/<name>.json`` as a dict."""

    def load(name: str) -> dict[str, Any]:
        path = EVENTS_DIR / f"{name}.json"
        if not path.is_file():
            known = sorted(p.stem for p in EVENTS_DIR.glob("*.json"))
            raise FileNotFoundError(f"no event {name!r} in {EVENTS_DIR} (known: {known})")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError(f"{path} holds a {type(data).__name__}, not a JSON object")
        return data

    return load
