"""The transactional outbox: rows written with the processing transaction, dispatched after commit.

Rows carry a deterministic id (derived from tenant, processor, input message id and position),
which is also the outgoing message id, so a re-dispatch after a crash is deduplicated by the
next stage. A sent row keeps its metadata and loses its body.
"""

from __future__ import annotations

import gzip
import json
import os
import string
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from apix_core.exceptions import InvalidFilePatternError, UnsafeFilePathError
from apix_core.store.database import Database
from apix_core.store.models import outbox
from apix_core.store.sql import (
    any_of,
    any_params,
    bind_value,
    insert_many,
    param,
    run_sqlite,
    sqlite_writer,
)
from apix_core.transport.base import OutgoingMessage, QueueTransport

if TYPE_CHECKING:
    from apix_core.store.pg import WriteBundle


@dataclass(slots=True)
class OutboxRow:
    id: str
    tenant_id: str
    processor: str
    source_message_id: str
    seq: int
    kind: str
    destination: str
    body: str
    delay_seconds: float
    created_at: datetime
    config: dict[str, Any] | None = None

    def as_tuple(self) -> tuple[Any, ...]:
        body = self.body
        if self.kind == "file" and self.config:
            # File options travel with the row so a re-dispatch writes the same file.
            body = json.dumps({"config": self.config, "body": self.body}, separators=(",", ":"))
        return (
            self.id,
            self.tenant_id,
            self.processor,
            self.source_message_id,
            self.seq,
            self.kind,
            self.destination,
            body,
            self.delay_seconds,
            self.created_at,
        )


OUTBOX_COLUMNS = (
    "id",
    "tenant_id",
    "processor",
    "source_message_id",
    "seq",
    "kind",
    "destination",
    "body",
    "delay_seconds",
    "created_at",
)


async def insert_rows(
    conn: AsyncConnection, rows: Sequence[OutboxRow], bundle: WriteBundle | None = None
) -> None:
    """Insert outbox rows on ``conn``, or add them to a PostgreSQL write ``bundle``."""
    await insert_many(conn, outbox, OUTBOX_COLUMNS, [r.as_tuple() for r in rows], bundle=bundle)


async def pending_rows(
    conn: AsyncConnection, tenant_id: str, processor: str, message_ids: Sequence[str]
) -> list[OutboxRow]:
    """Unsent rows of already-completed messages (a redelivery re-dispatches them)."""
    if not message_ids:
        return []
    stmt = (
        sa.select(outbox)
        .where(
            outbox.c.tenant_id == tenant_id,
            outbox.c.processor == processor,
            outbox.c.source_message_id.in_(message_ids),
            outbox.c.sent_at.is_(None),
        )
        .order_by(outbox.c.source_message_id, outbox.c.seq)
    )
    return [_from_row(r) for r in (await conn.execute(stmt)).all()]


async def stale_rows(db: Database, older_than_seconds: float, limit: int = 500) -> list[OutboxRow]:
    """Unsent rows older than the threshold, of every tenant (for the sweeper)."""
    cutoff = datetime.now(UTC).timestamp() - older_than_seconds
    stmt = (
        sa.select(outbox)
        .where(
            outbox.c.sent_at.is_(None), outbox.c.created_at <= datetime.fromtimestamp(cutoff, UTC)
        )
        .order_by(outbox.c.created_at)
        .limit(limit)
    )
    # Cross-tenant by design: the maintenance path passes PostgreSQL row-level security.
    async with db.transaction(write=False, maintenance=True) as conn:
        return [_from_row(r) for r in (await conn.execute(stmt)).all()]


def _from_row(r: sa.Row[Any]) -> OutboxRow:
    body, config = r.body or "", None
    if r.kind == "file" and body.startswith('{"config"'):
        wrapped = json.loads(body)
        body, config = wrapped["body"], wrapped["config"]
    created = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=UTC)
    return OutboxRow(
        id=r.id,
        tenant_id=r.tenant_id,
        processor=r.processor,
        source_message_id=r.source_message_id,
        seq=r.seq,
        kind=r.kind,
        destination=r.destination,
        body=body,
        delay_seconds=r.delay_seconds,
        created_at=created,
        config=config,
    )


