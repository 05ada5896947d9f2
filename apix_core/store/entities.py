"""Entity metadata: the read model and the write path with versioning and duplicate detection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from apix_core.store.models import entities, entity_versions, state_transitions
from apix_core.store.pg import WriteBundle, driver
from apix_core.store.sql import any_of, insert_many, run_sqlite, sqlite_writer
from apix_core.store.types import (
    INITIAL_STATE,
    EntityWriteBatch,
    EntityWriteResult,
    PendingEntity,
    PendingTransition,
)


@dataclass
class EntityPlan:
    """Rows to write for a sequence of write batches, and each batch's results."""

    new_rows: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, EntityWriteResult]] = field(default_factory=list)


def entity_ids(batches: Iterable[EntityWriteBatch]) -> set[str]:
    ids: set[str] = set()
    for b in batches:
        ids.update(p.id for p in b.entities)
        ids.update(t.entity_id for t in b.transitions)
    return ids


async def load_current(
    conn: AsyncConnection, tenant_id: str, ids: set[str], *, lock_rows: bool
) -> dict[str, dict[str, Any]]:
    """Version, hash and state of existing entities (locked ``FOR UPDATE`` on PostgreSQL)."""
    if not ids:
        return {}
    # By id only, the key's leading column (the key is (id, tenant_id), migration 0005), the
    # tenant filtered here: with `tenant_id = ? AND id IN (...)` both planners may pick the
    # tenant's natural-key index (PostgreSQL does under a generic plan made while statistics
    # were stale) and walk every entity of the tenant. Entity ids derive from the tenant, and
    # on PostgreSQL row-level security hides other tenants' rows anyway.
    if conn.dialect.name == "postgresql":
        # Sorted ids: concurrent transactions lock shared rows in one order (no deadlock).
        rows = await driver(conn).fetch(
            "SELECT id, tenant_id, version, content_hash, state FROM apix_entities "
            "WHERE id = ANY($1::text[]) ORDER BY id" + (" FOR UPDATE" if lock_rows else ""),
            sorted(ids),
        )
        return {
            r[0]: {"version": r[2], "content_hash": r[3], "state": r[4]}
            for r in rows
            if r[1] == tenant_id
        }
    raw = sqlite_writer(conn)
    if raw is not None:
        # SQLAlchemy's expanding IN cost more than the lookup itself on the hot path.
        found = run_sqlite(
            raw,
            "SELECT id, tenant_id, version, content_hash, state FROM apix_entities WHERE "
            + any_of("sqlite", "id", len(ids)),
            list(ids),
        ).fetchall()
        return {
            r[0]: {"version": r[2], "content_hash": r[3], "state": r[4]}
            for r in found
            if r[1] == tenant_id
        }
    stmt = sa.select(
        entities.c.id,
        entities.c.tenant_id,
        entities.c.version,
        entities.c.content_hash,
        entities.c.state,
    ).where(entities.c.id.in_(ids))
    if lock_rows:
        stmt = stmt.with_for_update()
    return {
        r.id: {"version": r.version, "content_hash": r.content_hash, "state": r.state}
        for r in (await conn.execute(stmt)).all()
        if r.tenant_id == tenant_id
    }


