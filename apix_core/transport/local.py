"""The local transport: durable queues in a SQL table.

On SQLite a receive is an ``UPDATE ... RETURNING`` under ``BEGIN IMMEDIATE``; on PostgreSQL it
selects with ``FOR UPDATE SKIP LOCKED``, so several worker processes share one queue. A receive
hides a message for the visibility timeout and stamps a fresh receipt; ack, release and
dead-letter only act on the holder of the current receipt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
import weakref
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from apix_core.constants import (
    DEFAULT_LOCAL_MAX_MESSAGE_BYTES,
    DEFAULT_VISIBILITY_TIMEOUT,
    TENANT_ATTRIBUTE,
)
from apix_core.errors import (
    ConfigurationError,
    DeadLetterNotFoundError,
    MalformedMessageError,
)
from apix_core.storable import (
    BASE64,
    BODY_ENCODING_ATTRIBUTE,
    column_text,
    optional_column_text,
    restore_body,
    storable_attributes,
    storable_body,
)
from apix_core.store.database import Database, normalize_url
from apix_core.store.models import dead_letters, queue_messages
from apix_core.store.sql import (
    PG_MAX_ROWS,
    any_of,
    any_params,
    insert_ignore,
    insert_many,
    param,
    run_sqlite,
    sqlite_writer,
)
from apix_core.tenancy import is_valid_tenant_id
from apix_core.transport.base import (
    DeadLetterInfo,
    DeadLetterRecord,
    OutgoingMessage,
    QueueDepth,
    QueueTransport,
    ReceivedMessage,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from apix_core.config import Settings
    from apix_core.store.pg import WriteBundle

_qm = queue_messages
_dl = dead_letters

_SQLITE_RECEIVE = (
    "UPDATE apix_queue_messages SET visible_at = ?, receive_count = receive_count + 1, "
    "receipt = ? WHERE id IN (SELECT id FROM apix_queue_messages "
    "WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, id LIMIT ?) "
    "RETURNING id, message_id, body, attributes, enqueued_at, receive_count"
)
# PostgreSQL: every cross-tenant statement is a SECURITY DEFINER function of migration 0007.
_PG_RECEIVE = "SELECT * FROM apix_queue_receive($1, $2, $3, $4, $5)"
_DL_ARGS = ":queue, :processor, :tenant, :code, :since"
_PG_DEAD_LETTER = sa.text(
    "SELECT apix_queue_dead_letter(:id, :receipt, :queue, :message_id, :tenant_id, :body, "
    ":attributes, :error_code, :error_category, :error_message, :processor, :attempts, "
    ":created_at)"
).bindparams(sa.bindparam("created_at", type_=sa.DateTime(timezone=True)))
_PG_DL_LIST = (
    sa.text(f"SELECT * FROM apix_dead_letters_list({_DL_ARGS}, :before, :limit, :offset)")
    .bindparams(sa.bindparam("since", type_=sa.DateTime(timezone=True)))
    .columns(*dead_letters.c)
)
_PG_DL_COUNT = sa.text(f"SELECT apix_dead_letters_count({_DL_ARGS})").bindparams(
    sa.bindparam("since", type_=sa.DateTime(timezone=True))
)
_PG_DL_PURGE = sa.text(f"SELECT apix_dead_letters_purge({_DL_ARGS})").bindparams(
    sa.bindparam("since", type_=sa.DateTime(timezone=True))
)
_PG_DL_GET = sa.text("SELECT * FROM apix_dead_letter_get(:id)").columns(*dead_letters.c)
#: What makes a queued message one: a resend of it is dropped, another tenant's same id is not.
_IDENTITY = ("queue", "tenant_id", "message_id")
_SEND_COLUMNS = (
    "queue",
    "tenant_id",
    "message_id",
    "body",
    "attributes",
    "enqueued_at",
    "visible_at",
    "receive_count",
)


def _tenant_of(message: OutgoingMessage) -> str:
    """The sending tenant (or the ``tenant_id`` attribute; ``''`` when neither names one)."""
    tenant = message.tenant_id
    if tenant is None:
        tenant = message.attributes.get(TENANT_ATTRIBUTE) if message.attributes else None
    if not tenant:
        return ""
    return tenant if is_valid_tenant_id(tenant) else column_text(tenant, 64)


def _split_receipt(receipt: str) -> tuple[int, str]:
    row_id, _, token = receipt.partition(":")
    return int(row_id), token


def _receipt_or_none(receipt: str) -> tuple[int | None, str]:
    """A delivery this transport did not hand out (a trigger's own) has no usable receipt."""
    try:
        return _split_receipt(receipt) if receipt else (None, "")
    except ValueError:
        return None, ""


class LocalTransport(QueueTransport):
    """Queues as rows of ``apix_queue_messages``; dead letters in ``apix_dead_letters``.

    The transport serves every tenant. On PostgreSQL it sends each tenant's messages in a
    transaction of that tenant (the policy checks them), and does its cross-tenant work (receive,
    settle, dead letters, inspection) through the SECURITY DEFINER functions of migration 0007,
    each narrow: a session, whatever it sets, sees only its own tenant's rows in the tables."""

    name = "local"

    def __init__(
        self,
        database: Database,
        *,
        visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
        max_message_bytes: int = DEFAULT_LOCAL_MAX_MESSAGE_BYTES,
        owns_database: bool = False,
    ) -> None:
        self.db = database
        self.visibility_timeout = visibility_timeout
        self._max_bytes = max_message_bytes
        self._owns_db = owns_database
        self._events: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Event]
        ] = weakref.WeakKeyDictionary()

    def max_message_bytes(self, queue: str) -> int:
        return self._max_bytes

    def _event(self, queue: str) -> asyncio.Event:
        # Events belong to one event loop; key them by loop so asyncio.run() may repeat.
        per_loop = self._events.setdefault(asyncio.get_running_loop(), {})
        event = per_loop.get(queue)
        if event is None:
            event = per_loop[queue] = asyncio.Event()
        return event

    async def wait_for_messages(self, queue: str, max_wait: float) -> None:
        """Wake on a send from this process; other processes' sends are seen by polling."""
        event = self._event(queue)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max_wait)
        event.clear()

    async def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        rows = self._send_rows(queue, messages)
        if self.db.is_postgres:
            # Row-level security checks each row's tenant against the transaction's.
            by_tenant: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
            for row in rows:
                by_tenant[row[1]].append(row)
            for tenant, tenant_rows in by_tenant.items():
                async with self.db.transaction(tenant_id=tenant) as conn:
                    await insert_many(
                        conn, _qm, _SEND_COLUMNS, tenant_rows, ignore_conflicts_on=_IDENTITY
                    )
        else:
            async with self.db.transaction() as conn:
                await insert_many(conn, _qm, _SEND_COLUMNS, rows, ignore_conflicts_on=_IDENTITY)
        self.notify(queue)

    def joins_transactions_of(self, db: Database) -> bool:
        """True when this transport keeps its queues in ``db``: a unit of work then enqueues
        in its own transaction (:meth:`send_in_transaction`) instead of through the outbox."""
        return db is self.db

    async def send_in_transaction(
        self,
        conn: AsyncConnection,
        queue: str,
        messages: Sequence[OutgoingMessage],
        bundle: WriteBundle | None = None,
    ) -> None:
        """Enqueue on ``conn``, a transaction of this transport's database; visible when it
        commits (call :meth:`notify` after). With a PostgreSQL ``bundle`` the rows join the
        transaction's single write statement."""
        await insert_many(
            conn,
            _qm,
            _SEND_COLUMNS,
            self._send_rows(queue, messages),
            ignore_conflicts_on=_IDENTITY,
            bundle=bundle,
        )

    def notify(self, queue: str) -> None:
        """Messages were committed to ``queue`` outside :meth:`send_batch`: wake local workers."""
        if not self._events:
            return  # no worker of this process has waited yet: nobody to wake
        with contextlib.suppress(RuntimeError):  # no running loop: nobody to wake
            self._event(queue).set()

    def _send_rows(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[tuple[Any, ...]]:
        now = time.time()
        for m in messages:
            self.check_size(queue, m.body)
            if self.db.is_postgres and "\x00" in m.body:
                raise MalformedMessageError(
                    f"message {m.message_id!r} contains NUL characters, which PostgreSQL text "
                    "cannot store (JSON encodes them as \\u0000)"
                )
        return [
            (
                queue,
                _tenant_of(m),
                m.message_id,
                m.body,
                m.attributes or None,
                now,
                now + m.delay_seconds,
                0,
            )
            for m in messages
        ]

    async def receive(
        self, queue: str, max_messages: int = 10, visibility_timeout: float | None = None
    ) -> list[ReceivedMessage]:
        now = time.time()
        token = uuid.uuid4().hex[:16]
        hidden_until = now + (
            self.visibility_timeout if visibility_timeout is None else visibility_timeout
        )
        # Driver-level SQL: this runs once per batch per queue, and SQLAlchemy's per-row result
        # processing (JSON, floats) cost more than the statement. Attributes stay JSON text.
        # Positional on both: SQLite's plain "?" in statement order (numbered "?N" with a
        # sequence is an error from Python 3.14), PostgreSQL's function arguments.
        params: tuple[Any, ...]
        if self.db.is_postgres:
            sql, params = _PG_RECEIVE, (queue, hidden_until, token, now, max_messages)
        else:
            sql, params = _SQLITE_RECEIVE, (hidden_until, token, queue, now, max_messages)
        async with self.db.transaction() as conn:
            raw = sqlite_writer(conn)
            if raw is not None:
                found: list[tuple[Any, ...]] = run_sqlite(raw, sql, params).fetchall()
            else:
                found = list(map(tuple, (await conn.exec_driver_sql(sql, params)).all()))
        rows = sorted(found, key=_first)
        return [
            _received(queue, f"{row_id}:{token}", message_id, body, attributes, enqueued_at, count)
            for row_id, message_id, body, attributes, enqueued_at, count in rows
        ]

    async def ack(self, queue: str, messages: Sequence[ReceivedMessage]) -> None:
        if not messages:
            return
        by_token: dict[str, list[int]] = defaultdict(list)
        for m in messages:
            row_id, token = _split_receipt(m.receipt)
            by_token[token].append(row_id)
        dialect = self.db.dialect
        async with self.db.transaction() as conn:
            raw = sqlite_writer(conn)
            for token, ids in by_token.items():
                if self.db.is_postgres:
                    await conn.exec_driver_sql("SELECT apix_queue_ack($1, $2)", (token, ids))
                    continue
                sql = (
                    f"DELETE FROM apix_queue_messages WHERE receipt = {param(dialect, 1)} AND "
                    + any_of(dialect, "id", len(ids), first=2)
                )
                params = (token, *any_params(dialect, ids))
                if raw is not None:
                    run_sqlite(raw, sql, params)
                else:
                    await conn.exec_driver_sql(sql, params)

    async def release(self, queue: str, message: ReceivedMessage, delay_seconds: float) -> None:
        row_id, token = _split_receipt(message.receipt)
        visible_at = time.time() + max(0.0, delay_seconds)
        async with self.db.transaction() as conn:
            if self.db.is_postgres:
                sql = "SELECT apix_queue_release($1, $2, $3)"
                await conn.exec_driver_sql(sql, (row_id, token, visible_at))
                return
            await conn.execute(
                sa.update(_qm)
                .where(_qm.c.id == row_id, _qm.c.receipt == token)
                .values(visible_at=visible_at, receipt=None)
            )

    async def dead_letter(self, queue: str, message: ReceivedMessage, info: DeadLetterInfo) -> None:
        """Record ``message`` with ``info``; writable for any input: values its columns cannot
        hold are escaped and clipped, and a body text cannot hold (NUL, invalid UTF-8) is kept
        as base64, marked by the ``apix_body_encoding`` attribute, which replay undoes."""
        row_id, token = _receipt_or_none(message.receipt)
        body, encoded = storable_body(message.body)
        attributes = storable_attributes(message.attributes)
        if encoded:
            attributes[BODY_ENCODING_ATTRIBUTE] = BASE64
        else:
            attributes.pop(BODY_ENCODING_ATTRIBUTE, None)
        attempts = info.attempts if type(info.attempts) is int and 0 <= info.attempts < 2**31 else 0
        values = {
            "queue": column_text(queue, 255),
            "message_id": column_text(message.message_id, 255),
            "tenant_id": optional_column_text(info.tenant_id, 64),
            "body": body,
            "attributes": attributes,
            "error_code": column_text(info.error_code, 100),
            "error_category": column_text(info.error_category, 20),
            "error_message": column_text(info.error_message, 8000),
            "processor": optional_column_text(info.processor, 100),
            "attempts": attempts,
            "created_at": datetime.now(UTC),
        }
        async with self.db.transaction() as conn:
            if self.db.is_postgres:
                values["attributes"] = json.dumps(attributes)
                await conn.execute(_PG_DEAD_LETTER, {"id": row_id, "receipt": token, **values})
                return
            await conn.execute(sa.insert(_dl).values(**values))
            if row_id is not None:
                await conn.execute(sa.delete(_qm).where(_qm.c.id == row_id, _qm.c.receipt == token))

    async def list_dead_letters(
        self,
        queue: str | None = None,
        limit: int | None = 50,
        *,
        processor: str | None = None,
        tenant_id: str | None = None,
        error_code: str | None = None,
        since: datetime | None = None,
        offset: int = 0,
    ) -> list[DeadLetterRecord]:
        """Dead letters matching every filter given, newest first (``limit=None``: all)."""
        if self.db.is_postgres:
            filters = _dl_params(queue, processor, tenant_id, error_code, since)
            return await self._pg_list_dead_letters(filters, limit, offset)
        stmt = sa.select(_dl).order_by(_dl.c.id.desc()).offset(offset)
        if limit is not None:
            stmt = stmt.limit(limit)
        stmt = stmt.where(*_dl_filters(queue, processor, tenant_id, error_code, since))
        async with self.db.transaction(write=False, maintenance=True) as conn:
            rows = (await conn.execute(stmt)).all()
        return [_record(r) for r in rows]

    async def _pg_list_dead_letters(
        self, filters: dict[str, Any], limit: int | None, offset: int
    ) -> list[DeadLetterRecord]:
        """Pages of at most :data:`PG_MAX_ROWS` (the function's clip), newest first."""
        found: list[DeadLetterRecord] = []
        before: int | None = None
        while True:
            want = PG_MAX_ROWS if limit is None else min(limit - len(found), PG_MAX_ROWS)
            params = {**filters, "before": before, "limit": want, "offset": offset}
            async with self.db.transaction(write=False, maintenance=True) as conn:
                rows = (await conn.execute(_PG_DL_LIST, params)).all()
            found.extend(_record(r) for r in rows)
            if len(rows) < want or (limit is not None and len(found) >= limit):
                return found
            before, offset = rows[-1].id, 0

    async def count_dead_letters(
        self,
        queue: str | None = None,
        *,
        processor: str | None = None,
        tenant_id: str | None = None,
        error_code: str | None = None,
        since: datetime | None = None,
    ) -> int:
        """How many dead letters match the filters (those of :meth:`list_dead_letters`)."""
        stmt: Any = sa.select(sa.func.count()).select_from(_dl)
        stmt = stmt.where(*_dl_filters(queue, processor, tenant_id, error_code, since))
        params: dict[str, Any] = {}
        if self.db.is_postgres:
            stmt = _PG_DL_COUNT
            params = _dl_params(queue, processor, tenant_id, error_code, since)
        async with self.db.transaction(write=False, maintenance=True) as conn:
            return int((await conn.execute(stmt, params)).scalar_one())

    async def delete_dead_letter(self, dead_letter_id: str) -> None:
        """Delete one dead letter (:class:`DeadLetterNotFoundError` when there is none)."""
        async with self.db.transaction(maintenance=True) as conn:
            if self.db.is_postgres:
                sql = "SELECT apix_dead_letter_delete($1)"
                count = (await conn.exec_driver_sql(sql, (_dl_id(dead_letter_id),))).scalar_one()
            else:
                stmt = sa.delete(_dl).where(_dl.c.id == _dl_id(dead_letter_id))
                count = (await conn.execute(stmt)).rowcount
        if not count:
            raise DeadLetterNotFoundError(f"no dead letter with id {dead_letter_id}")

    async def purge_dead_letters(
        self,
        queue: str | None = None,
        *,
        processor: str | None = None,
        tenant_id: str | None = None,
        error_code: str | None = None,
        since: datetime | None = None,
    ) -> int:
        """Delete the dead letters matching the filters; returns how many."""
        if self.db.is_postgres:
            params = _dl_params(queue, processor, tenant_id, error_code, since)
            total = 0
            while True:  # PG_MAX_ROWS a call (migration 0008), each call its own transaction
                async with self.db.transaction(maintenance=True) as conn:
                    n = int((await conn.execute(_PG_DL_PURGE, params)).scalar_one())
                total += n
                if n < PG_MAX_ROWS:
                    return total
        stmt = sa.delete(_dl).where(*_dl_filters(queue, processor, tenant_id, error_code, since))
        async with self.db.transaction(maintenance=True) as conn:
            result = await conn.execute(stmt)
        return int(result.rowcount or 0)

    async def peek(self, queue: str, limit: int = 10) -> list[QueuedMessage]:
        """The oldest messages of ``queue`` (in receive order), without receiving them."""
        if self.db.is_postgres:
            async with self.db.transaction(write=False) as conn:
                sql = "SELECT * FROM apix_queue_peek($1, $2)"
                rows = (await conn.exec_driver_sql(sql, (queue, limit))).all()
            return [_queued(queue, r, r.in_flight) for r in rows]
        stmt = (
            sa.select(
                _qm.c.id,
                _qm.c.message_id,
                _qm.c.body,
                _qm.c.attributes,
                _qm.c.enqueued_at,
                _qm.c.visible_at,
                _qm.c.receive_count,
                _qm.c.receipt,
            )
            .where(_qm.c.queue == queue)
            .order_by(_qm.c.visible_at, _qm.c.id)
            .limit(limit)
        )
        async with self.db.transaction(write=False) as conn:
            found = (await conn.execute(stmt)).all()
        return [_queued(queue, r, r.receipt is not None) for r in found]

    async def purge(self, queue: str) -> int:
        """Delete every message of ``queue`` (in flight ones too); returns how many."""
        if self.db.is_postgres:
            total = 0
            while True:  # PG_MAX_ROWS a call (migration 0008), each call its own transaction
                async with self.db.transaction() as conn:
                    sql = "SELECT apix_queue_purge($1)"
                    n = int((await conn.exec_driver_sql(sql, (queue,))).scalar_one())
                total += n
                if n < PG_MAX_ROWS:
                    return total
        async with self.db.transaction() as conn:
            result = await conn.execute(sa.delete(_qm).where(_qm.c.queue == queue))
        return int(result.rowcount or 0)

    async def get_dead_letter(self, dead_letter_id: str) -> DeadLetterRecord:
        stmt: Any = sa.select(_dl).where(_dl.c.id == _dl_id(dead_letter_id))
        params: dict[str, Any] = {}
        if self.db.is_postgres:
            stmt, params = _PG_DL_GET, {"id": _dl_id(dead_letter_id)}
        async with self.db.transaction(write=False, maintenance=True) as conn:
            row = (await conn.execute(stmt, params)).first()
        if row is None:
            raise DeadLetterNotFoundError(f"no dead letter with id {dead_letter_id}")
        return _record(row)

    async def replay_dead_letter(self, dead_letter_id: str) -> str:
        if self.db.is_postgres:
            params = (_dl_id(dead_letter_id), time.time(), datetime.now(UTC))
            async with self.db.transaction() as conn:
                sql = "SELECT apix_dead_letter_replay($1, $2, $3)"
                replayed = (await conn.exec_driver_sql(sql, params)).scalar_one()
            if replayed is None:
                raise DeadLetterNotFoundError(f"no dead letter with id {dead_letter_id}")
            return str(replayed)
        record = await self.get_dead_letter(dead_letter_id)
        now = time.time()
        async with self.db.transaction(maintenance=True) as conn:
            # A replay is a fresh delivery history: receive_count restarts at zero.
            await conn.execute(
                insert_ignore(self.db.dialect, _qm, list(_IDENTITY)).values(
                    queue=record.queue,
                    tenant_id=record.tenant_id or "",
                    message_id=record.message_id,
                    body=record.body,
                    attributes=dict(record.attributes),
                    enqueued_at=now,
                    visible_at=now,
                    receive_count=0,
                )
            )
            await conn.execute(
                sa.update(_dl)
                .where(_dl.c.id == int(record.id))
                .values(replayed_at=datetime.now(UTC))
            )
        return record.message_id

    async def depth(self, queue: str) -> QueueDepth:
        now = time.time()
        stmt: Any = sa.select(
            sa.func.count().filter(_qm.c.visible_at <= now),
            sa.func.count().filter(_qm.c.visible_at > now, _qm.c.receipt.is_not(None)),
            sa.func.count().filter(_qm.c.visible_at > now, _qm.c.receipt.is_(None)),
        ).where(_qm.c.queue == queue)
        params: dict[str, Any] = {}
        if self.db.is_postgres:
            stmt = sa.text("SELECT * FROM apix_queue_depth(:queue, :now)")
            params = {"queue": queue, "now": now}
        async with self.db.transaction(write=False) as conn:
            visible, in_flight, delayed = (await conn.execute(stmt, params)).one()
        return QueueDepth(visible=visible, in_flight=in_flight, delayed=delayed)

    async def queues(self) -> list[str]:
        """Names of the queues that hold messages now."""
        stmt: Any = sa.select(_qm.c.queue).distinct()
        if self.db.is_postgres:
            stmt = sa.text("SELECT apix_queue_names()")
        async with self.db.transaction(write=False) as conn:
            rows = (await conn.execute(stmt)).scalars().all()
        return sorted(rows)

    async def close(self) -> None:
        if self._owns_db:
            await self.db.dispose()


def _queued(queue: str, r: Any, in_flight: bool) -> QueuedMessage:
    now = time.time()
    return QueuedMessage(
        queue=queue,
        message_id=r.message_id,
        body=r.body,
        attributes=_attributes(r.attributes),
        enqueued_at=r.enqueued_at,
        visible_at=r.visible_at,
        receive_count=r.receive_count,
        state="visible" if r.visible_at <= now else ("in flight" if in_flight else "delayed"),
    )


def _received(
    queue: str,
    receipt: str,
    message_id: str,
    body: str,
    raw_attributes: Any,
    enqueued_at: float,
    receive_count: int,
) -> ReceivedMessage:
    attributes = _attributes(raw_attributes)
    if BODY_ENCODING_ATTRIBUTE in attributes:
        # A replayed dead letter whose body text could not hold: hand back the original bytes.
        original = restore_body(body, attributes)
        del attributes[BODY_ENCODING_ATTRIBUTE]
    else:
        original = body
    return ReceivedMessage(
        queue=queue,
        message_id=message_id,
        body=original,
        receipt=receipt,
        receive_count=receive_count,
        attributes=attributes,
        enqueued_at=enqueued_at,
    )


@dataclass(frozen=True)
class QueuedMessage:
    """A message waiting in a local queue, as :meth:`LocalTransport.peek` shows it."""

    queue: str
    message_id: str
    body: str
    attributes: dict[str, str]
    enqueued_at: float
    visible_at: float
    receive_count: int
    #: ``visible``, ``in flight`` (received, not settled) or ``delayed``.
    state: str


def _dl_filters(
    queue: str | None,
    processor: str | None,
    tenant_id: str | None,
    error_code: str | None,
    since: datetime | None,
) -> list[sa.ColumnElement[bool]]:
    found: list[sa.ColumnElement[bool]] = []
    if queue:
        found.append(_dl.c.queue == queue)
    if processor:
        found.append(_dl.c.processor == processor)
    if tenant_id:
        found.append(_dl.c.tenant_id == tenant_id)
    if error_code:
        found.append(_dl.c.error_code == error_code)
    if since is not None:
        found.append(_dl.c.created_at >= since)
    return found


def _dl_params(
    queue: str | None,
    processor: str | None,
    tenant_id: str | None,
    error_code: str | None,
    since: datetime | None,
) -> dict[str, Any]:
    """The filters of :func:`_dl_filters` as the dead-letter functions' arguments (NULL: any)."""
    return {
        "queue": queue or None,
        "processor": processor or None,
        "tenant": tenant_id or None,
        "code": error_code or None,
        "since": since,
    }


def _first(row: tuple[Any, ...]) -> Any:
    return row[0]


def _attributes(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, str):
        # SQLite returns the JSON column as text at the driver level; asyncpg as text too.
        decoded = json.loads(raw)
        return decoded if isinstance(decoded, dict) else {}
    return dict(raw)


def _dl_id(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DeadLetterNotFoundError(f"dead-letter ids are integers here, not {value!r}") from None


def _record(r: sa.Row) -> DeadLetterRecord:  # type: ignore[type-arg]
    return DeadLetterRecord(
        id=str(r.id),
        queue=r.queue,
        message_id=r.message_id,
        body=r.body,
        error_code=r.error_code,
        error_category=r.error_category,
        error_message=r.error_message,
        attempts=r.attempts,
        created_at=r.created_at,
        processor=r.processor,
        tenant_id=r.tenant_id,
        attributes=dict(r.attributes or {}),
        replayed_at=r.replayed_at,
    )


async def from_url(
    url: str, *, settings: Settings, database: Database | None = None, **_: Any
) -> LocalTransport:
    """The registry's factory for database URLs: shares ``database`` when the URL names it
    (queue outputs then commit with the processing transaction), else opens its own."""
    if database is not None and normalize_url(url) == database.url:
        db, owns = database, False
    else:
        db, owns = Database(url, timeout=settings.db_timeout), True
        try:
            if settings.auto_migrate:
                await db.upgrade()
            elif await db.current_revision() is None:
                raise ConfigurationError(
                    f"the queue database {db.safe_url} has no apix schema: run `apix db upgrade`"
                )
        except BaseException:
            await db.dispose()
            raise
    return LocalTransport(
        db,
        visibility_timeout=settings.visibility_timeout,
        max_message_bytes=settings.local_max_message_bytes,
        owns_database=owns,
    )
