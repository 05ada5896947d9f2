"""Retention: expired metadata goes in bounded batches; live rows (pending effects) stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from apix_core import App, Message, ProcessorContext
from apix_core.errors import ConfigurationError
from apix_core.processing import OutcomeKind
from apix_core.store.database import Database
from apix_core.store.models import (
    dead_letters,
    idempotency,
    outbox,
    processing_errors,
    state_transitions,
)
from apix_core.store.retention import RetentionPolicy, prune
from apix_core.transport.base import ReceivedMessage

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=30)
RECENT = NOW - timedelta(days=1)
TENANTS = ("acme", "globex")


def _outbox_row(tenant: str, row_id: str, source: str, *, created, sent) -> dict:
    return {
        "id": f"{tenant}-{row_id}",
        "tenant_id": tenant,
        "processor": "p",
        "source_message_id": source,
        "seq": 0,
        "kind": "queue",
        "destination": "q",
        "body": None if sent else "{}",
        "delay_seconds": 0.0,
        "created_at": created,
        "sent_at": sent,
    }


async def _seed(db: Database, admin: Database) -> None:
    """Per tenant: rows that must go (old-*) and rows that must stay (keep-*). Dead letters of
    several tenants are written by ``admin`` (the superuser on PostgreSQL: no tenant policy)."""
    for tenant in TENANTS:
        async with db.transaction(tenant_id=tenant) as conn:
            idem = [
                *[(f"old-{n}", OLD, None) for n in range(5)],
                ("keep-recent", RECENT, None),
                ("old-expired", RECENT, NOW - timedelta(minutes=1)),
                ("keep-not-yet-expired", OLD, NOW + timedelta(days=1)),
                ("keep-pending-outbox", OLD, None),
            ]
            await conn.execute(
                sa.insert(idempotency),
                [
                    {
                        "tenant_id": tenant,
                        "processor": "p",
                        "message_id": m,
                        "status": "completed",
                        "created_at": c,
                        "expires_at": e,
                    }
                    for m, c, e in idem
                ],
            )
            await conn.execute(
                sa.insert(outbox),
                [
                    _outbox_row(tenant, "old-sent", "old-0", created=OLD, sent=OLD),
                    _outbox_row(tenant, "keep-sent-recently", "x", created=OLD, sent=RECENT),
                    _outbox_row(
                        tenant, "keep-unsent", "keep-pending-outbox", created=OLD, sent=None
                    ),
                ],
            )
            await conn.execute(
                sa.insert(state_transitions),
                [
                    {"tenant_id": tenant, "to_state": s, "created_at": c}
                    for s, c in (("old", OLD), ("old", OLD), ("keep", RECENT))
                ],
            )
            await conn.execute(
                sa.insert(processing_errors),
                [
                    {
                        "tenant_id": tenant,
                        "processor": "p",
                        "error_code": s,
                        "category": "x",
                        "error_message": "e",
                        "attempt": 1,
                        "final": True,
                        "created_at": c,
                    }
                    for s, c in (("old", OLD), ("keep", RECENT))
                ],
            )
    async with admin.transaction() as conn:
        await conn.execute(
            sa.insert(dead_letters),
            [
                {
                    "queue": "q",
                    "message_id": m,
                    "tenant_id": "acme",
                    "body": "{}",
                    "attributes": {},
                    "error_code": "E",
                    "error_category": "validation",
                    "error_message": "e",
                    "processor": "p",
                    "attempts": 1,
                    "created_at": OLD,
                    "replayed_at": r,
                }
                for m, r in (
                    ("old-replayed", OLD),
                    ("keep-never-replayed", None),
                    ("keep-replayed-recently", RECENT),
                )
            ],
        )


async def _remaining(admin: Database, table: sa.Table, column: str) -> list[str]:
    """Every tenant's rows (read by the superuser on PostgreSQL)."""
    async with admin.transaction(maintenance=True, write=False) as conn:
        rows = (await conn.execute(sa.select(table.c[column]))).scalars().all()
    return sorted(str(r) for r in rows)


