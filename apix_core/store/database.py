"""Async engine, transactions and migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from apix_core.constants import DEFAULT_DB_TIMEOUT
from apix_core.exceptions import ConfigurationError, DatabaseUnavailableError

_WRITE_OPTION = "apix_write"


def normalize_url(url: str) -> str:
    """Pick the async driver for plain URLs (``sqlite:///`` → aiosqlite, ``postgresql://`` → asyncpg)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend == "postgresql" and parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend not in ("sqlite", "postgresql"):
        raise ConfigurationError(f"unsupported database {backend!r}: use sqlite or postgresql")
    return parsed.render_as_string(hide_password=False)


class Database:
    """One async engine plus the transaction discipline apix relies on.

    SQLite: WAL, ``secure_delete`` (erased outbox bodies do not linger in free pages),
    ``BEGIN IMMEDIATE`` for write transactions so concurrent duplicates serialise instead of
    failing on lock upgrade. PostgreSQL: the tenant is set per transaction with ``set_config(...,
    true)`` (the ``SET LOCAL`` equivalent) for row-level security.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_DB_TIMEOUT,
        pool_size: int = 5,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        self.timeout = timeout
        options: dict[str, Any] = dict(engine_options or {})
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            from apix_core.store.sqlite_inline import inline_creator

            options.setdefault("async_creator", inline_creator(database or ":memory:", timeout))
        else:
            options.setdefault("pool_size", pool_size)
            options.setdefault("max_overflow", pool_size)
            options.setdefault("pool_timeout", timeout)
            options.setdefault("pool_pre_ping", True)
            options.setdefault("connect_args", {"timeout": timeout, "command_timeout": timeout * 6})
        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        # SQLite has one writer; queueing writers here avoids its busy handler, which sleeps
        # in coarse steps and would dominate latency when several workers share a process.
        self._write_lock: asyncio.Lock | None = None
        if self.dialect == "sqlite":
            _install_sqlite_hooks(self.engine, timeout)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection; connection failures become :class:`DatabaseUnavailableError`."""
        try:
            cm = self.engine.connect()
            conn = await asyncio.wait_for(cm.__aenter__(), timeout=self.timeout * 2)
        except (OSError, TimeoutError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise DatabaseUnavailableError(
                f"cannot reach the database {self.safe_url}: {exc}"
            ) from exc
        try:
            yield conn
        except BaseException as exc:
            if not await cm.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await cm.__aexit__(None, None, None)

    @asynccontextmanager
    async def transaction(
        self, *, tenant_id: str | None = None, write: bool = True
    ) -> AsyncIterator[AsyncConnection]:
        """One transaction; on PostgreSQL scoped to ``tenant_id`` for row-level security."""
        if write and self.is_sqlite:
            if self._write_lock is None:
                self._write_lock = asyncio.Lock()
            async with self._write_lock, self._transaction(tenant_id, write) as conn:
                yield conn
        else:
            async with self._transaction(tenant_id, write) as conn:
                yield conn

    @asynccontextmanager
    async def _transaction(self, tenant_id: str | None, write: bool) -> AsyncIterator[AsyncConnection]:
        async with self.connect() as conn:
            if write and self.is_sqlite:
                conn = await conn.execution_options(**{_WRITE_OPTION: True})
            async with conn.begin():
                if self.is_postgres:
                    await conn.execute(
                        sa.text(
                            "SELECT set_config('apix.tenant_id', :t, true), "
                            "set_config('lock_timeout', :lt, true)"
                        ),
                        {"t": tenant_id or "", "lt": f"{int(self.timeout * 1000)}ms"},
                    )
                yield conn

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    async def upgrade(self, revision: str = "head") -> None:
        """Apply the Alembic migrations up to ``revision``."""
        from apix_core.store.migrate import run_upgrade

        async with self.connect() as conn:
            await conn.run_sync(run_upgrade, revision)
            await conn.commit()

    async def current_revision(self) -> str | None:
        from apix_core.store.migrate import read_current

        async with self.connect() as conn:
            return await conn.run_sync(read_current)

    async def dispose(self) -> None:
        await self.engine.dispose()


def _install_sqlite_hooks(engine: AsyncEngine, timeout: float) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us emit BEGIN ourselves (pysqlite's implicit transactions are not usable here).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Lock waits are retried asynchronously by sqlite_inline, never blocking the loop.
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get(_WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")
