"""A processor refreshes an API token inside its processing transaction (no deadlock on SQLite)."""

from __future__ import annotations

import asyncio
from typing import Any

from cryptography.fernet import Fernet

from apix_core import App, Message, OutcomeKind, tenant_context
from apix_core.tokens import ApiTokenService, oauth2_client_credentials


async def test_processor_gets_a_valid_token_from_the_apps_store(
    make_app: Any, token_server: Any
) -> None:
    # GIVEN a processor that calls ApiTokenService on the app's own database (a real endpoint)
    app: App = make_app("tokens", tenant_id="acme")
    tokens: list[str] = []
    services: list[ApiTokenService] = []

    @app.processor("call", consumes="in")
    async def call(message: Message) -> None:
        token, _ = await services[0].get_valid_token("crm")
        tokens.append(token)

    await app.start()
    assert app.store is not None
    fetch = oauth2_client_credentials(token_server.url, "client", "s3cret", timeout=5.0)
    services.append(
        ApiTokenService(app.store.db, fetch_token=fetch, encryption_key=Fernet.generate_key())
    )
    await app.send("in", {"n": 1}, message_id="first")
    await app.send("in", {"n": 2}, message_id="second")

    # WHEN the messages are processed (each inside its processing transaction)
    deliveries = await app.consumer().receive("in", max_messages=10)
    outcomes = await asyncio.wait_for(app.process("in", deliveries), timeout=5.0)

    # THEN both complete within seconds, with one refresh, and the token row is committed
    assert [o.kind for o in outcomes] == [OutcomeKind.COMPLETED, OutcomeKind.COMPLETED]
    assert tokens == ["tok-secret-1-plaintext"] * 2
    assert token_server.requests == 1
    services[0]._cache.clear()  # a fresh process reads the stored row, no new refresh
    with tenant_context("acme"):
        token, _ = await asyncio.wait_for(services[0].get_valid_token("crm"), timeout=5.0)
    assert token == "tok-secret-1-plaintext" and token_server.requests == 1
