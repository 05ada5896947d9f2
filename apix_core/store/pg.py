"""PostgreSQL fast path: hot statements straight on the asyncpg connection.

SQLAlchemy's per-statement cost (compilation cache lookup, greenlet hop, result adaptation) was
larger than the statements themselves on the exactly-once path. Inside a transaction opened by
:meth:`apix_core.store.database.Database.transaction` the SQLAlchemy connection runs in
``AUTOCOMMIT`` mode while apix itself has sent ``BEGIN``, so statements issued here and through
SQLAlchemy share that one transaction.

:class:`WriteBundle` collects the inserts (and entity updates) of a transaction and sends them
as ONE statement of data-modifying CTEs over ``unnest`` arrays: one round trip however many
tables and rows.

:class:`Pipeline` saves one more: asyncpg sends one statement per round trip, but a simple
query may carry several. The idempotency claim (ids only, never content) rides in the round trip
of ``BEGIN``, as ``EXECUTE`` of a statement prepared once per connection (``PREPARE``) with its
arguments as literals (:func:`literal`). The write bundle holds content (message bodies,
entity attributes), so it always travels as bind parameters: a literal would show in
``pg_stat_activity.query`` and in the server log's statement line when a statement fails.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from apix_core.message import dump_json
from apix_core.store.lazy import lazy_module
from apix_core.tenancy import is_valid_tenant_id

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import AsyncConnection

    from apix_core.store import models as _models
else:
    # Loaded on first use: BEGIN and the claim need neither (store.lazy).
    sa = lazy_module("sqlalchemy")
    _models = lazy_module("apix_core.store.models")


def driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under a SQLAlchemy connection (already checked out)."""
    return conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]


@lru_cache(maxsize=1024)
def begin_sql(tenant_id: str | None, lock_timeout_ms: int, scans: bool) -> str | None:
    """``BEGIN`` and the transaction-local settings as one simple-query round trip.

    Returns None when the tenant is not a valid tenant id (no quote can reach the literal then):
    the caller sets it with a bound parameter instead (:data:`SETTINGS_SQL`).
    """
    tenant = tenant_id or ""
    if tenant and not is_valid_tenant_id(tenant):
        return None
    literals = tuple(f"'{v}'" for v in settings(tenant, lock_timeout_ms, scans))
    return f"BEGIN; SELECT {_SET_CONFIG % literals}"


#: The transaction-local settings of every apix transaction. ``enable_seqscan`` is off outside
#: maintenance: apix's own statements find rows by key, and asyncpg prepares them once per
#: connection. PostgreSQL caches the generic plan it makes after five executions; made while a
#: table was small (or its statistics stale: autovacuum off or behind), that plan is a
#: sequential scan and stays one as the table grows: the entity lookup of a batch went from
#: 0.1 ms to several ms within 20,000 messages. Off, the key indexes win at every size; a scan
#: with no usable index still runs (off only makes it look expensive).
_SET_CONFIG = (
    "set_config('apix.tenant_id', %s, true), set_config('lock_timeout', %s, true), "
    "set_config('enable_seqscan', %s, true)"
)

#: :data:`_SET_CONFIG` with bound parameters, for values that cannot be literals.
SETTINGS_SQL = "SELECT " + _SET_CONFIG % ("$1", "$2", "$3")


def settings(tenant_id: str, lock_timeout_ms: int, scans: bool) -> tuple[str, ...]:
    """The values of :data:`SETTINGS_SQL`, in order: ``scans`` leaves sequential scans on
    (maintenance reads ranges). No setting passes the tenant policies: cross-tenant work goes
    through the SECURITY DEFINER functions of migration 0007."""
    return (tenant_id, f"{lock_timeout_ms}ms", _ON_OFF[scans])


_ON_OFF = {True: "on", False: "off"}


@lru_cache(maxsize=1)
def _array_types() -> dict[type, str]:
    return {
        sa.String: "text[]",
        sa.Text: "text[]",
        sa.Integer: "int4[]",
        sa.Float: "float8[]",
        sa.Boolean: "bool[]",
        sa.JSON: "json[]",
        sa.DateTime: "timestamptz[]",
    }


def _array_type(column: sa.Column[Any]) -> str:
    for kind, name in _array_types().items():
        if isinstance(column.type, kind):
            return name
    raise TypeError(f"no array type for {column.table.name}.{column.name} ({column.type})")


#: The entity columns :meth:`WriteBundle.update_entities` sets, in its rows' order (after ``id``).
_UPDATE_COLUMNS = ("version", "content_hash", "attributes", "state", "updated_at")

#: What one part of a bundle writes: ``("insert", table, columns, conflict, constant)``, where
#: ``constant`` flags the columns sent as one scalar, or ``("update",)`` for entity updates.
_Shape = tuple[Any, ...]


