"""An aiosqlite-shaped SQLite connection that runs on the event-loop thread.

aiosqlite sends every call to a worker thread; on small serverless machines one hop costs about
a quarter of a millisecond, and SQLAlchemy makes several per statement, so a metadata write
cost milliseconds. SQLite statements on a local file take microseconds, so apix runs them
inline. The one call that could block is waiting for another process's write lock: the
connection is opened with ``busy_timeout=0`` and a busy statement is retried here with
``asyncio.sleep`` until the configured timeout, so the event loop never stalls on a lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from typing import Any

_BUSY_MESSAGES = ("database is locked", "database table is locked")


def _adapt_date(value: date) -> str:
    return value.isoformat()


def _adapt_datetime(value: datetime) -> str:
    return value.isoformat(" ")


# Python 3.12 deprecates sqlite3's default date/datetime adapters (a DeprecationWarning on
# every statement binding one: SQLAlchemy's typed columns convert first, raw SQL does not).
# These are the same conversions, made explicit, so stored text is unchanged. apix never
# opens connections with detect_types, so no converter is involved.
sqlite3.register_adapter(date, _adapt_date)
sqlite3.register_adapter(datetime, _adapt_datetime)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return any(m in str(exc) for m in _BUSY_MESSAGES)


async def retry_busy(fn: Callable[[], Any], lock_wait: float) -> Any:
    deadline = time.monotonic() + lock_wait
    delay = 0.0005
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


class InlineCursor:
    def __init__(self, cursor: sqlite3.Cursor, timeout: float) -> None:
        self._cursor = cursor
        self._timeout = timeout

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        cur = self._cursor
        if parameters is None:
            await retry_busy(lambda: cur.execute(sql), self._timeout)
        else:
            await retry_busy(lambda: cur.execute(sql, parameters), self._timeout)
        return self

    async def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> InlineCursor:
        rows = list(seq)
        await retry_busy(lambda: self._cursor.executemany(sql, rows), self._timeout)
        return self

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size or self._cursor.arraysize)

    async def close(self) -> None:
        self._cursor.close()

    async def nextset(self) -> None:
        return None

    async def setinputsizes(self, *sizes: Any) -> None:
        return None

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _ImmediateQueue:
    """SQLAlchemy sets ``isolation_level`` through aiosqlite's private call queue; run it now."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:
            future.set_exception(exc)


class InlineConnection:
    """The subset of ``aiosqlite.Connection`` that SQLAlchemy's aiosqlite dialect uses."""

    def __init__(self, conn: sqlite3.Connection, timeout: float, *, managed: bool = False) -> None:
        self._conn = conn
        self._connection: sqlite3.Connection | None = conn
        self._tx = _ImmediateQueue()
        self._timeout = timeout
        #: apix's writer adopted by SQLAlchemy (store.database.WriterHandle), possibly inside
        #: its open transaction: apix alone commits, rolls back and closes it, so SQLAlchemy's
        #: own calls (the first connect's rollback, the pool's reset) do nothing.
        self._managed = managed

    @property
    def sqlite_connection(self) -> sqlite3.Connection:
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor(), self._timeout)

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        if not self._managed:
            await retry_busy(self._conn.commit, self._timeout)

    async def rollback(self) -> None:
        if not self._managed:
            self._conn.rollback()

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._conn.create_function(*args, **kw)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            if not self._managed:
                self._conn.close()


def inline_creator(path: str, timeout: float) -> Callable[[], Any]:
    """An ``async_creator`` for ``create_async_engine`` that opens inline connections."""

    async def create() -> InlineConnection:
        conn = sqlite3.connect(path, timeout=0, check_same_thread=False, isolation_level=None)
        return InlineConnection(conn, timeout)

    return create
