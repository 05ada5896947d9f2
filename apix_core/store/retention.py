"""Retention: delete metadata that has outlived its use, in bounded batches, never live rows.

What may go (each with its own age, see :class:`RetentionPolicy`):

* idempotency records that expired (``expires_at`` passed) or, without an expiry, are older than
  the idempotency age: that age must exceed the longest time a message can still be redelivered
  (queue retention + dead-letter replay window), or a late redelivery would be processed again.
  A record whose message still has unsent outbox rows is always kept: its redelivery must
  re-dispatch those rows rather than run the processor again;
* sent outbox rows (unsent rows are never pruned: they are pending effects);
* state transitions and processing errors (history);
* dead letters that were replayed (the replay is a fresh delivery; the record is history).

Never pruned, whatever the age: entities and their versions, unsent outbox rows, API tokens, and
per-tenant state (``apix_state``: watermarks, cursors, pagination positions, see
:mod:`apix_core.store.state`). State rows are live positions, not history: an old watermark is
the one the next incremental load starts from, and deleting it would silently turn that load
into a full one. Only the state API removes them (``delete``, ``StateRepository.reset``).

Every batch is its own short transaction. Retention spans all tenants: on PostgreSQL each batch
is one call of the SECURITY DEFINER function ``apix_prune`` (migration 0007), which deletes
history of one category and nothing else, past the tenant policies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from apix_core.errors import ConfigurationError
from apix_core.store.database import Database
from apix_core.store.models import (
    dead_letters,
    idempotency,
    outbox,
    processing_errors,
    state_transitions,
)
from apix_core.store.sql import PG_MAX_ROWS

#: Idempotency records younger than this are never pruned, whatever ``older_than`` says:
#: SQS keeps messages up to 14 days, so a redelivery can arrive that late.
MIN_IDEMPOTENCY_AGE = timedelta(days=14)


@dataclass(frozen=True)
class RetentionPolicy:
    """Per-category ages; ``None`` uses ``older_than`` of :func:`prune`, ``False`` keeps all."""

    idempotency: timedelta | bool | None = None
    sent_outbox: timedelta | bool | None = None
    state_transitions: timedelta | bool | None = None
    processing_errors: timedelta | bool | None = None
    replayed_dead_letters: timedelta | bool | None = None
    #: Lower bound for idempotency ages (lower it only if no message lives that long).
    min_idempotency_age: timedelta = MIN_IDEMPOTENCY_AGE


@dataclass
class PruneReport:
    """Rows deleted per category."""

    deleted: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def _age(value: timedelta | bool | None, default: timedelta) -> timedelta | None:
    if value is False:
        return None
    if value is None or value is True:
        return default
    return value


async def prune(
    db: Database,
    *,
    older_than: timedelta,
    batch_size: int = 1000,
    policy: RetentionPolicy | None = None,
    now: datetime | None = None,
) -> PruneReport:
    """Delete expired metadata of every tenant; returns counts per category."""
    if batch_size < 1:
        raise ConfigurationError("batch_size must be at least 1")
    if older_than < timedelta(0):
        raise ConfigurationError("older_than must not be negative")
    policy = policy or RetentionPolicy()
    now = now or datetime.now(UTC)
    report = PruneReport()

    age = _age(policy.idempotency, older_than)
    if age is not None:
        if age < policy.min_idempotency_age:
            raise ConfigurationError(
                f"idempotency records younger than {policy.min_idempotency_age} may still be "
                "needed by a redelivery; raise the age or lower "
                "RetentionPolicy.min_idempotency_age deliberately"
            )
        cutoff = now - age
        i, o = idempotency, outbox
        pending = (
            sa.select(sa.literal(1))
            .where(
                o.c.tenant_id == i.c.tenant_id,
                o.c.processor == i.c.processor,
                o.c.source_message_id == i.c.message_id,
                o.c.sent_at.is_(None),
            )
            .exists()
            .correlate(i)
        )
        expired = sa.or_(
            sa.and_(i.c.expires_at.is_not(None), i.c.expires_at < now),
            sa.and_(i.c.expires_at.is_(None), i.c.created_at < cutoff),
        )
        report.deleted["idempotency"] = await _delete_batches(
            db,
            ("idempotency", cutoff, now),
            idempotency,
            (i.c.tenant_id, i.c.processor, i.c.message_id),
            sa.and_(expired, ~pending),
            batch_size,
        )

    age = _age(policy.sent_outbox, older_than)
    if age is not None:
        report.deleted["sent_outbox"] = await _delete_batches(
            db,
            ("sent_outbox", now - age, now),
            outbox,
            (outbox.c.tenant_id, outbox.c.id),
            sa.and_(outbox.c.sent_at.is_not(None), outbox.c.sent_at < now - age),
            batch_size,
        )

    age = _age(policy.state_transitions, older_than)
    if age is not None:
        t = state_transitions
        report.deleted["state_transitions"] = await _delete_batches(
            db,
            ("state_transitions", now - age, now),
            t,
            (t.c.id,),
            t.c.created_at < now - age,
            batch_size,
        )

    age = _age(policy.processing_errors, older_than)
    if age is not None:
        e = processing_errors
        report.deleted["processing_errors"] = await _delete_batches(
            db,
            ("processing_errors", now - age, now),
            e,
            (e.c.id,),
            e.c.created_at < now - age,
            batch_size,
        )

    age = _age(policy.replayed_dead_letters, older_than)
    if age is not None:
        d = dead_letters
        report.deleted["replayed_dead_letters"] = await _delete_batches(
            db,
            ("replayed_dead_letters", now - age, now),
            d,
            (d.c.id,),
            sa.and_(d.c.replayed_at.is_not(None), d.c.replayed_at < now - age),
            batch_size,
        )
    return report


async def _delete_batches(
    db: Database,
    category: tuple[str, datetime, datetime],
    table: sa.Table,
    key: tuple[sa.ColumnElement[object], ...],
    condition: sa.ColumnElement[bool],
    batch_size: int,
) -> int:
    """Delete matching rows ``batch_size`` at a time, each batch in its own transaction.

    On PostgreSQL ``category`` (name, cutoff, now) names the same rows to ``apix_prune``, which
    holds this SQL's PostgreSQL twin (an application session passes no tenant policy)."""
    total = 0
    if db.is_postgres:
        name, cutoff, now = category
        batch = min(batch_size, PG_MAX_ROWS)
        while True:
            async with db.transaction(maintenance=True) as conn:
                deleted = int(
                    (
                        await conn.exec_driver_sql(
                            "SELECT apix_prune($1, $2, $3, $4)", (name, cutoff, now, batch)
                        )
                    ).scalar_one()
                )
            total += deleted
            if deleted < batch:
                return total
    while True:
        # correlate(None): the subquery reads the same table as the DELETE, on its own.
        chosen = sa.select(*key).where(condition).limit(batch_size).correlate(None)
        if db.is_postgres:
            # Rows locked by a running transaction are skipped, not waited for.
            chosen = chosen.with_for_update(skip_locked=True)
        if len(key) == 1:
            stmt = sa.delete(table).where(key[0].in_(chosen.scalar_subquery()))
        else:
            stmt = sa.delete(table).where(sa.tuple_(*key).in_(chosen))
        async with db.transaction(maintenance=True) as conn:
            deleted = (await conn.execute(stmt)).rowcount or 0
        total += deleted
        if deleted < batch_size:
            return total


__all__ = ["MIN_IDEMPOTENCY_AGE", "PruneReport", "RetentionPolicy", "prune"]
