"""Tenant isolation: no tenant, no read; tenant A never sees tenant B."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from apix_core import (
    App,
    Message,
    OutcomeKind,
    PermanentError,
    ProcessorContext,
    TenantRequiredError,
    tenant_context,
)
from apix_core.errors import EntityNotFoundError
from apix_core.store.repositories import Store


def _message(tenant: str, payload: dict[str, Any]) -> Message:
    return Message(message_id=str(uuid.uuid4()), tenant_id=tenant, payload=payload)


async def _two_tenant_app(make_app: Any) -> tuple[App, dict[str, str]]:
    """Tenants acme and globex each hold order o-1 (same external id), with history."""
    app: App = make_app("tenancy")
    ids: dict[str, str] = {}

    @app.processor("ingest", consumes="orders")
    async def ingest(message: Message, ctx: ProcessorContext) -> None:
        p = message.payload
        if p.get("fail"):
            raise PermanentError(f"rejected for {ctx.tenant_id}")
        entity_id = ctx.persist_entity("o-1", "order", "shop", p, owner=ctx.tenant_id)
        ctx.transition(entity_id, f"seen-by-{ctx.tenant_id}")
        ids[ctx.tenant_id] = entity_id

    await app.start()
    for tenant in ("acme", "globex"):
        for payload in ({"total": 1}, {"total": 2}, {"fail": True}):
            await app.handler("ingest").handle(_message(tenant, payload))
    return app, ids


def _repository_calls(store: Store) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "entities.get": lambda: store.entities.get("x"),
        "entities.find": lambda: store.entities.find("order", "shop", "o-1"),
        "entities.list": lambda: store.entities.list(),
        "entities.count": lambda: store.entities.count(),
        "entities.versions": lambda: store.entities.versions("x"),
        "states.transitions": lambda: store.states.transitions("x"),
        "errors.list": lambda: store.errors.list(),
        "errors.summarize": lambda: store.errors.summarize(),
        "idempotency.is_completed": lambda: store.idempotency.is_completed("ingest", "m"),
        "idempotency.pending_outbox": lambda: store.idempotency.pending_outbox(),
    }


async def test_every_repository_call_needs_a_tenant(make_app: Any) -> None:
    # GIVEN a started app with data
    app, _ = await _two_tenant_app(make_app)
    assert app.store is not None

    # WHEN any repository method is called outside tenant_context
    for name, call in _repository_calls(app.store).items():
        with pytest.raises(TenantRequiredError) as info:
            await call()
        # THEN the error says how to fix it
        assert "tenant_context" in str(info.value), name
        assert info.value.code == "TENANT_REQUIRED"


def test_tenant_context_rejects_an_empty_tenant() -> None:
    # GIVEN / WHEN an empty tenant id THEN the scope itself refuses it
    with pytest.raises(TenantRequiredError), tenant_context(""):
        pass


async def test_same_external_id_in_two_tenants_is_two_entities(make_app: Any) -> None:
    # GIVEN order o-1 ingested by acme and by globex
    app, ids = await _two_tenant_app(make_app)

    # WHEN each tenant looks it up by its natural key
    found = {}
    for tenant in ("acme", "globex"):
        with tenant_context(tenant):
            found[tenant] = await app.store.entities.find("order", "shop", "o-1")

    # THEN they are distinct entities, each with its own owner and history
    assert found["acme"] is not None and found["globex"] is not None
    assert found["acme"].id != found["globex"].id
    assert found["acme"].id == ids["acme"] and found["globex"].id == ids["globex"]
    assert found["acme"].attributes == {"owner": "acme"}
    assert found["globex"].attributes == {"owner": "globex"}


async def test_repositories_never_cross_tenants(make_app: Any) -> None:
    # GIVEN both tenants with entities, versions, transitions and errors
    app, ids = await _two_tenant_app(make_app)
    acme_id, globex_id = ids["acme"], ids["globex"]

    with tenant_context("acme"):
        # WHEN acme asks for globex's entity and its history
        with pytest.raises(EntityNotFoundError):
            await app.store.entities.get(globex_id)
        versions = await app.store.entities.versions(globex_id)
        transitions = await app.store.states.transitions(globex_id)
        listed = await app.store.entities.list()
        count = await app.store.entities.count()
        errors = await app.store.errors.list()
        summary = await app.store.errors.summarize()
        own_versions = await app.store.entities.versions(acme_id)
        own_transitions = await app.store.states.transitions(acme_id)

    # THEN it sees nothing of globex's, and all of its own
    assert versions == [] and transitions == []
    assert [e.id for e in listed] == [acme_id] and count == 1
    assert [e.error_message.split(" (at ")[0] for e in errors] == [
        "PermanentError: rejected for acme"
    ]
    assert sum(s.count for s in summary) == 1
    assert [v.version for v in own_versions] == [1, 2]
    assert [t.to_state for t in own_transitions] == ["received", "seen-by-acme"]


async def test_processor_cannot_read_another_tenants_entity(make_app: Any) -> None:
    # GIVEN globex's entity, and an acme processor that asks for it by id
    app, ids = await _two_tenant_app(make_app)
    looked_up: dict[str, Any] = {}

    @app.processor("peek", consumes="peek")
    async def peek(message: Message, ctx: ProcessorContext) -> None:
        target = message.payload["entity_id"]
        try:
            looked_up[target] = (await ctx.aget_entity(target)).tenant_id
        except EntityNotFoundError as exc:
            looked_up[target] = exc
            raise

    # WHEN acme's processor reads its own entity, then globex's
    own = await app.handler("peek").handle(_message("acme", {"entity_id": ids["acme"]}))
    other = await app.handler("peek").handle(_message("acme", {"entity_id": ids["globex"]}))

    # THEN its own is visible; the other tenant's does not exist for it
    assert own.kind is OutcomeKind.COMPLETED
    assert looked_up[ids["acme"]] == "acme"
    assert isinstance(looked_up[ids["globex"]], EntityNotFoundError)
    assert other.kind is OutcomeKind.DEAD_LETTER
    assert other.error is not None and other.error.code == "ENTITY_NOT_FOUND"
