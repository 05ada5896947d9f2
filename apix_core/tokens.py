"""API tokens shared by every instance of a pipeline, refreshed by exactly one of them.

A token lives in ``apix_api_tokens`` encrypted with Fernet (key: ``APIX_TOKEN_KEY``), one row per
``(tenant, operation)``. When it is missing or about to expire, the refresher takes the row lock
(PostgreSQL ``SELECT ... FOR UPDATE`` after an insert-if-missing; SQLite: the database write lock
of ``BEGIN IMMEDIATE``), checks again, and only then calls ``fetch_token``; concurrent callers
block on the lock and then reuse the fresh token. A failed refresh is recorded with a short
``failed_until`` so a broken endpoint is not hammered, and retried after it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from apix_core.constants import TOKEN_KEY_ENV
from apix_core.exceptions import ConfigurationError, TransientError
from apix_core.store.database import Database
from apix_core.store.models import api_tokens
from apix_core.store.sql import insert_ignore
from apix_core.tenancy import require_tenant

#: ``await fetch_token()`` → ``(token, expires_in_seconds)``.
FetchToken = Callable[[], Awaitable[tuple[str, float]]]

_t = api_tokens


class TokenRefreshError(TransientError):
    """The token endpoint failed (now, or recently: see ``failed_until``)."""

    code = "TOKEN_REFRESH_FAILED"


@dataclass
class _Cached:
    token: str
    token_id: str
    expires_at: datetime


class ApiTokenService:
    """Hands out a valid token per tenant and operation, coordinating refreshes across processes.

    ``fetch_token`` is called with no arguments, or with the operation name when
    ``fetch_takes_operation=True``. ``skew`` renews a token that expires within that many
    seconds; ``failure_backoff`` is how long a failed refresh is remembered before a retry.
    """

    def __init__(
        self,
        db: Database,
        *,
        fetch_token: Callable[..., Awaitable[tuple[str, float]]],
        encryption_key: str | bytes | None = None,
        skew: float = 60.0,
        failure_backoff: float = 30.0,
        fetch_takes_operation: bool = False,
    ) -> None:
        from cryptography.fernet import Fernet

        key = encryption_key or os.environ.get(TOKEN_KEY_ENV)
        if not key:
            raise ConfigurationError(
                f"API tokens are stored encrypted: set {TOKEN_KEY_ENV} "
                "(generate one with `python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)"
            )
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"{TOKEN_KEY_ENV} is not a Fernet key: {exc}") from None
        self.db = db
        self.fetch_token = fetch_token
        self.skew = skew
        self.failure_backoff = failure_backoff
        self._fetch_takes_operation = fetch_takes_operation
        self._cache: dict[tuple[str, str], _Cached] = {}
        #: Refreshes this process performed (observability; tests read it).
        self.refreshes = 0

    async def get_valid_token(self, operation: str) -> tuple[str, str]:
        """``(token, token_id)`` for the current tenant (call inside ``tenant_context``)."""
        tenant = require_tenant()
        key = (tenant, operation)
        cached = self._cache.get(key)
        if cached is not None and self._fresh(cached.expires_at):
            return cached.token, cached.token_id
        row = await self._read(tenant, operation)
        if row is not None and row.token_ciphertext and self._fresh(row.expires_at):
            return self._remember(key, row)
        self._raise_if_backing_off(row)
        return await self._refresh(tenant, operation)

    def invalidate(self, operation: str) -> None:
        """Forget this process's copy (e.g. after a 401); the next call re-reads the row."""
        self._cache.pop((require_tenant(), operation), None)

    # -- internals ------------------------------------------------------------------------
    def _fresh(self, expires_at: datetime | None) -> bool:
        if expires_at is None:
            return False
        return _aware(expires_at) > datetime.now(UTC) + timedelta(seconds=self.skew)

    def _remember(self, key: tuple[str, str], row: sa.Row) -> tuple[str, str]:  # type: ignore[type-arg]
        token = self._fernet.decrypt(row.token_ciphertext.encode("ascii")).decode("utf-8")
        self._cache[key] = _Cached(token, row.token_id, _aware(row.expires_at))
        return token, row.token_id

    @staticmethod
    def _raise_if_backing_off(row: sa.Row | None) -> None:  # type: ignore[type-arg]
        if row is not None and row.failed_until is not None:
            until = _aware(row.failed_until)
            if until > datetime.now(UTC):
                raise TokenRefreshError(
                    f"token refresh failed recently (retry after {until.isoformat()}): "
                    f"{row.last_error}"
                )

    async def _read(self, tenant: str, operation: str) -> sa.Row | None:  # type: ignore[type-arg]
        async with self.db.transaction(tenant_id=tenant, write=False) as conn:
            return (
                await conn.execute(
                    sa.select(_t).where(_t.c.tenant_id == tenant, _t.c.operation == operation)
                )
            ).first()

    async def _refresh(self, tenant: str, operation: str) -> tuple[str, str]:
        now = datetime.now(UTC)
        failure: BaseException | None = None
        result: tuple[str, str] | None = None
        async with self.db.transaction(tenant_id=tenant, write=True) as conn:
            await conn.execute(
                insert_ignore(self.db.dialect, _t, ["tenant_id", "operation"]).values(
                    tenant_id=tenant, operation=operation, updated_at=now
                )
            )
            stmt = sa.select(_t).where(_t.c.tenant_id == tenant, _t.c.operation == operation)
            if self.db.is_postgres:
                stmt = stmt.with_for_update()
            row = (await conn.execute(stmt)).one()
            # Whoever held the lock before us may have refreshed (or failed) already.
            if row.token_ciphertext and self._fresh(row.expires_at):
                return self._remember((tenant, operation), row)
            self._raise_if_backing_off(row)
            where = sa.and_(_t.c.tenant_id == tenant, _t.c.operation == operation)
            try:
                if self._fetch_takes_operation:
                    token, expires_in = await self.fetch_token(operation)
                else:
                    token, expires_in = await self.fetch_token()
            except Exception as exc:
                failure = exc
                now = datetime.now(UTC)
                # Recorded (and committed) so other instances back off too.
                await conn.execute(
                    sa.update(_t)
                    .where(where)
                    .values(
                        last_error=f"{type(exc).__name__}: {exc}"[:2000],
                        failed_until=now + timedelta(seconds=self.failure_backoff),
                        updated_at=now,
                    )
                )
            else:
                now = datetime.now(UTC)
                token_id = str(uuid.uuid4())
                expires_at = now + timedelta(seconds=float(expires_in))
                await conn.execute(
                    sa.update(_t)
                    .where(where)
                    .values(
                        token_id=token_id,
                        token_ciphertext=self._fernet.encrypt(token.encode("utf-8")).decode(
                            "ascii"
                        ),
                        expires_at=expires_at,
                        refreshed_at=now,
                        last_error=None,
                        failed_until=None,
                        updated_at=now,
                    )
                )
                self.refreshes += 1
                self._cache[(tenant, operation)] = _Cached(token, token_id, expires_at)
                result = (token, token_id)
        if failure is not None:
            message = f"token refresh for {operation!r} failed: {failure}"
            raise TokenRefreshError(message) from failure
        assert result is not None
        return result


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; apix always stores UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def oauth2_client_credentials(
    token_url: str,
    client_id: str,
    client_secret: str,
    *,
    scope: str | None = None,
    timeout: float = 10.0,
) -> FetchToken:
    """A ``fetch_token`` for the OAuth2 client-credentials grant (stdlib HTTP, in a thread)."""

    def fetch() -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
        }
        if scope:
            form["scope"] = scope
        request = urllib.request.Request(
            token_url,
            data=urllib.parse.urlencode(form).encode("ascii"),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            method="POST",
        )
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read().decode("utf-8"))
        token = body.get("access_token")
        if not token:
            raise TokenRefreshError(f"token endpoint answered without access_token: {list(body)}")
        # Count the request time against the lifetime: the clock started when we asked.
        expires_in = float(body.get("expires_in", 3600)) - (time.monotonic() - started)
        return str(token), expires_in

    async def fetch_token() -> tuple[str, float]:
        return await asyncio.to_thread(fetch)

    return fetch_token


__all__ = ["ApiTokenService", "FetchToken", "TokenRefreshError", "oauth2_client_credentials"]
