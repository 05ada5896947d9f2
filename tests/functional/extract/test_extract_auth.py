"""Auth flows against the loopback API; OAuth2 through the core's coordinated token service."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from extract_api_server import ApiServer

from apix_core import tenant_context
from apix_core.constants import TOKEN_KEY_ENV
from apix_core.extract import (
    ExtractAuthError,
    ExtractConfigError,
    ExtractRequestError,
    HttpExtractor,
)
from apix_core.extract.auth import ServiceTokenAuth
from apix_core.store.database import Database
from apix_core.tokens import TokenRefreshError

SENTINEL = "SENTINEL-7f3a-do-not-leak"


def _echo(api: ApiServer, auth: dict[str, Any], **extra: Any) -> HttpExtractor:
    return HttpExtractor(
        {"base_url": api.url, "path": "/echo", "data_selector": "data", "auth": auth, **extra}
    )


async def test_api_key_in_header_or_query(api: ApiServer) -> None:
    [seen] = await _echo(api, {"type": "api_key", "name": "X-Key", "value": "k1"}).extract()
    assert seen["headers"]["x-key"] == "k1"
    auth = {"type": "api_key", "name": "api_key", "value": "k2", "location": "query"}
    [seen] = await _echo(api, auth, params={"a": 1}).extract()
    assert seen["query"] == {"a": "1", "api_key": "k2"}


async def test_bearer_and_basic(api: ApiServer) -> None:
    [seen] = await _echo(api, {"type": "bearer", "token": "t0k"}).extract()
    assert seen["headers"]["authorization"] == "Bearer t0k"
    [seen] = await _echo(api, {"type": "basic", "username": "u", "password": "p"}).extract()
    assert seen["headers"]["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()


@pytest.fixture
def token_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv(TOKEN_KEY_ENV, key)
    return key


def _oauth(
    api: ApiServer, db: Database, secret: str = "s3cret-client", path: str = "/protected"
) -> HttpExtractor:
    return HttpExtractor(
        {
            "name": "crm",
            "base_url": api.url,
            "path": path,
            "data_selector": "data",
            "retry": {"max_attempts": 2, "initial_backoff": 0.01, "jitter": 0.01},
            "auth": {
                "type": "oauth2_client_credentials",
                "token_url": f"{api.url}/token",
                "client_id": "apix",
                "client_secret": secret,
                "scope": "read",
            },
        },
        database=db,
    )


async def test_oauth2_token_is_fetched_once_across_instances(
    api: ApiServer, db: Database, token_key: str
) -> None:
    # GIVEN two extractors (two instances: separate token services) on one store
    first, second = _oauth(api, db), _oauth(api, db)
    # WHEN both extract concurrently, twice
    with tenant_context("acme"):
        for _ in range(2):
            results = await asyncio.gather(first.extract(), second.extract())
    # THEN one token request served them all, sent with the client-credentials form
    assert [r[0]["token"] for r in results] == ["tok-1", "tok-1"]
    assert api.token_requests == 1
    assert api.token_forms[0] == {
        "grant_type": "client_credentials",
        "client_id": "apix",
        "client_secret": "s3cret-client",
        "scope": "read",
    }


async def test_a_401_renews_the_token_once_and_retries(
    api: ApiServer, db: Database, token_key: str
) -> None:
    # GIVEN a token every instance holds, then revoked by the API
    first, second = _oauth(api, db), _oauth(api, db)
    with tenant_context("acme"):
        await asyncio.gather(first.extract(), second.extract())
        api.issued.clear()
        # WHEN both instances hit the 401 at once
        results = await asyncio.gather(first.extract(), second.extract())
    # THEN one renewal fetched one new token, and both requests succeeded with it
    assert [r[0]["token"] for r in results] == ["tok-2", "tok-2"]
    assert api.token_requests == 2
    renewals = [e.auth.renewals for e in (first, second) if isinstance(e.auth, ServiceTokenAuth)]
    assert renewals == [1, 1]


async def test_401_after_the_renewal_is_a_typed_auth_error(
    api: ApiServer, db: Database, token_key: str
) -> None:
    with tenant_context("acme"), pytest.raises(ExtractAuthError, match="even after refreshing"):
        await _oauth(api, db, path="/status/401").extract()
    assert api.token_requests == 2  # the first token, and the one renewal


async def test_oauth2_needs_the_store(api: ApiServer) -> None:
    with pytest.raises(ExtractConfigError, match=r"pass database=app\.database"):
        HttpExtractor(
            {
                "base_url": api.url,
                "auth": {
                    "type": "oauth2_client_credentials",
                    "token_url": f"{api.url}/token",
                    "client_id": "c",
                    "client_secret": "s",
                },
            }
        )


async def test_secrets_never_reach_errors_logs_or_the_store(
    api: ApiServer, db: Database, token_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    # GIVEN an API key (in the query) and a client secret that are sentinels
    key_auth = {"type": "api_key", "name": "key", "value": SENTINEL, "location": "query"}
    failing = HttpExtractor(
        {
            "base_url": api.url,
            "path": "/status/500",
            "auth": key_auth,
            "retry": {"max_attempts": 2, "initial_backoff": 0.01, "jitter": 0},
        }
    )
    # WHEN requests fail (a 5xx with the key in its URL; a rejected client secret)
    with pytest.raises(ExtractRequestError) as info:
        await failing.extract()
    errors += [str(info.value), repr(info.value), repr(failing.auth), repr(failing.config)]
    with tenant_context("acme"), pytest.raises(TokenRefreshError) as refused:
        await _oauth(api, db, secret=SENTINEL).extract()
    errors += [str(refused.value), repr(refused.value)]
    # THEN the sentinel is in none of the errors, reprs, log records or stored rows
    assert api.log[0].query["key"] == SENTINEL  # it was sent, so its absence below means something
    logged = [r.getMessage() for r in caplog.records]
    assert any("/status/500?key=***" in line for line in logged)  # httpx logged the request
    for text in errors + logged:
        assert SENTINEL not in text
    async with db.transaction(tenant_id="acme", write=False) as conn:
        rows = (await conn.execute(sa.text("SELECT * FROM apix_api_tokens"))).all()
    assert rows and SENTINEL not in repr(rows)
