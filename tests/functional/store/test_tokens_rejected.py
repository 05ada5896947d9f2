"""A token endpoint that refuses the credentials: a permanent error, not a retried one."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from apix_core import tenant_context
from apix_core.errors import ErrorCategory, classify
from apix_core.store.database import Database
from apix_core.tokens import (
    ApiTokenService,
    TokenRefreshError,
    TokenRejectedError,
    oauth2_client_credentials,
)

KEY = Fernet.generate_key().decode()


def _service(db: Database, server) -> ApiTokenService:
    fetch = oauth2_client_credentials(server.url, "client", "s3cret-sentinel")
    return ApiTokenService(db, fetch_token=fetch, encryption_key=KEY)


@pytest.mark.parametrize("status", [400, 401, 403])
async def test_a_refusal_is_permanent(db: Database, token_server, status: int) -> None:
    # GIVEN a token endpoint that refuses the client's credentials
    token_server.fail_next, token_server.fail_status = 1, status

    # WHEN a token is asked for
    with tenant_context("acme"), pytest.raises(TokenRejectedError) as refused:
        await _service(db, token_server).get_valid_token("crm")

    # THEN the error says so, is still a TokenRefreshError, and is classified as not retryable
    assert f"HTTP {status}" in str(refused.value)
    assert "refused the client credentials" in str(refused.value)
    assert "s3cret-sentinel" not in str(refused.value)
    assert isinstance(refused.value, TokenRefreshError)
    info = classify(refused.value)
    assert (info.code, info.category, info.retryable) == (
        "TOKEN_REJECTED",
        ErrorCategory.VALIDATION,
        False,
    )


async def test_a_server_error_stays_transient(db: Database, token_server) -> None:
    # GIVEN a token endpoint that fails with a 503
    token_server.fail_next, token_server.fail_status = 1, 503

    # WHEN a token is asked for
    with tenant_context("acme"), pytest.raises(TokenRefreshError) as failed:
        await _service(db, token_server).get_valid_token("crm")

    # THEN it is a transient failure, retried later
    assert not isinstance(failed.value, TokenRejectedError)
    assert classify(failed.value).retryable