@lru_cache(maxsize=256)
def _bundle_sql(shapes: tuple[_Shape, ...]) -> str:
    """The statement for a sequence of parts; the same shapes give the same text, so asyncpg
    reuses its prepared statement."""
    parts: list[str] = []
    n = 0
    for shape in shapes:
        if shape[0] == "insert":
            _, table, columns, conflict, constant = shape
            # A column whose value is the same in every row is one scalar parameter, not an
            # array: fewer values for asyncpg to encode (tenant, timestamps, processor...).
            values: list[str] = []
            arrays: list[str] = []
            for c, const in zip(columns, constant, strict=True):
                kind = _array_type(table.c[c])
                n += 1
                if const:
                    values.append(f"${n}::{kind[:-2]}")
                else:
                    values.append(f"u.c{len(arrays)}")
                    arrays.append(f"${n}::{kind}")
            names = ", ".join(f"c{i}" for i in range(len(arrays)))
            sql = (
                f"INSERT INTO {table.name} ({', '.join(columns)}) "
                f"SELECT {', '.join(values)} FROM unnest({', '.join(arrays)}) AS u({names})"
            )
            if conflict is not None:
                sql += f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
        else:
            tenant = f"${n + 1}::text"
            types = [_array_type(_models.entities.c[c]) for c in ("id", *_UPDATE_COLUMNS)]
            update_arrays = ", ".join(f"${n + i + 2}::{t}" for i, t in enumerate(types))
            n += len(types) + 1
            sql = (
                "UPDATE apix_entities AS e SET "
                "version = COALESCE(u.version, e.version), "
                "content_hash = COALESCE(u.content_hash, e.content_hash), "
                "attributes = COALESCE(u.attributes, e.attributes), "
                "state = COALESCE(u.state, e.state), updated_at = u.updated_at "
                f"FROM unnest({update_arrays}) "
                "AS u(id, version, content_hash, attributes, state, updated_at) "
                # By id, the key's leading column, and the tenant in a form no index serves:
                # `e.tenant_id = $n` would let a generic plan made without statistics walk the
                # tenant's natural-key index (every entity of the tenant) for each row.
                f"WHERE e.id = u.id AND e.tenant_id::text || '' = {tenant}"
            )
        parts.append(sql)
    if len(parts) == 1:
        return parts[0]
    return "WITH " + ", ".join(f"w{i} AS ({p})" for i, p in enumerate(parts)) + " SELECT 1"


@dataclass
class WriteBundle:
    """Inserts and entity updates of one transaction, written by :meth:`flush` in one statement.

    Rows are positional tuples in ``columns`` order, values as Python objects (JSON columns are
    encoded here, with :func:`~apix_core.message.dump_json`). Data-modifying CTEs see the same
    snapshot, so a bundle must not touch one row twice: entity writes are collapsed per id
    before they get here (see ``store.entities.execute_plan``).
    """

    shapes: list[_Shape] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def insert(
        self,
        table: sa.Table,
        columns: tuple[str, ...],
        rows: Sequence[Sequence[Any]],
        *,
        ignore_conflicts_on: tuple[str, ...] | None = None,
    ) -> None:
        if not rows:
            return
        constant: list[bool] = []
        for col, is_json in zip(zip(*rows, strict=True), _json_flags(table, columns), strict=True):
            values = _encode_json(col) if is_json else col
            const = values.count(values[0]) == len(values)
            constant.append(const)
            self.args.append(values[0] if const else list(values))
        if all(constant):
            # An all-constant insert still needs one array to give unnest its row count.
            constant[0] = False
            self.args[-len(constant)] = [self.args[-len(constant)]] * len(rows)
        self.shapes.append(("insert", table, columns, ignore_conflicts_on, tuple(constant)))

    def update_entities(self, tenant_id: str, rows: Sequence[Sequence[Any]]) -> None:
        """Rows ``(id, version, content_hash, attributes, state, updated_at)`` of
        ``tenant_id``'s entities; a None keeps the current value of its column."""
        if rows:
            self.shapes.append(("update",))
            self.args.append(tenant_id)
            flags = _json_flags(_models.entities, ("id", *_UPDATE_COLUMNS))
            for col, is_json in zip(zip(*rows, strict=True), flags, strict=True):
                self.args.append(_encode_json(col) if is_json else list(col))

    def __bool__(self) -> bool:
        return bool(self.shapes)

    async def flush(self, conn: AsyncConnection) -> None:
        if not self:
            return
        sql, args = _bundle_sql(tuple(self.shapes)), self.args
        self.shapes, self.args = [], []
        await driver(conn).execute(sql, *args)


@lru_cache(maxsize=64)
def _json_flags(table: sa.Table, columns: tuple[str, ...]) -> tuple[bool, ...]:
    return tuple(isinstance(table.c[c].type, sa.JSON) for c in columns)


def _encode_json(values: Sequence[Any]) -> list[Any]:
    """JSON column values as the JSON text the driver sends (empty dicts, the usual entity
    attributes, without a call to the encoder)."""
    return [
        None if v is None else "{}" if type(v) is dict and not v else dump_json(v) for v in values
    ]


# -- statements in the round trips of BEGIN and COMMIT ----------------------------------------
class NotALiteralError(ValueError):
    """A value :func:`literal` cannot write (NUL characters, an unknown type)."""


