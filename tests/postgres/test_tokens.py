"""Coordinated API tokens: one refresh across processes, encrypted at rest, failures not cached."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from apix_core import tenant_context
from apix_core.store.database import Database
from apix_core.tokens import ApiTokenService, TokenRefreshError, oauth2_client_credentials

WORKER = Path(__file__).with_name("token_worker.py")
KEY = Fernet.generate_key().decode()


def _service(db: Database, server, **kwargs) -> ApiTokenService:
    fetch = oauth2_client_credentials(server.url, "client", "s3cret")
    return ApiTokenService(db, fetch_token=fetch, encryption_key=KEY, **kwargs)


@pytest.mark.slow
async def test_twenty_processes_asking_at_once_cause_exactly_one_refresh(
    db: Database, database_url: str, token_server, tmp_path: Path
) -> None:
    # GIVEN 20 processes ready to ask for the same tenant's token, and no token stored yet
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "20", database_url, KEY, token_server.url, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while len(list(tmp_path.glob("ready-*"))) < 20 and proc.poll() is None:
        await asyncio.sleep(0.01)

    # WHEN they all ask at once
    (tmp_path / "go").touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    results = [json.loads(line) for line in out.strip().splitlines()]
    assert len(results) == 20

    # THEN the endpoint saw one request and every process got that one token
    assert token_server.requests == 1
    assert {r["token"] for r in results} == {"tok-secret-1-plaintext"}
    assert len({r["token_id"] for r in results}) == 1
    assert sum(r["refreshes"] for r in results) == 1


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


async def test_token_close_to_expiry_is_refreshed(db: Database, token_server) -> None:
    # GIVEN a token that expires within the skew
    token_server.expires_in = 30
    service = _service(db, token_server, skew=60)
    with tenant_context("acme"):
        first, _ = await service.get_valid_token("crm")
        token_server.expires_in = 3600

        # WHEN asked again
        second, _ = await service.get_valid_token("crm")
        third, _ = await service.get_valid_token("crm")

    # THEN it was renewed once, then reused
    assert first != second == third
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


async def test_service_requires_an_encryption_key(db: Database) -> None:
    # GIVEN no APIX_TOKEN_KEY and no key argument
    from apix_core.exceptions import ConfigurationError

    async def fetch() -> tuple[str, float]:
        return "x", 60

    # WHEN/THEN constructing the service fails clearly
    with pytest.raises(ConfigurationError, match="APIX_TOKEN_KEY"):
        ApiTokenService(db, fetch_token=fetch)
