"""Async engine, transactions and migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apix_core.constants import (
    DB_PGBOUNCER_ENV,
    DB_POOL_SIZE_ENV,
    DEFAULT_DB_POOL_SIZE,
    DEFAULT_DB_TIMEOUT,
)
from apix_core.errors import ConfigurationError, DatabaseUnavailableError
from apix_core.message import dump_json
from apix_core.store.lazy import lazy_module
from apix_core.store.sql import SQLITE_WRITER_KEY
from apix_core.store.sqlite_inline import retry_busy as _retry_busy

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from apix_core.store.pg import Pipeline
else:
    # Loaded on first use: a SQLite write transaction that claims ids and commits (a cold
    # start's first batch) runs on the sqlite3 connection alone, without SQLAlchemy.
    sa = lazy_module("sqlalchemy")

_WRITE_OPTION = "apix_write"
#: Page cache of the SQLite writer connection (KiB, an upper bound: pages are allocated as read).
WRITER_CACHE_KIB = 32768
#: Execution option of the SQLite writer connection: apix sends BEGIN/COMMIT itself.
_RAW_TX_OPTION = "apix_raw_tx"
#: ``conn.info`` key of the names apix prepared on a PostgreSQL connection (store/pg.Pipeline).
_PREPARED_KEY = "apix_prepared"


#: The SQLite write transaction the current task holds: (database, connection, a lock that
#: serialises the savepoints of nested write transactions joining it).
_sqlite_writer: contextvars.ContextVar[tuple[Database, WriterHandle, asyncio.Lock] | None] = (
    contextvars.ContextVar("apix_sqlite_writer", default=None)
)

#: The connection settings of every SQLite connection apix opens.
_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    # Lock waits are retried asynchronously by sqlite_inline, never blocking the loop.
    "PRAGMA busy_timeout=0",
    "PRAGMA secure_delete=ON",
    # Checkpoint every ~40 MB of WAL instead of ~4 MB: checkpoints dominate commit cost.
    "PRAGMA wal_autocheckpoint=10000",
    "PRAGMA foreign_keys=ON",
)


def _plain_sqlite_url(url: str) -> tuple[str, str | None] | None:
    """``(normalized url, database path or None for memory)`` of a plain SQLite file URL
    (``sqlite:///path``, ``sqlite+aiosqlite:////abs``, ``sqlite://``), read without
    SQLAlchemy; None for anything else (query strings, escapes: SQLAlchemy's parser decides)."""
    for scheme in ("sqlite://", "sqlite+aiosqlite://"):
        if url.startswith(scheme):
            rest = url[len(scheme) :]
            break
    else:
        return None
    if "?" in rest or "%" in rest or "#" in rest or (rest and not rest.startswith("/")):
        return None
    database = rest[1:] or None
    return "sqlite+aiosqlite://" + rest, database


_PLAIN_PG = re.compile(r"(?:postgresql|postgres|postgresql\+asyncpg)://([^/?#%]*)/([^/?#%]+)")


def _plain_pg_url(url: str) -> str | None:
    """The asyncpg URL of a plain PostgreSQL URL (``postgresql://user:pw@host:port/db``),
    read without SQLAlchemy; None for anything else (query strings, escapes...)."""
    found = _PLAIN_PG.fullmatch(url)
    if found is None:
        return None
    return f"postgresql+asyncpg://{found.group(1)}/{found.group(2)}"


def normalize_url(url: str) -> str:
    """Pick the async driver: ``sqlite:///`` → aiosqlite, ``postgresql://`` → asyncpg."""
    plain = _plain_sqlite_url(url)
    if plain is not None:
        return plain[0]
    plain_pg = _plain_pg_url(url)
    if plain_pg is not None:
        return plain_pg
    from sqlalchemy.engine import make_url

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
        pool_size: int | None = None,
        pgbouncer: bool | None = None,
        idle_ping_seconds: float = 5.0,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        self.url = normalize_url(url)
        plain = _plain_sqlite_url(self.url)
        plain_pg = _plain_pg_url(self.url)
        if plain is not None:
            self.dialect, database = "sqlite", plain[1]
        elif plain_pg is not None:
            self.dialect, database = "postgresql", None
        else:
            from sqlalchemy.engine import make_url

            parsed = make_url(self.url)
            self.dialect, database = parsed.get_backend_name(), parsed.database
        self.timeout = timeout
        self.pgbouncer = False
        self.idle_ping_seconds = idle_ping_seconds
        options: dict[str, Any] = dict(engine_options or {})
        # JSON columns (entity attributes...) are written by the outputs' one rule
        # (``message.json_default``: datetimes as ISO 8601, decimals exact...).
        options.setdefault("json_serializer", dump_json)
        #: SQLite file databases: the writer is a sqlite3 connection apix opens itself, and
        #: SQLAlchemy joins it only when a statement needs it (see WriterHandle).
        self._lean_path: str | None = None
        self._lean_pg = False
        if self.dialect == "sqlite":
            database = database or ""
            if (
                database
                and database != ":memory:"
                and not database.startswith("file:")
                and "async_creator" not in options
                and plain is not None
            ):
                self._lean_path = database
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            from apix_core.store.sqlite_inline import inline_creator

            options.setdefault("async_creator", inline_creator(database or ":memory:", timeout))
        else:
            if pool_size is None:
                pool_size = int(os.environ.get(DB_POOL_SIZE_ENV) or DEFAULT_DB_POOL_SIZE)
            if pgbouncer is None:
                pgbouncer = _env_true(DB_PGBOUNCER_ENV)
            self.pgbouncer = pgbouncer
            # apix sends BEGIN itself (see _pg_transaction); SQLAlchemy must not add its own.
            options.setdefault("isolation_level", "AUTOCOMMIT")
            options.setdefault("pool_size", pool_size)
            options.setdefault("max_overflow", pool_size)
            options.setdefault("pool_timeout", timeout)
            # A ping per checkout costs a round trip per transaction; ping only connections
            # that sat idle (between invocations of a warm function), see _install_idle_ping.
            options.setdefault("pool_pre_ping", False)
            connect_args: dict[str, Any] = {"timeout": timeout, "command_timeout": timeout * 6}
            if pgbouncer:
                # Transaction pooling hands each transaction to any server connection: named
                # prepared statements would collide or vanish, so cache none and name uniquely.
                connect_args["statement_cache_size"] = 0
                connect_args["prepared_statement_cache_size"] = 0
                connect_args["prepared_statement_name_func"] = _unique_statement_name
            #: Transactions on asyncpg connections apix opens itself until something needs
            #: the engine (SQLAlchemy then joins an open one: see PgHandle); plain URLs only.
            self._lean_pg = (
                plain_pg is not None
                and not pgbouncer
                and not {"connect_args", "async_creator", "creator"} & options.keys()
            )
            self._connect_args = connect_args
            options.setdefault("connect_args", connect_args)
        self._options = options
        # Created on first use (see WriterHandle): SQLAlchemy loads with it.
        self._engine: AsyncEngine | None = None
        # asyncpg connections (and asyncio locks) belong to one event loop; a warm serverless
        # function may run each invocation under a fresh ``asyncio.run``.
        self._loop: asyncio.AbstractEventLoop | None = None
        # SQLite has one writer; queueing writers here avoids its busy handler, which sleeps
        # in coarse steps and would dominate latency when several workers share a process.
        self._write_lock: asyncio.Lock | None = None
        # SQLite write transactions reuse one connection (they are serialised anyway) and send
        # BEGIN IMMEDIATE / COMMIT on the sqlite3 connection directly: SQLAlchemy's checkout,
        # begin, commit and checkin cost about 140 us of CPU per transaction, more than the
        # statements of a small one. None until the first write transaction of the event loop.
        self._writer: WriterHandle | None = None
        self._inline_writer = True  # False with a custom async_creator: SQLAlchemy's way
        # PostgreSQL transactions keep their connection checked out between transactions (most
        # recent last, with the time it came back): SQLAlchemy's checkout and checkin (two
        # greenlet switches, the pool's bookkeeping) were about 40% of the client CPU of an
        # empty transaction. At most pool_size connections wait here.
        self._idle: list[tuple[PgHandle, float]] = []
        self._max_idle = int(options.get("pool_size", 0))
        # Returns them to the pool when their event loop ends (asyncio.run, Runner.close and
        # pytest cancel the loop's tasks first): a connection still checked out then could
        # only be dropped, and SQLAlchemy warns about it.
        self._janitor: asyncio.Task[None] | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = self._create_engine()
        return self._engine

    def _create_engine(self) -> AsyncEngine:
        from sqlalchemy.ext.asyncio import create_async_engine

        if self.is_postgres:
            # The models' PostgreSQL index options (BRIN...) for whatever compares or creates
            # them from the metadata here; kept off SQLite's path (see models).
            from apix_core.store.models import attach_postgres_index_options

            attach_postgres_index_options()

        try:
            engine = create_async_engine(self.url, **self._options)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] != "asyncpg":
                raise
            raise ConfigurationError(
                f"{self.safe_url} needs the asyncpg driver: pip install 'apix-core[postgres]'"
            ) from None
        if self.dialect == "sqlite":
            _install_sqlite_hooks(engine, self.timeout)
        elif not self._options.get("pool_pre_ping"):
            _install_idle_ping(engine, self.idle_ping_seconds)
        return engine

    async def _bind_loop(self) -> None:
        """Rebuild the engine when called from another event loop than its connections'."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None:
            old = self._engine
            self._engine = None
            self._write_lock = None
            writer, self._writer = self._writer, None
            if writer is not None:
                await writer.drop()
            for handle, _ in self._idle:  # their loop is gone: dropped with the old engine
                await handle.drop()
            self._idle.clear()
            self._janitor = None
            # The old loop is closed: its connections cannot be closed politely, only dropped
            # (the server ends those sessions when the sockets are collected).
            if old is not None:
                await old.dispose(close=False)
        self._loop = loop

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection; connection failures become :class:`DatabaseUnavailableError`."""
        await self._bind_loop()
        conn = await self._start()
        try:
            yield conn
        finally:
            await conn.close()

    async def _start(self) -> AsyncConnection:
        conn = self.engine.connect()
        try:
            # asyncio.timeout, not wait_for: no Task (and loop turns) per checkout.
            async with asyncio.timeout(self.timeout * 2):
                await conn.start()
        except sa.exc.DBAPIError as exc:
            explained = explain_database_error(exc, self.url)
            if explained is not None:
                raise explained from exc
            if not isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
                raise
            raise DatabaseUnavailableError(
                f"cannot reach the database {self.safe_url}: {exc}"
            ) from exc
        except (OSError, TimeoutError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise DatabaseUnavailableError(
                f"cannot reach the database {self.safe_url}: {exc}"
            ) from exc
        return conn

    async def _checkout(self) -> PgHandle:
        """A connection for a PostgreSQL transaction: the last one put back if it idled less
        than ``idle_ping_seconds``, else one from the pool (which pings it if it idled); while
        no engine exists (a cold start), one apix opens itself (pinged likewise)."""
        await self._bind_loop()
        now = time.monotonic()
        while self._idle:
            handle, since = self._idle.pop()
            if now - since < self.idle_ping_seconds:
                return handle
            if handle.owned and await handle.ping(self.timeout):
                return handle
            # Unanswered: a polite close would wait on a server that may be gone.
            await (handle.drop() if handle.owned else handle.close())
        if self._lean_pg and self._engine is None:
            return PgHandle(self, await self._connect_pg(), None)
        conn = await self._start()
        from apix_core.store.pg import driver

        return PgHandle(self, driver(conn), conn)

    async def _connect_pg(self) -> Any:
        """An asyncpg connection with the engine's connect arguments; failures typed as
        :meth:`_start` types them."""
        try:
            import asyncpg
        except ModuleNotFoundError:
            raise ConfigurationError(
                f"{self.safe_url} needs the asyncpg driver: pip install 'apix-core[postgres]'"
            ) from None
        dsn = "postgresql://" + self.url.split("://", 1)[1]
        try:
            async with asyncio.timeout(self.timeout * 2):
                return await asyncpg.connect(dsn, **self._connect_args)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            explained = explain_database_error(exc, self.url)
            if explained is not None:
                raise explained from exc
            raise DatabaseUnavailableError(
                f"cannot reach the database {self.safe_url}: {exc}"
            ) from exc

    async def _adopt_pg(self, raw: Any) -> AsyncConnection:
        """A SQLAlchemy connection over an asyncpg connection apix opened, possibly inside its
        open transaction: an engine of its own with that one connection. In AUTOCOMMIT mode
        SQLAlchemy's adapter begins, commits and rolls back nothing itself."""
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import StaticPool

        from apix_core.store.models import attach_postgres_index_options

        attach_postgres_index_options()

        async def creator() -> Any:
            return raw

        pooling = ("pool_size", "max_overflow", "pool_timeout", "pool_pre_ping", "connect_args")
        options = {k: v for k, v in self._options.items() if k not in pooling}
        engine = create_async_engine(
            self.url, async_creator=creator, poolclass=StaticPool, **options
        )
        return await engine.connect()

    async def _checkin(self, handle: PgHandle, clean: bool) -> None:
        """Keep a connection whose transaction ended cleanly for the next transaction; return
        any other to the pool."""
        if clean and len(self._idle) < self._max_idle and handle.usable():
            conn = handle.adopted
            if conn is not None and conn.in_transaction():
                # SQLAlchemy's bookkeeping of the statements it ran (autobegin): the engine is
                # in AUTOCOMMIT, so this sends nothing; the server transaction is over.
                await conn.rollback()
            self._idle.append((handle, time.monotonic()))
            if self._janitor is None or self._janitor.done():
                self._janitor = asyncio.get_running_loop().create_task(self._close_idle_at_end())
        else:
            await handle.close()

    async def _close_idle_at_end(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            idle, self._idle = self._idle, []
            writer, self._writer = self._writer, None
            if writer is not None:
                with contextlib.suppress(Exception):
                    await writer.close()
            for handle, _ in idle:
                with contextlib.suppress(Exception):
                    await handle.close()

    @property
    def pipelines(self) -> bool:
        """Whether transactions take a :class:`~apix_core.store.pg.Pipeline`: PostgreSQL, not
        through PgBouncer's transaction pooling (prepared statements live in a session)."""
        return self.is_postgres and not self.pgbouncer

    @asynccontextmanager
    async def transaction(
        self,
        *,
        tenant_id: str | None = None,
        write: bool = True,
        maintenance: bool = False,
        pipeline: Pipeline | None = None,
    ) -> AsyncIterator[AsyncConnection]:
        """One transaction; on PostgreSQL scoped to ``tenant_id`` for row-level security.

        ``maintenance=True`` leaves sequential scans on (housekeeping reads ranges: outbox
        sweeper, retention, dead-letter listings). It passes no tenant policy: on PostgreSQL
        cross-tenant work calls the SECURITY DEFINER functions of migration 0007.

        ``pipeline`` (only where :attr:`pipelines`): a statement sent in the round trip of
        ``BEGIN`` instead of its own (see :mod:`apix_core.store.pg`).

        SQLite: a write transaction opened while the calling task already holds one on this
        database (a processor calling ``ApiTokenService`` or a repository inside its processing
        transaction) joins it in a SAVEPOINT instead of waiting for the single write lock,
        which it holds itself; its writes commit with the outer transaction.
        """
        async with self._transaction(tenant_id, write, maintenance, pipeline, lean=False) as conn:
            yield conn

    @asynccontextmanager
    async def unit_transaction(
        self, *, tenant_id: str, pipeline: Pipeline | None = None
    ) -> AsyncIterator[AsyncConnection | WriterHandle | PgHandle]:
        """The unit of work's write transaction (:meth:`transaction`), except that it may yield
        the connection's handle (:class:`WriterHandle` on SQLite, :class:`PgHandle`), whose
        SQLAlchemy connection is made only if a statement needs it."""
        async with self._transaction(tenant_id, True, False, pipeline, lean=True) as conn:
            yield conn

    @asynccontextmanager
    async def _transaction(
        self,
        tenant_id: str | None,
        write: bool,
        maintenance: bool,
        pipeline: Pipeline | None,
        *,
        lean: bool,
    ) -> AsyncIterator[Any]:
        if self.is_postgres:
            if pipeline is not None and not self.pipelines:
                raise ValueError("pipelined transactions need PostgreSQL without PgBouncer")
            async with self._pg_transaction(tenant_id, maintenance, pipeline, lean) as conn:
                yield conn
            return
        await self._bind_loop()
        if write:
            held = _sqlite_writer.get()
            if held is not None and held[0] is self:
                # This task (or one it spawned) already holds this database's write
                # transaction — e.g. a token refresh inside a processor. Waiting for the write
                # lock would wait for ourselves: join that transaction in a savepoint instead,
                # which commits (or rolls back) with it.
                _, handle, nested_lock = held
                outer = await handle.connection()
                async with nested_lock, outer.begin_nested():
                    yield outer
                return
            if self._write_lock is None:
                self._write_lock = asyncio.Lock()
            async with self._write_lock, self._sqlite_write() as handle:
                token = _sqlite_writer.set((self, handle, asyncio.Lock()))
                try:
                    yield handle if lean and handle.raw is not None else await handle.connection()
                finally:
                    _sqlite_writer.reset(token)
        else:
            async with self._sqlite_transaction(write) as conn:
                yield conn

    @asynccontextmanager
    async def _sqlite_transaction(self, write: bool) -> AsyncIterator[AsyncConnection]:
        async with self.connect() as conn:
            if write:
                conn = await conn.execution_options(**{_WRITE_OPTION: True})
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def _sqlite_write(self) -> AsyncIterator[WriterHandle]:
        """A write transaction on the writer connection, under the write lock.

        SQLAlchemy's own transaction on the writer stays open between apix transactions (its
        ``begin`` sends nothing there, see ``_install_sqlite_hooks``): the commit and rollback
        that count are the sqlite3 connection's. A transaction that fails returns the writer
        to the pool, which resets SQLAlchemy's state with it.
        """
        writer = self._writer
        if writer is None and self._inline_writer:
            writer = await self._open_writer()
        if writer is None:  # not an inline connection (a custom async_creator)
            async with self._sqlite_transaction(True) as conn:
                yield WriterHandle(self, None, conn)
            return
        raw = writer.raw
        assert raw is not None
        clean = False
        try:
            await _sqlite_call(lambda: raw.execute("BEGIN IMMEDIATE"), self.timeout, "BEGIN")
            yield writer
            await _sqlite_call(raw.commit, self.timeout, "COMMIT")
            clean = True
        finally:
            if not clean:
                self._writer = None
                with contextlib.suppress(Exception):
                    if raw.in_transaction:
                        raw.rollback()
                await writer.close()

    async def _open_writer(self) -> WriterHandle | None:
        from apix_core.store.sqlite_inline import InlineConnection

        if self._lean_path is not None:
            raw = await _sqlite_call(self._connect_raw, self.timeout, "PRAGMA")
            raw.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            self._writer = WriterHandle(self, raw, None)
            if self._janitor is None or self._janitor.done():
                self._janitor = asyncio.get_running_loop().create_task(self._close_idle_at_end())
            return self._writer
        conn = await self._start()
        raw = (await conn.get_raw_connection()).driver_connection
        if not isinstance(raw, InlineConnection):
            await conn.close()
            self._inline_writer = False
            return None
        conn = await conn.execution_options(**{_RAW_TX_OPTION: True, _WRITE_OPTION: True})
        # The writer walks the random-key indexes (idempotency, outbox, entity ids) of every
        # batch: with the default 2 MiB cache it re-read pages from the WAL (a pread each).
        raw.sqlite_connection.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
        conn.info[SQLITE_WRITER_KEY] = raw.sqlite_connection
        self._writer = WriterHandle(self, raw.sqlite_connection, conn)
        if self._janitor is None or self._janitor.done():
            self._janitor = asyncio.get_running_loop().create_task(self._close_idle_at_end())
        return self._writer

    def _connect_raw(self) -> sqlite3.Connection:
        """A sqlite3 connection to the file, set up as every apix connection (WAL...)."""
        assert self._lean_path is not None
        Path(self._lean_path).parent.mkdir(parents=True, exist_ok=True)
        raw = sqlite3.connect(
            self._lean_path, timeout=0, check_same_thread=False, isolation_level=None
        )
        try:
            for pragma in _SQLITE_PRAGMAS:
                raw.execute(pragma)
        except BaseException:
            raw.close()
            raise
        return raw

    async def _adopt(self, raw: sqlite3.Connection) -> AsyncConnection:
        """A SQLAlchemy connection over the writer's sqlite3 connection, possibly inside its
        open transaction: an engine of its own with that one connection, which never commits,
        rolls back or closes it (apix does, see ``InlineConnection(managed=True)``)."""
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import StaticPool

        from apix_core.store.sqlite_inline import InlineConnection

        inline = InlineConnection(raw, self.timeout, managed=True)

        async def creator() -> InlineConnection:
            return inline

        options = {k: v for k, v in self._options.items() if k != "async_creator"}
        engine = create_async_engine(
            self.url, async_creator=creator, poolclass=StaticPool, **options
        )
        _install_sqlite_hooks(engine, self.timeout, configure=False)
        conn = await engine.connect()
        conn = await conn.execution_options(**{_RAW_TX_OPTION: True, _WRITE_OPTION: True})
        conn.info[SQLITE_WRITER_KEY] = raw
        return conn

    @asynccontextmanager
    async def _pg_transaction(
        self,
        tenant_id: str | None,
        scans: bool,
        pipeline: Pipeline | None,
        lean: bool = False,
    ) -> AsyncIterator[Any]:
        """apix sends ``BEGIN`` itself, together with the transaction-local settings, in one
        round trip; the engine runs in ``AUTOCOMMIT`` mode (SQLAlchemy would otherwise send its
        own ``BEGIN``), so its statements and :mod:`apix_core.store.pg`'s share the
        transaction. Settings are transaction-local (``set_config(..., true)``): nothing leaks
        to the next user of the connection, which keeps PgBouncer transaction pooling safe."""
        from apix_core.store.pg import SETTINGS_SQL, begin_sql, settings

        handle = await self._checkout()
        clean = False
        try:
            raw = handle.raw
            lock_ms = int(self.timeout * 1000)
            sql = begin_sql(tenant_id, lock_ms, scans)
            prepared = await self._prepared(handle.info, raw) if pipeline is not None else set()
            try:
                if sql is None:
                    await raw.execute("BEGIN")
                    await raw.execute(SETTINGS_SQL, *settings(tenant_id or "", lock_ms, scans))
                if pipeline is not None and pipeline.first is not None:
                    first = pipeline.first.sql(prepared)
                    pipeline.first_status = await raw.execute(f"{sql}; {first}" if sql else first)
                elif sql is not None:
                    await raw.execute(sql)
                yield handle if lean else await handle.connection()
                status = await raw.execute("COMMIT")
            except BaseException:
                if pipeline is not None:
                    # A PREPARE that failed would be marked prepared: start afresh.
                    handle.info.pop(_PREPARED_KEY, None)
                await _discard(handle, raw)
                raise
            clean = not raw.is_in_transaction()
            if status != "COMMIT":
                # PostgreSQL answers COMMIT of a failed transaction with ROLLBACK: an error
                # inside it was swallowed somewhere. Never report that as success.
                raise sa.exc.InvalidRequestError(
                    f"transaction was rolled back by the server (COMMIT answered {status!r})"
                )
        finally:
            await self._checkin(handle, clean)

    async def _prepared(self, info: dict[str, Any], raw: Any) -> set[str]:
        """Names of the statements apix prepared on this connection, kept in the pool record's
        ``info`` (SQLAlchemy clears it when it replaces the connection). When unknown (a new
        connection, or an error since) or past :data:`~apix_core.store.pg.MAX_PREPARED`, the
        server's apix statements are deallocated and the list starts empty: a statement whose
        PREPARE failed, or that went stale, is never trusted."""
        from apix_core.store.pg import MAX_PREPARED

        prepared: set[str] | None = info.get(_PREPARED_KEY)
        if prepared is None or len(prepared) >= MAX_PREPARED:
            rows = await raw.fetch(
                "SELECT name FROM pg_prepared_statements WHERE name LIKE 'apix\\_%'"
            )
            if rows:
                await raw.execute("; ".join(f"DEALLOCATE {r[0]}" for r in rows))
            prepared = info[_PREPARED_KEY] = set()
        return prepared

    @property
    def safe_url(self) -> str:
        if self._lean_path is not None:
            return self.url  # a file path: no password in it
        if self._lean_pg:
            return re.sub(r"^(postgresql\+asyncpg://[^:@/]*:)[^@/]*@", r"\1***@", self.url)
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    async def upgrade(self, revision: str = "head") -> None:
        """Apply the Alembic migrations up to ``revision``.

        A database already at the head revision is recognised with one plain query, without
        importing Alembic (a cold start on a migrated store pays nothing for migrations)."""
        if revision == "head" and await self._at_head():
            return
        from apix_core.store.migrate import run_upgrade

        await self.run_migration(run_upgrade, revision)

    async def _at_head(self) -> bool:
        from apix_core.store.revision import head_revision

        if self._lean_path is not None:
            # The file read directly: no engine (nor SQLAlchemy) for a store at the head.
            def read() -> list[str]:
                raw = self._connect_raw()
                try:
                    return [r[0] for r in raw.execute("SELECT version_num FROM alembic_version")]
                finally:
                    raw.close()

            try:
                versions = await _sqlite_call(read, self.timeout, "SELECT version_num")
            except sa.exc.DBAPIError:
                return False
            return bool(versions == [head_revision()])
        if self._lean_pg:
            await self._bind_loop()
            handle = await self._checkout()
            clean = False
            try:
                rows = await handle.raw.fetch("SELECT version_num FROM alembic_version")
                clean = True
            except Exception:
                return False  # no schema yet (or unreadable): Alembic decides
            finally:
                await self._checkin(handle, clean)
            return [r[0] for r in rows] == [head_revision()]
        try:
            async with self.connect() as conn:
                result = await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
                versions = [row[0] for row in result]
        except sa.exc.DBAPIError:
            return False  # no schema yet (or unreadable): Alembic decides
        return versions == [head_revision()]

    async def run_migration(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(sync_connection, *args)`` (Alembic) in one real transaction, committed at the
        end: on PostgreSQL too, where the engine otherwise runs in AUTOCOMMIT mode."""
        async with self.connect() as conn:
            if self.is_postgres:
                conn = await conn.execution_options(isolation_level="READ COMMITTED")
            await conn.run_sync(fn, *args)
            await conn.commit()

    async def current_revision(self) -> str | None:
        from apix_core.store.migrate import read_current

        async with self.connect() as conn:
            return await conn.run_sync(read_current)

    async def dispose(self) -> None:
        loop = asyncio.get_running_loop()
        if self._janitor is not None:
            self._janitor.cancel()
            self._janitor = None
        idle, self._idle = self._idle, []
        writer, self._writer = self._writer, None
        if self._loop is loop:
            if writer is not None:
                await writer.close()
            for handle, _ in idle:
                await handle.close()
        else:
            if writer is not None:
                await writer.drop()
            for handle, _ in idle:
                await handle.drop()
        # Connections made on another (closed) loop can only be dropped, not closed.
        if self._engine is not None:
            await self._engine.dispose(close=self._loop is None or self._loop is loop)
        self._loop = None


def _sqlstate(exc: BaseException) -> tuple[str, str] | None:
    """The PostgreSQL SQLSTATE and message somewhere in ``exc``'s chain (asyncpg's error sits
    under SQLAlchemy's and its adapter's), or None."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        state = getattr(e, "sqlstate", None)
        if isinstance(state, str):
            return state, str(e)
        todo.extend([e.__cause__, e.__context__, getattr(e, "orig", None)])
    return None


def explain_database_error(exc: BaseException, url: str | None = None) -> ConfigurationError | None:
    """A :class:`ConfigurationError` saying what to do when PostgreSQL refused a connection
    because the database or the role does not exist (or the password is wrong), else None."""
    found = _sqlstate(exc)
    if found is None:
        return None
    state, text = found
    from sqlalchemy.engine import make_url

    parsed = make_url(url) if url else None
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}" if parsed else "the server"
    opts = f"-h {parsed.host or 'localhost'} -p {parsed.port or 5432}" if parsed else ""
    if state == "3D000":  # invalid_catalog_name
        name = parsed.database if parsed and parsed.database else "?"
        return ConfigurationError(
            f'database "{name}" does not exist on {where}: create it with '
            f'`createdb {opts} -U postgres {name}` (or CREATE DATABASE "{name}";), '
            "then run `apix db upgrade`"
        )
    if state == "28000" and "role" in text:  # invalid_authorization_specification
        role = parsed.username if parsed and parsed.username else "?"
        return ConfigurationError(
            f'role "{role}" does not exist on {where}: create it with '
            f'`createuser {opts} -U postgres --login {role}` (or CREATE ROLE "{role}" LOGIN;)'
        )
    if state == "28P01":  # invalid_password
        role = parsed.username if parsed and parsed.username else "?"
        return ConfigurationError(f'password authentication failed for role "{role}" on {where}')
    return None


async def _sqlite_call(fn: Callable[[], Any], lock_wait: float, sql: str) -> Any:
    """``fn`` on a sqlite3 connection, retried while another process holds the lock; errors
    wrapped as SQLAlchemy wraps them (``sa.exc.OperationalError`` for a lock wait that ran
    out), which is what the handler classifies (store.errors)."""
    try:
        return await _retry_busy(fn, lock_wait)
    except sqlite3.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc


async def _discard(handle: PgHandle, raw: Any) -> None:
    """Roll back an explicit transaction; a connection that cannot is dropped from the pool."""
    try:
        if raw.is_in_transaction():
            await raw.execute("ROLLBACK")
    except BaseException:
        await handle.invalidate()


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _unique_statement_name() -> str:
    return f"__apix_{uuid.uuid4().hex}__"


def _install_idle_ping(engine: AsyncEngine, idle_seconds: float) -> None:
    from sqlalchemy import event

    """Ping a pooled connection before use only if it sat idle longer than ``idle_seconds``
    (it may have been cut by a proxy, a failover or a frozen serverless instance)."""
    pool_events = engine.sync_engine.pool

    @event.listens_for(pool_events, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["apix_checked_in"] = time.monotonic()

    @event.listens_for(pool_events, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        last = record.info.get("apix_checked_in")
        if last is None or time.monotonic() - last < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out (or opens) another.
            raise sa.exc.DisconnectionError(f"stale pooled connection: {exc}") from exc


def _install_sqlite_hooks(engine: AsyncEngine, timeout: float, *, configure: bool = True) -> None:
    """``configure``: set up each new connection (a writer's adopted connection is already,
    and may be inside its transaction, where setting ``isolation_level`` would commit it)."""
    from sqlalchemy import event

    if configure:

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let us emit BEGIN ourselves (pysqlite's implicit transactions are not usable).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            for pragma in _SQLITE_PRAGMAS:
                cursor.execute(pragma)
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        options = conn.get_execution_options()
        if options.get(_RAW_TX_OPTION):
            return  # Database._sqlite_write began it on the sqlite3 connection
        if options.get(_WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


class WriterHandle:
    """apix's SQLite writer: its sqlite3 connection (``raw``, None for a custom
    ``async_creator``), and the SQLAlchemy connection over it, made on first need
    (:meth:`connection`). Hot statements run on ``raw`` (``store.sql.sqlite_writer`` finds it in
    :attr:`info`), so a transaction that only claims and commits never loads SQLAlchemy."""

    __slots__ = ("_conn", "_db", "_engine_owned", "info", "raw")

    def __init__(
        self, db: Database, raw: sqlite3.Connection | None, conn: AsyncConnection | None
    ) -> None:
        self._db = db
        self.raw = raw
        self._conn = conn
        #: Whether this handle opened ``raw`` itself (then it closes it, and its engine).
        self._engine_owned = conn is None
        self.info: dict[str, Any] = conn.info if conn is not None else {SQLITE_WRITER_KEY: raw}

    async def connection(self) -> AsyncConnection:
        if self._conn is None:
            assert self.raw is not None
            self._conn = await self._db._adopt(self.raw)
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.info.pop(SQLITE_WRITER_KEY, None)
            await conn.close()
            if self._engine_owned:
                await conn.engine.dispose()
        if self._engine_owned and self.raw is not None:
            self.raw.close()

    async def drop(self) -> None:
        """Forget it without a polite close (its event loop is gone)."""
        conn, self._conn = self._conn, None
        if conn is not None and self._engine_owned:
            await conn.engine.dispose(close=False)
        if self._engine_owned and self.raw is not None:
            with contextlib.suppress(Exception):
                self.raw.close()


class PgHandle:
    """A PostgreSQL connection of apix's transactions: the asyncpg connection (``raw``) and the
    SQLAlchemy connection over it — a pooled one, or, for a connection apix opened itself
    (``owned``: a cold start's), one made on first need (:meth:`connection`)."""

    __slots__ = ("_conn", "_db", "info", "owned", "raw")

    def __init__(self, db: Database, raw: Any, conn: AsyncConnection | None) -> None:
        self._db = db
        self.raw = raw
        self._conn = conn
        self.owned = conn is None
        #: Per-connection state (the names prepared on it, store.pg.Pipeline).
        self.info: dict[str, Any] = conn.info if conn is not None else {}

    @property
    def adopted(self) -> AsyncConnection | None:
        return self._conn

    async def connection(self) -> AsyncConnection:
        if self._conn is None:
            self._conn = await self._db._adopt_pg(self.raw)
        return self._conn

    def usable(self) -> bool:
        if not self.owned:
            assert self._conn is not None
            return not (self._conn.invalidated or self._conn.closed)
        return not self.raw.is_closed()

    async def ping(self, wait: float) -> bool:
        """Whether an owned connection that sat idle still answers (within ``wait`` s)."""
        try:
            async with asyncio.timeout(wait):
                await self.raw.execute("SELECT 1")
        except Exception:
            return False
        return True

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if not self.owned:
            if conn is not None:
                await conn.close()
            return
        try:
            if conn is not None:
                await conn.close()
                await conn.engine.dispose()
        finally:
            if not self.raw.is_closed():
                await self.raw.close()

    async def invalidate(self) -> None:
        if not self.owned:
            assert self._conn is not None
            await self._conn.invalidate()
            return
        await self.drop()

    async def drop(self) -> None:
        """Forget it without a polite close (its event loop may be gone)."""
        conn, self._conn = self._conn, None
        if not self.owned:
            return  # the engine's pool drops it (dispose(close=False))
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.engine.dispose(close=False)
        with contextlib.suppress(Exception):
            self.raw.terminate()