class Dispatcher:
    """Sends outbox rows to their transport or file, then marks them sent."""

    def __init__(self, db: Database | None, transport: QueueTransport | None) -> None:
        self.db = db
        self.transport = transport

    async def dispatch(self, rows: Sequence[OutboxRow]) -> None:
        if not rows:
            return
        by_queue: dict[str, list[OutgoingMessage]] = defaultdict(list)
        for row in rows:
            if row.kind == "queue":
                by_queue[row.destination].append(
                    OutgoingMessage(row.id, row.body, row.delay_seconds)
                )
            elif row.kind == "file":
                write_file(row)
        if by_queue:
            if self.transport is None:
                raise RuntimeError("outbox holds queue messages but the app has no transport")
            for queue, messages in by_queue.items():
                await self.transport.send_batch(queue, messages)
        await self.mark_sent([r for r in rows])

    async def mark_sent(self, rows: Sequence[OutboxRow]) -> None:
        if self.db is None or not rows:
            return
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for r in rows:
            by_tenant[r.tenant_id].append(r.id)
        now = datetime.now(UTC)
        dialect = self.db.dialect
        for tenant, ids in by_tenant.items():
            # By primary key only: SQLite's planner turns `tenant_id = ? AND id IN (...)` into a
            # scan of the tenant's rows. Ids derive from the tenant, and RLS scopes PostgreSQL.
            async with self.db.transaction(tenant_id=tenant) as conn:
                sent_at = bind_value(conn.dialect, outbox, "sent_at", now)
                sql = f"UPDATE apix_outbox SET sent_at = {param(dialect, 1)}, body = NULL WHERE "
                sql += any_of(dialect, "id", len(ids), first=2)
                params = (sent_at, *any_params(dialect, ids))
                raw = sqlite_writer(conn)
                if raw is not None:
                    run_sqlite(raw, sql, params)
                else:
                    await conn.exec_driver_sql(sql, params)


#: The placeholders a ``file_pattern`` may use (plain ``{name}``: no conversion or format spec).
FILE_PATTERN_FIELDS = frozenset({"message_id", "tenant_id", "processor", "timestamp", "date"})


def file_name(row: OutboxRow) -> str:
    """The file name of a file output row, relative to its destination directory.

    Raises :class:`~apix_core.exceptions.InvalidFilePatternError` for a ``file_pattern`` that is
    not a format string of the known placeholders (:data:`FILE_PATTERN_FIELDS`).
    """
    cfg = row.config or {}
    pattern = cfg.get("file_pattern", "{message_id}.json")
    if not isinstance(pattern, str) or not pattern:
        raise InvalidFilePatternError(f"file_pattern must be a non-empty string, not {pattern!r}")
    try:
        fields = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise InvalidFilePatternError(f"file_pattern {pattern!r} is not valid: {exc}") from None
    for _, field, spec, conversion in fields:
        if field is None:
            continue
        if field not in FILE_PATTERN_FIELDS:
            raise InvalidFilePatternError(
                f"file_pattern {pattern!r}: unknown placeholder {{{field}}}; use "
                + ", ".join(f"{{{f}}}" for f in sorted(FILE_PATTERN_FIELDS))
            )
        if spec or conversion:
            raise InvalidFilePatternError(
                f"file_pattern {pattern!r}: write {{{field}}} without a conversion or format spec"
            )
    name = pattern.format(
        message_id=row.id,
        tenant_id=row.tenant_id,
        processor=row.processor,
        timestamp=row.created_at.strftime("%Y%m%dT%H%M%S%fZ"),
        date=row.created_at.strftime("%Y-%m-%d"),
    )
    if cfg.get("compress") and not name.endswith(".gz"):
        name += ".gz"
    return name


def check_file_name(row: OutboxRow) -> Path:
    """The absolute path a file output row writes to, checked to stay inside its destination.

    Call it when building a file row: a bad row then fails its message (a validation error,
    dead-lettered) instead of failing every dispatch. Raises
    :class:`~apix_core.exceptions.InvalidFilePatternError` (see :func:`file_name`) or
    :class:`~apix_core.exceptions.UnsafeFilePathError` when the resolved path (``..``, an
    absolute pattern, a symlink) is not strictly inside the resolved destination directory.
    Both are :class:`~apix_core.exceptions.FileOutputError`, a ``ValidationError``.
    """
    name = file_name(row)
    if "\0" in name or "\0" in row.destination:
        raise UnsafeFilePathError(f"file output path of {row.id!r} contains a NUL character")
    base = Path(row.destination).resolve()
    # Resolving (not just joining) catches '..', absolute names and symlinks out of the base.
    target = (base / name).resolve()
    if target == base or not target.is_relative_to(base):
        raise UnsafeFilePathError(
            f"file output {name!r} resolves to {str(target)!r}, outside {str(base)!r}"
        )
    return target


def write_file(row: OutboxRow) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half a file.

    The target is checked by :func:`check_file_name` first.
    """
    target = check_file_name(row)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = row.body.encode("utf-8")
    if (row.config or {}).get("compress"):
        data = gzip.compress(data, mtime=0)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".apix-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
