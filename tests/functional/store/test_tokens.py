"""Coordinated API tokens: one refresh across processes, encrypted at rest, failures not cached."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from apix_core import tenant_context
from apix_core.errors import ConfigurationError
from apix_core.store.database import Database
from apix_core.store.models import api_tokens
from apix_core.tokens import ApiTokenService, TokenRefreshError, oauth2_client_credentials

KEY = Fernet.generate_key().decode()


def _service(db: Database, server, *, http_timeout: float = 5.0, **kwargs) -> ApiTokenService:
    fetch = oauth2_client_credentials(server.url, "client", "s3cret", timeout=http_timeout)
    return ApiTokenService(db, fetch_token=fetch, encryption_key=KEY, **kwargs)


async def _seed(db: Database, token: str, *, expires_in: float, lifetime: float = 3600.0) -> str:
    """Store ``token`` for acme/crm as if fetched ``lifetime - expires_in`` seconds ago."""
    now = datetime.now(UTC)
    token_id = str(uuid.uuid4())
    async with db.transaction(tenant_id="acme") as conn:
        await conn.execute(
            sa.insert(api_tokens).values(
                tenant_id="acme",
                operation="crm",
                token_id=token_id,
                token_ciphertext=Fernet(KEY).encrypt(token.encode()).decode(),
                expires_at=now + timedelta(seconds=expires_in),
                refreshed_at=now + timedelta(seconds=expires_in - lifetime),
                updated_at=now,
            )
        )
    return token_id


#: Stored state before the race: (seeded token's expires_in, endpoint's expires_in).


async def test_plaintext_token_is_not_stored(db: Database, token_server, database_url: str) -> None:
    # GIVEN a service that fetched a token
    service = _service(db, token_server)
    with tenant_context("acme"):
        token, token_id = await service.get_valid_token("crm")
    assert token == "tok-secret-1-plaintext"

    # WHEN the table (and, on SQLite, the database files) are read raw
    async with db.transaction(tenant_id="acme", write=False) as conn:
        rows = (await conn.execute(sa.text("SELECT * FROM apix_api_tokens"))).all()
    raw = b""
    if db.is_sqlite:
        path = Path(database_url.split("///", 1)[1])
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))

    # THEN only ciphertext is there, and it decrypts with the key to the token
    assert len(rows) == 1
    assert token not in repr(rows)
    assert token.encode() not in raw
    row = rows[0]._mapping
    assert row["token_id"] == token_id
    assert Fernet(KEY).decrypt(row["token_ciphertext"].encode()).decode() == token


async def test_valid_token_is_reused_without_calling_the_endpoint(
    db: Database, token_server
) -> None:
    # GIVEN one instance that fetched a token
    with tenant_context("acme"):
        first = await _service(db, token_server).get_valid_token("crm")

        # WHEN a second instance (fresh process memory) asks for it
        second = await _service(db, token_server).get_valid_token("crm")

    # THEN it reads the stored token instead of fetching
    assert second == first
    assert token_server.requests == 1


async def test_tokens_are_per_tenant_and_operation(db: Database, token_server) -> None:
    # GIVEN one service
    service = _service(db, token_server)

    # WHEN two tenants and two operations ask
    with tenant_context("acme"):
        a_crm = await service.get_valid_token("crm")
        a_erp = await service.get_valid_token("erp")
    with tenant_context("globex"):
        b_crm = await service.get_valid_token("crm")

    # THEN each pair got its own token
    assert len({a_crm[0], a_erp[0], b_crm[0]}) == 3
    assert token_server.requests == 3


async def test_long_lived_token_within_skew_of_expiry_is_renewed(
    db: Database, token_server
) -> None:
    # GIVEN a one-hour token that expires in 30 s, inside the 60 s skew
    await _seed(db, "tok-old", expires_in=30)
    service = _service(db, token_server, skew=60)
    with tenant_context("acme"):
        # WHEN asked for, twice
        first, _ = await service.get_valid_token("crm")
        second, _ = await service.get_valid_token("crm")

    # THEN it was renewed once, then reused
    assert first == second == "tok-secret-1-plaintext"
    assert token_server.requests == 1


async def test_short_lived_token_is_reused_until_half_its_lifetime(
    db: Database, token_server
) -> None:
    # GIVEN tokens that live 1 s, far less than the 60 s skew
    token_server.expires_in = 1.0
    token_server.delay = 0.0
    service = _service(db, token_server, skew=60)
    with tenant_context("acme"):
        first, _ = await service.get_valid_token("crm")

        # WHEN asked again at once, and from a second instance
        again, _ = await service.get_valid_token("crm")
        other, _ = await _service(db, token_server, skew=60).get_valid_token("crm")
        # THEN the token is reused, not renewed on every call
        assert first == again == other
        assert token_server.requests == 1

        # AND once half its lifetime has passed it is renewed (once)
        await asyncio.sleep(0.6)
        renewed, _ = await service.get_valid_token("crm")
        assert renewed != first
        assert await service.get_valid_token("crm") == (renewed, _)
    assert token_server.requests == 2


async def test_failed_refresh_is_cached_briefly_then_retried(db: Database, token_server) -> None:
    # GIVEN an endpoint that fails once
    token_server.fail_next = 1
    service = _service(db, token_server, failure_backoff=0.5)

    with tenant_context("acme"):
        # WHEN the first call fails
        with pytest.raises(TokenRefreshError):
            await service.get_valid_token("crm")
        # THEN a second instance asking right away does not hit the endpoint again
        with pytest.raises(TokenRefreshError, match="failed recently"):
            await _service(db, token_server).get_valid_token("crm")
        assert token_server.requests == 1

        # AND after the back-off the refresh is retried and succeeds
        await asyncio.sleep(0.6)
        token, _ = await service.get_valid_token("crm")

    assert token == "tok-secret-2-plaintext"
    async with db.transaction(tenant_id="acme", write=False) as conn:
        query = sa.text("SELECT last_error, failed_until FROM apix_api_tokens")
        row = (await conn.execute(query)).one()
    assert row.last_error is None and row.failed_until is None


@pytest.mark.parametrize("seeded", ["expired", "expiring-within-skew"])
async def test_waiter_behind_a_slow_refresh_gets_a_typed_error_or_the_current_token(
    db: Database, database_url: str, token_server, seeded: str
) -> None:
    # GIVEN a stored token that needs renewal, and an instance renewing it against an
    # endpoint that takes 1.5 s (holding the row lock meanwhile)
    current_id = await _seed(db, "tok-old", expires_in=-10 if seeded == "expired" else 30)
    token_server.delay = 1.5
    holder = _service(db, token_server)
    waiter_db = Database(database_url, timeout=0.4)
    waiter = _service(waiter_db, token_server)
    try:
        with tenant_context("acme"):
            renewal = asyncio.create_task(holder.get_valid_token("crm"))
            while token_server.requests == 0:
                await asyncio.sleep(0.01)

            # WHEN an instance whose lock wait (its database timeout, 0.4 s) is shorter asks
            if seeded == "expired":
                # THEN it gets the library's typed error, not the driver's lock timeout
                with pytest.raises(TokenRefreshError, match="gave up waiting") as caught:
                    await waiter.get_valid_token("crm")
                assert isinstance(caught.value.__cause__, sa.exc.DBAPIError)
            else:
                # THEN (the current token is still valid) it gets the current token
                assert await waiter.get_valid_token("crm") == ("tok-old", current_id)
            assert await renewal == ("tok-secret-1-plaintext", renewal.result()[1])
    finally:
        await waiter_db.dispose()
    assert token_server.requests == 1


async def test_refresh_gives_up_before_the_waiters_lock_wait(
    database_url: str, db: Database, token_server
) -> None:
    # GIVEN two instances with a 1 s database timeout (so a 0.5 s refresh timeout), and an
    # endpoint that takes 1.5 s
    token_server.delay = 1.5
    dbs = [Database(database_url, timeout=1.0) for _ in range(2)]
    first, second = (_service(d, token_server) for d in dbs)
    assert first.refresh_timeout == 0.5
    try:
        with tenant_context("acme"):
            # WHEN both ask for a token at about the same time
            ask_first = asyncio.create_task(first.get_valid_token("crm"))
            while token_server.requests == 0:
                await asyncio.sleep(0.01)
            ask_second = asyncio.create_task(second.get_valid_token("crm"))
            outcomes = await asyncio.gather(ask_first, ask_second, return_exceptions=True)
    finally:
        for d in dbs:
            await d.dispose()

    # THEN the refresher abandons the call within its refresh timeout and records the failure,
    # and the waiter (never reaching its lock wait) sees that failure: both typed errors
    assert isinstance(outcomes[0], TokenRefreshError), outcomes[0]
    assert "did not answer within 0.5s" in str(outcomes[0])
    assert isinstance(outcomes[1], TokenRefreshError), outcomes[1]
    assert "failed recently" in str(outcomes[1])
    assert token_server.requests == 1


async def test_failed_renewal_of_an_unexpired_token_returns_the_current_token(
    db: Database, token_server
) -> None:
    # GIVEN a one-hour token inside its renewal window (expires in 30 s) and an endpoint
    # answering 500
    current_id = await _seed(db, "tok-old", expires_in=30)
    token_server.fail_next = 2
    token_server.fail_status = 500
    with tenant_context("acme"):
        # WHEN it is asked for
        got = await _service(db, token_server).get_valid_token("crm")
        # THEN the current token is returned instead of an error
        assert got == ("tok-old", current_id)
        # AND the failure is recorded, so another instance does not call the endpoint again
        assert await _service(db, token_server).get_valid_token("crm") == got
    assert token_server.requests == 1
    async with db.transaction(tenant_id="acme", write=False) as conn:
        query = sa.text("SELECT last_error, failed_until FROM apix_api_tokens")
        row = (await conn.execute(query)).one()
    assert "500" in row.last_error and row.failed_until is not None


async def test_failed_renewal_of_an_expired_token_raises(db: Database, token_server) -> None:
    # GIVEN an expired token and an endpoint answering 500
    await _seed(db, "tok-old", expires_in=-1)
    token_server.fail_next = 1
    token_server.fail_status = 500

    # WHEN/THEN the expired token is not handed out
    with tenant_context("acme"), pytest.raises(TokenRefreshError, match="500"):
        await _service(db, token_server).get_valid_token("crm")


async def test_refresh_timeout_must_be_below_the_database_timeout(
    db: Database, token_server
) -> None:
    # GIVEN/WHEN a refresh timeout as long as the lock wait of the other callers
    # THEN the service refuses it
    with pytest.raises(ConfigurationError, match="less than the database timeout"):
        _service(db, token_server, refresh_timeout=db.timeout)
    # AND the default is half the database timeout
    assert _service(db, token_server).refresh_timeout == db.timeout / 2


async def test_service_requires_an_encryption_key(db: Database) -> None:
    # GIVEN no APIX_TOKEN_KEY and no key argument
    async def fetch() -> tuple[str, float]:
        return "x", 60

    # WHEN/THEN constructing the service fails clearly
    with pytest.raises(ConfigurationError, match="APIX_TOKEN_KEY"):
        ApiTokenService(db, fetch_token=fetch)