async def test_prune_removes_expired_rows_and_keeps_live_ones(
    db: Database, admin_db: Database
) -> None:
    # GIVEN old and live metadata of two tenants
    await _seed(db, admin_db)

    # WHEN pruning anything older than 20 days, two rows per batch
    report = await prune(db, older_than=timedelta(days=20), batch_size=2)

    # THEN only expired rows went, across tenants, and pending effects stayed
    assert report.deleted == {
        "idempotency": 12,
        "sent_outbox": 2,
        "state_transitions": 4,
        "processing_errors": 2,
        "replayed_dead_letters": 1,
    }
    per_tenant = ["keep-not-yet-expired", "keep-pending-outbox", "keep-recent"]
    assert await _remaining(admin_db, idempotency, "message_id") == sorted(per_tenant * 2)
    assert await _remaining(admin_db, outbox, "id") == sorted(
        f"{t}-{r}" for t in TENANTS for r in ("keep-sent-recently", "keep-unsent")
    )
    assert await _remaining(admin_db, state_transitions, "to_state") == ["keep", "keep"]
    assert await _remaining(admin_db, processing_errors, "error_code") == ["keep", "keep"]
    assert await _remaining(admin_db, dead_letters, "message_id") == [
        "keep-never-replayed",
        "keep-replayed-recently",
    ]

    # AND a second run finds nothing more to do
    assert (await prune(db, older_than=timedelta(days=20))).total == 0


async def test_policy_keeps_categories_and_overrides_ages(db: Database, admin_db: Database) -> None:
    # GIVEN old and live metadata
    await _seed(db, admin_db)

    # WHEN transitions are kept, idempotency is left alone, and errors use a longer age
    policy = RetentionPolicy(
        state_transitions=False, idempotency=False, processing_errors=timedelta(days=60)
    )
    report = await prune(db, older_than=timedelta(days=20), policy=policy)

    # THEN only the enabled categories lost rows
    assert report.deleted == {"sent_outbox": 2, "processing_errors": 0, "replayed_dead_letters": 1}
    assert len(await _remaining(admin_db, state_transitions, "to_state")) == 6
    assert len(await _remaining(admin_db, idempotency, "message_id")) == 18


async def test_idempotency_age_below_the_redelivery_window_is_refused(
    db: Database, admin_db: Database
) -> None:
    # GIVEN/WHEN a prune that would drop idempotency records of possibly live messages
    # THEN it is refused before deleting anything
    await _seed(db, admin_db)
    with pytest.raises(ConfigurationError, match="redelivery"):
        await prune(db, older_than=timedelta(days=1))
    assert len(await _remaining(admin_db, idempotency, "message_id")) == 18


async def test_redelivery_after_prune_is_still_a_duplicate(make_app) -> None:
    # GIVEN a processed message whose output was sent
    app: App = make_app("keep", tenant_id="acme")
    calls: list[str] = []

    @app.processor("ingest", consumes="in", produces=["out"])
    async def ingest(message: Message, ctx: ProcessorContext) -> dict:
        calls.append(message.message_id)
        return {"n": 1}

    await app.start()
    msg = Message(message_id="m-1", tenant_id="acme", payload={"n": 1})
    delivery = ReceivedMessage(
        queue="in",
        message_id="m-1",
        body=msg.to_json(),
        receipt="",
        receive_count=1,
        attributes={"tenant_id": "acme"},
    )
    first = await app.handler("ingest").handle_batch([delivery])

    # WHEN retention runs with the shortest allowed idempotency age, and the input is redelivered
    report = await prune(app.store.db, older_than=timedelta(days=14))
    again = await app.handler("ingest").handle_batch([delivery])

    # THEN nothing live was pruned and the redelivery is recognised as a duplicate
    assert report.total == 0
    assert [o.kind for o in first + again] == [OutcomeKind.COMPLETED, OutcomeKind.DUPLICATE]
    assert calls == ["m-1"]
