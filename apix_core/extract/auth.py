"""Authentication of extraction requests, as httpx auth flows.

API key (header or query), bearer, basic, and OAuth2 client credentials through the core's
:class:`~apix_core.tokens.ApiTokenService`: the token is shared by every instance of the
pipeline (stored encrypted, refreshed by one of them); a 401 asks the service for a token other
than the rejected one — one coordinated refresh — and retries the request once. Secrets live in
``SecretStr`` until the moment they are put on a request; they are never logged.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING

import httpx

from apix_core.extract.config import (
    ApiKeyAuthConfig,
    AuthConfig,
    BasicAuthConfig,
    BearerAuthConfig,
    OAuth2ClientCredentialsConfig,
)
from apix_core.extract.exceptions import ExtractConfigError

if TYPE_CHECKING:
    from apix_core.store.database import Database
    from apix_core.tokens import ApiTokenService


class ApiKeyAuth(httpx.Auth):
    """The key as a header or a query parameter."""

    def __init__(self, name: str, value: str, location: str = "header") -> None:
        self._name = name
        self._value = value
        self._in_query = location == "query"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._in_query:
            request.url = request.url.copy_merge_params({self._name: self._value})
        else:
            request.headers[self._name] = self._value
        yield request

    def static_parts(self) -> tuple[dict[str, str], dict[str, str]]:
        """(headers, query parameters) to add: all this auth does (the lean HTTP path)."""
        if self._in_query:
            return {}, {self._name: self._value}
        return {self._name: self._value}, {}

    def __repr__(self) -> str:
        return f"ApiKeyAuth(name={self._name!r}, value='**********')"


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request

    def static_parts(self) -> tuple[dict[str, str], dict[str, str]]:
        """(headers, query parameters) to add: all this auth does (the lean HTTP path)."""
        return {"Authorization": self._header}, {}

    def __repr__(self) -> str:
        return "BearerAuth(token='**********')"


class ServiceTokenAuth(httpx.Auth):
    """A bearer token from an :class:`ApiTokenService`; on a 401, one coordinated renewal
    (skipping the rejected token) and one retry. Call inside ``tenant_context``."""

    def __init__(self, service: ApiTokenService, operation: str) -> None:
        self.service = service
        self.operation = operation
        #: 401-triggered renewals (observability; tests read it).
        self.renewals = 0

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("ServiceTokenAuth needs an httpx.AsyncClient")
        yield request  # pragma: no cover

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token, token_id = await self.service.get_valid_token(self.operation)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            self.renewals += 1
            token, _ = await self.service.get_valid_token(self.operation, rejected=token_id)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request


def build_auth(
    config: AuthConfig | None,
    *,
    token_service: ApiTokenService | None = None,
    database: Database | None = None,
    operation: str | None = None,
) -> httpx.Auth | None:
    """The httpx auth for an extractor's ``auth`` config.

    OAuth2 uses ``token_service`` when given, else builds one on ``database`` (the app's
    metadata store) with an httpx client-credentials fetch.
    """
    if config is None:
        return None
    if isinstance(config, ApiKeyAuthConfig):
        return ApiKeyAuth(config.name, config.value.get_secret_value(), config.location)
    if isinstance(config, BearerAuthConfig):
        return BearerAuth(config.token.get_secret_value())
    if isinstance(config, BasicAuthConfig):
        return httpx.BasicAuth(config.username, config.password.get_secret_value())
    if isinstance(config, OAuth2ClientCredentialsConfig):
        if token_service is None:
            if database is None:
                raise ExtractConfigError(
                    "auth.type 'oauth2_client_credentials' shares its token through the "
                    "metadata store: pass database=app.database (or token_service=...) to the "
                    "extractor",
                    key="auth.type",
                    value=config.type,
                )
            from apix_core.tokens import ApiTokenService, oauth2_client_credentials

            token_service = ApiTokenService(
                database,
                fetch_token=oauth2_client_credentials(
                    config.token_url,
                    config.client_id,
                    config.client_secret.get_secret_value(),
                    scope=config.scope,
                    timeout=config.timeout,
                ),
            )
        return ServiceTokenAuth(
            token_service, config.operation or operation or f"oauth2:{config.token_url}"
        )
    raise ExtractConfigError(  # pragma: no cover - the config union is closed
        f"unsupported auth config {type(config).__name__}", key="auth.type", value=None
    )


__all__ = ["ApiKeyAuth", "BearerAuth", "ServiceTokenAuth", "build_auth"]