def _text(value: Any) -> str:
    """The text PostgreSQL reads back as ``value`` (as asyncpg would have sent it)."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    # Subclasses (StrEnum, IntEnum...) by their value, never by a __str__ of their own.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)  # float8 reads inf, -inf and nan too
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise NotALiteralError(f"no literal for {kind.__name__}")


def _array_literal(values: list[Any]) -> str:
    """An array literal as an ``E''`` string: elements double-quoted with ``\\`` and ``"``
    escaped (the array's rules), then backslashes and quotes escaped again (the string's)."""
    if not values:
        return "'{}'"
    if None in values:
        elements = ("NULL" if v is None else _quote_element(_text(v)) for v in values)
        return "E'{" + ",".join(elements).replace("'", "''") + "}'"
    # One pass of C string methods for the whole array, not one per element: elements are
    # joined with NUL, which no element may contain (counted), then escaped and re-separated.
    joined = "\x00".join([v if type(v) is str else _text(v) for v in values])
    if joined.count("\x00") != len(values) - 1:
        raise NotALiteralError("NUL character in a value")
    return (
        "E'{\""
        + joined.replace("\\", "\\\\\\\\")
        .replace('"', '\\\\"')
        .replace("'", "''")
        .replace("\x00", '","')
        + "\"}'"
    )


def _quote_element(text: str) -> str:
    """One array element, double-quoted, escaped for the array and for the ``E''`` string."""
    if "\x00" in text:
        raise NotALiteralError("NUL character in a value")
    return '"' + text.replace("\\", "\\\\\\\\").replace('"', '\\\\"') + '"'


def literal(value: Any) -> str:
    """``value`` (str, int, float, bool, datetime, None, or a list of those) as a SQL literal.

    An ``E''`` string, read the same whatever ``standard_conforming_strings`` is: backslashes
    doubled, quotes doubled. Text cannot hold NUL in PostgreSQL; a NUL raises
    :class:`NotALiteralError` (also because the simple-query protocol ends its text at NUL).
    """
    if value is None:
        return "NULL"
    if type(value) is list:
        return _array_literal(value)
    text = _text(value)
    if "\x00" in text:
        raise NotALiteralError("NUL character in a value")
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


@lru_cache(maxsize=512)
def statement_name(sql: str) -> str:
    """A name for ``sql`` as a prepared statement: the same text, the same name."""
    return "apix_" + hashlib.sha1(sql.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """One execution of a server-side prepared statement, as simple-query text."""

    name: str
    statement: str
    args: tuple[str, ...]

    def sql(self, prepared: set[str]) -> str:
        """``EXECUTE``, preceded by its ``PREPARE`` unless ``prepared`` (the names prepared on
        the connection) has the name; adds it (the database starts the set afresh after an
        error, when a PREPARE may not have happened)."""
        execute = f"EXECUTE {self.name}({', '.join(self.args)})"
        if self.name in prepared:
            return execute
        prepared.add(self.name)
        return f"PREPARE {self.name} AS {self.statement}; {execute}"


@dataclass(slots=True)
class Pipeline:
    """What a PostgreSQL transaction sends in the round trip of its ``BEGIN``
    (:meth:`apix_core.store.database.Database.transaction`): ``first`` after the settings;
    ``first_status`` is its command tag."""

    first: PreparedCall | None = None
    first_status: str | None = None


#: Statements apix prepares on one connection before it deallocates them and starts over
#: (asyncpg bounds its own statement cache likewise).
MAX_PREPARED = 100

#: The idempotency claim (see ``ProcessorHandler._claim``) without RETURNING: in a simple
#: query the command tag (``INSERT 0 n``) is what comes back, and ``n`` equal to the number of
#: ids means every id was claimed (the usual case); otherwise :data:`CLAIMED_SQL` tells which.
CLAIM_SQL = (
    "INSERT INTO apix_idempotency (tenant_id, processor, message_id, status, created_at) "
    "SELECT $1::text, $2::text, m, 'completed', $3::timestamptz FROM unnest($4::text[]) AS m "
    "ON CONFLICT DO NOTHING"
)

#: Of ``ids``, those this transaction inserted (its own rows carry its transaction id).
CLAIMED_SQL = (
    "SELECT message_id FROM apix_idempotency WHERE tenant_id = $1 AND processor = $2 "
    "AND message_id = ANY($3::text[]) AND xmin = pg_current_xact_id()::xid"
)


def claim_call(
    tenant_id: str, processor: str, created_at: datetime, ids: list[str]
) -> PreparedCall | None:
    """The claim of ``ids`` as a :class:`PreparedCall`, or None if an id cannot be a literal.
    Sorted: concurrent overlapping batches wait on each other's rows in one order."""
    try:
        args = (literal(tenant_id), literal(processor), literal(created_at), literal(sorted(ids)))
    except NotALiteralError:
        return None
    return PreparedCall(statement_name(CLAIM_SQL), CLAIM_SQL, args)


def inserted_count(status: str | None) -> int:
    """The row count of an ``INSERT 0 n`` command tag (-1 for anything else)."""
    if status and status.startswith("INSERT "):
        return int(status.rpartition(" ")[2])
    return -1
