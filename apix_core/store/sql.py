"""Small dialect helpers shared by the store and the local transport."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from apix_core.store.lazy import lazy_module

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Dialect
    from sqlalchemy.ext.asyncio import AsyncConnection

    from apix_core.store.database import PgHandle, WriterHandle
    from apix_core.store.pg import WriteBundle
else:
    # Loaded on first use: the writer's claim-and-commit path needs no SQLAlchemy (store.lazy).
    sa = lazy_module("sqlalchemy")


#: ``conn.info`` key of the sqlite3 connection of apix's SQLite writer (store.database).
SQLITE_WRITER_KEY = "apix_sqlite_writer"


#: The most rows one call of a PostgreSQL maintenance function (migrations 0007, 0008) returns or
#: deletes: callers wanting more page on.
PG_MAX_ROWS = 10000


def sqlite_writer(conn: AsyncConnection | WriterHandle | PgHandle) -> sqlite3.Connection | None:
    """The sqlite3 connection under ``conn`` when ``conn`` is apix's SQLite writer, else None.

    The writer is only used inside its ``BEGIN IMMEDIATE`` transactions (it holds the write
    lock: no statement waits on a lock), so hot statements run on it directly: SQLAlchemy's
    execution path (greenlet hop, cursor and result wrappers) cost about 25 us a statement.
    Parameters go to the driver unchanged either way (``exec_driver_sql`` semantics).
    """
    return conn.info.get(SQLITE_WRITER_KEY)


def run_sqlite(
    raw: sqlite3.Connection, sql: str, params: Sequence[Any], *, many: bool = False
) -> sqlite3.Cursor:
    """Run a statement on the writer's sqlite3 connection; driver errors are wrapped as
    SQLAlchemy wraps them (``sa.exc.OperationalError``...), which is what callers classify."""
    try:
        return raw.executemany(sql, params) if many else raw.execute(sql, params)
    except sqlite3.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc


def insert_ignore(dialect: str, table: sa.Table, index_elements: list[str] | None = None) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for SQLite and PostgreSQL."""
    # Each dialect's module loads on first use: the PostgreSQL one (and its asyncpg dialect)
    # costs a SQLite cold start tens of milliseconds.
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table).on_conflict_do_nothing(index_elements=index_elements)


@lru_cache(maxsize=64)
def _compiled_insert(
    dialect: Dialect, table: sa.Table, columns: tuple[str, ...], ignore_on: tuple[str, ...] | None
) -> tuple[str, tuple[Callable[[Any], Any] | None, ...]]:
    stmt = (
        insert_ignore(dialect.name, table, list(ignore_on))
        if ignore_on is not None
        else sa.insert(table)
    )
    compiled = stmt.compile(dialect=dialect, column_keys=list(columns))
    order = compiled.positiontup or list(columns)
    if list(order) != list(columns):
        raise RuntimeError(f"unexpected parameter order {order} for {columns}")
    procs = tuple(table.c[name].type._cached_bind_processor(dialect) for name in columns)
    return compiled.string, procs


async def insert_many(
    conn: AsyncConnection,
    table: sa.Table,
    columns: tuple[str, ...],
    rows: Sequence[Sequence[Any]],
    *,
    ignore_conflicts_on: tuple[str, ...] | None = None,
    bundle: WriteBundle | None = None,
) -> None:
    """Driver-level ``executemany`` of positional rows, or, given a PostgreSQL write ``bundle``,
    the rows added to it (sent with the transaction's other writes in one statement).

    The same statement through SQLAlchemy's ORM-free Core path still builds a parameter dict per
    row; on the hot path (outbox, idempotency, queue rows) that was a large share of the cost.
    Values pass through each column type's bind processor, so stored values are identical.
    """
    if not rows:
        return
    if bundle is not None:
        bundle.insert(table, columns, rows, ignore_conflicts_on=ignore_conflicts_on)
        return
    sql, procs = _compiled_insert(conn.dialect, table, columns, ignore_conflicts_on)
    convert = [(i, p) for i, p in enumerate(procs) if p is not None]
    raw = sqlite_writer(conn)
    if not convert:
        if raw is not None:
            run_sqlite(raw, sql, rows, many=True)
        else:
            await conn.exec_driver_sql(sql, [tuple(r) for r in rows])
        return
    # Column by column (the transposes run in C): rows of one batch share objects (one `now`
    # for every created_at), so a column holding one object is converted once.
    columns_of = list(zip(*rows, strict=True))
    for i, proc in convert:
        columns_of[i] = _converted(columns_of[i], proc)
    params = list(zip(*columns_of, strict=True))
    if raw is not None:
        run_sqlite(raw, sql, params, many=True)
    else:
        await conn.exec_driver_sql(sql, params)


def _converted(values: tuple[Any, ...], proc: Callable[[Any], Any]) -> tuple[Any, ...]:
    """``values`` through a bind processor (``None`` stays ``None``), each object once."""
    first = values[0]
    if len(set(map(id, values))) == 1:  # one shared object (`now`), the usual case
        return (None if first is None else proc(first),) * len(values)
    # Empty JSON objects (entity attributes, mostly) are equal whatever their identity.
    memo: dict[int, Any] = {}
    out: list[Any] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        key = -1 if type(v) is dict and not v else id(v)
        if key not in memo:
            memo[key] = proc(v)
        out.append(memo[key])
    return tuple(out)


def any_of(dialect: str, column: str, count: int, first: int = 1) -> str:
    """``column IN (?, ?, …)`` (SQLite) or ``column = ANY($n)`` (PostgreSQL, one array param).

    For hot statements run through ``exec_driver_sql``: SQLAlchemy renders an expanding
    ``IN`` per execution, which cost more than the statement itself for 100 ids.
    """
    if dialect == "postgresql":
        return f"{column} = ANY(${first})"
    return f"{column} IN ({','.join('?' * count)})"


def any_params(dialect: str, values: Sequence[Any]) -> tuple[Any, ...]:
    """The parameters that go with :func:`any_of`."""
    return (list(values),) if dialect == "postgresql" else tuple(values)


def param(dialect: str, n: int) -> str:
    """The ``n``-th (1-based) positional placeholder of the driver."""
    return f"${n}" if dialect == "postgresql" else "?"


def bind_value(dialect: Dialect, table: sa.Table, column: str, value: Any) -> Any:
    """``value`` as the driver expects it for ``table.column`` (e.g. SQLite datetimes as text)."""
    proc = table.c[column].type._cached_bind_processor(dialect)
    return proc(value) if proc is not None and value is not None else value