def plan_entity_writes(
    tenant_id: str,
    batches: Sequence[EntityWriteBatch],
    current: dict[str, dict[str, Any]],
    *,
    duplicate_detection: bool,
    state_tracking: bool,
) -> EntityPlan:
    """Compute, in order, the rows that apply ``batches`` on top of ``current`` (not mutated).

    A write whose content hash equals the current version's is a duplicate (no new version)
    when duplicate detection is on. Pure: the handler re-plans when a message drops out.
    """
    state = {k: dict(v) for k, v in current.items()}
    plan = EntityPlan()
    now = datetime.now(UTC)
    for batch in batches:
        results: dict[str, EntityWriteResult] = {}
        for p in batch.entities:
            cur = state.get(p.id)
            if cur is None:
                initial = p.state or INITIAL_STATE
                plan.new_rows.append(
                    {
                        "id": p.id,
                        "tenant_id": tenant_id,
                        "external_id": p.external_id,
                        "canonical_type": p.canonical_type,
                        "source": p.source,
                        "version": 1,
                        "content_hash": p.content_hash,
                        "attributes": p.attributes,
                        "state": initial,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                state[p.id] = {"version": 1, "content_hash": p.content_hash, "state": initial}
                results[p.id] = EntityWriteResult(p.id, 1, created=True, duplicate=False)
                plan.versions.append(_version_row(tenant_id, p, 1, now))
                if state_tracking:
                    plan.transitions.append(
                        _transition_row(tenant_id, p.id, None, initial, p, "created", now)
                    )
                continue
            if duplicate_detection and cur["content_hash"] == p.content_hash:
                results[p.id] = EntityWriteResult(
                    p.id, cur["version"], created=False, duplicate=True
                )
                if p.state and p.state != cur["state"]:
                    _plan_state(
                        plan, cur, p.id, p.state, "state", p, tenant_id, now, state_tracking
                    )
                continue
            version = cur["version"] + 1
            new_state = p.state or cur["state"]
            if state_tracking and new_state != cur["state"]:
                plan.transitions.append(
                    _transition_row(tenant_id, p.id, cur["state"], new_state, p, "updated", now)
                )
            cur.update(version=version, content_hash=p.content_hash, state=new_state)
            plan.updates.append(
                {
                    "b_id": p.id,
                    "version": version,
                    "content_hash": p.content_hash,
                    "attributes": p.attributes,
                    "state": new_state,
                    "updated_at": now,
                }
            )
            plan.versions.append(_version_row(tenant_id, p, version, now))
            results[p.id] = EntityWriteResult(p.id, version, created=False, duplicate=False)
        for t in batch.transitions:
            cur = state.get(t.entity_id)
            if cur is None or cur["state"] == t.to_state:
                continue
            _plan_state(
                plan, cur, t.entity_id, t.to_state, t.reason, t, tenant_id, now, state_tracking
            )
        plan.results.append(results)
    return plan


_ENTITY_COLUMNS = (
    "id",
    "tenant_id",
    "external_id",
    "canonical_type",
    "source",
    "version",
    "content_hash",
    "attributes",
    "state",
    "created_at",
    "updated_at",
)
_VERSION_COLUMNS = (
    "tenant_id",
    "entity_id",
    "version",
    "content_hash",
    "attributes",
    "processor",
    "message_id",
    "created_at",
)
_TRANSITION_COLUMNS = (
    "tenant_id",
    "entity_id",
    "message_id",
    "processor",
    "from_state",
    "to_state",
    "reason",
    "created_at",
)


def _tuples(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    if len(columns) == 1:
        return [(r[columns[0]],) for r in rows]
    get = itemgetter(*columns)  # with several keys it returns the tuple
    return [get(r) for r in rows]


async def execute_plan(
    conn: AsyncConnection, tenant_id: str, plan: EntityPlan, bundle: WriteBundle | None = None
) -> None:
    """Write ``plan`` on ``conn``, or add it to a PostgreSQL write ``bundle``."""
    if bundle is None:
        await insert_many(conn, entities, _ENTITY_COLUMNS, _tuples(plan.new_rows, _ENTITY_COLUMNS))
        if plan.updates:
            await _apply_updates(conn, tenant_id, plan.updates)
    else:
        _bundle_entities(bundle, tenant_id, plan)
    await insert_many(
        conn,
        entity_versions,
        _VERSION_COLUMNS,
        _tuples(plan.versions, _VERSION_COLUMNS),
        bundle=bundle,
    )
    await insert_many(
        conn,
        state_transitions,
        _TRANSITION_COLUMNS,
        _tuples(plan.transitions, _TRANSITION_COLUMNS),
        bundle=bundle,
    )


def _bundle_entities(bundle: WriteBundle, tenant_id: str, plan: EntityPlan) -> None:
    """The plan's entity rows as a bundle takes them.

    The bundle's statements share one snapshot, so each entity row is touched once: updates of
    an entity created in the same plan fold into its insert, and successive updates of one
    entity collapse into the last values.
    """
    created: dict[str, dict[str, Any]] = {r["id"]: r for r in plan.new_rows}
    updated: dict[str, dict[str, Any]] = {}
    copied: set[str] = set()  # the plan's rows stay as they are: copy before folding into one
    for u in plan.updates:
        values = {k: v for k, v in u.items() if k != "b_id"}
        entity_id = u["b_id"]
        if entity_id in created:
            if entity_id not in copied:
                created[entity_id] = dict(created[entity_id])
                copied.add(entity_id)
            created[entity_id].update(values)
        else:
            updated.setdefault(entity_id, {}).update(values)
    bundle.insert(entities, _ENTITY_COLUMNS, _tuples(list(created.values()), _ENTITY_COLUMNS))
    bundle.update_entities(
        tenant_id,
        [
            (
                entity_id,
                u.get("version"),
                u.get("content_hash"),
                u.get("attributes"),
                u.get("state"),
                u["updated_at"],
            )
            for entity_id, u in updated.items()
        ],
    )


async def apply_entity_writes(
    conn: AsyncConnection,
    tenant_id: str,
    batch: EntityWriteBatch,
    *,
    duplicate_detection: bool,
    state_tracking: bool,
    lock_rows: bool,
) -> dict[str, EntityWriteResult]:
    """Load, plan and write one batch at once (read-your-writes and failure transitions)."""
    current = await load_current(conn, tenant_id, entity_ids([batch]), lock_rows=lock_rows)
    plan = plan_entity_writes(
        tenant_id,
        [batch],
        current,
        duplicate_detection=duplicate_detection,
        state_tracking=state_tracking,
    )
    await execute_plan(conn, tenant_id, plan)
    return plan.results[0]


def _plan_state(
    plan: EntityPlan,
    cur: dict[str, Any],
    entity_id: str,
    to_state: str,
    reason: str | None,
    origin: PendingEntity | PendingTransition,
    tenant_id: str,
    now: datetime,
    state_tracking: bool,
) -> None:
    if state_tracking:
        plan.transitions.append(
            _transition_row(tenant_id, entity_id, cur["state"], to_state, origin, reason, now)
        )
    cur["state"] = to_state
    plan.updates.append({"b_id": entity_id, "state": to_state, "updated_at": now})


async def _apply_updates(
    conn: AsyncConnection, tenant_id: str, updates: list[dict[str, Any]]
) -> None:
    # Group by the set of columns so each group is one executemany.
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for u in updates:
        groups.setdefault(tuple(sorted(u)), []).append(u)
    for keys, rows in groups.items():
        values: dict[str, Any] = {k: sa.bindparam(k) for k in keys if k != "b_id"}
        stmt = (
            sa.update(entities)
            .where(entities.c.tenant_id == tenant_id, entities.c.id == sa.bindparam("b_id"))
            .values(**values)
        )
        await conn.execute(stmt, rows)


def _version_row(tenant_id: str, p: PendingEntity, version: int, now: datetime) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "entity_id": p.id,
        "version": version,
        "content_hash": p.content_hash,
        "attributes": p.attributes,
        "processor": p.processor,
        "message_id": p.message_id,
        "created_at": now,
    }


def _transition_row(
    tenant_id: str,
    entity_id: str,
    from_state: str | None,
    to_state: str,
    origin: PendingEntity | PendingTransition,
    reason: str | None,
    now: datetime,
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "entity_id": entity_id,
        "message_id": origin.message_id,
        "processor": origin.processor,
        "from_state": from_state,
        "to_state": to_state,
        "reason": reason,
        "created_at": now,
    }
