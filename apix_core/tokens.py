"""API tokens shared by every instance of a pipeline, refreshed by exactly one of them.

A token lives in ``apix_api_tokens`` encrypted with Fernet (key: ``APIX_TOKEN_KEY``), one row per
``(tenant, operation)``. When it is missing or due for renewal, the refresher takes the row lock
(PostgreSQL ``SELECT ... FOR UPDATE`` after an insert-if-missing; SQLite: the database write lock
of ``BEGIN IMMEDIATE``), checks again, and only then calls ``fetch_token``; concurrent callers
block on the lock and then reuse the fresh token.

Renewal: a token is renewed once less than ``min(skew, lifetime / 2)`` of it is left (lifetime =
``expires_at - refreshed_at``). Long-lived tokens are renewed ``skew`` before they expire;
tokens that live no longer than ``2 * skew`` at half-life, so a 5-second token is not renewed by
every call.

Timeouts: the lock is held during ``fetch_token``, so the call is bounded by
``refresh_timeout`` (default: half the database timeout), which must be less than the database
timeout, the lock wait (PostgreSQL ``lock_timeout``, SQLite busy wait) of the callers queued
behind it. A caller that still waits longer (an instance with a longer ``refresh_timeout``, a
shorter database timeout) gets :class:`TokenRefreshError`, not a driver error.

Inside a processor on SQLite, a refresh joins the processing transaction (a savepoint, see
``Database.transaction``) instead of waiting for the write lock that transaction holds: the new
token row commits with the message (the process keeps its copy either way).

Failures: a failed refresh is recorded with a short ``failed_until`` so a broken endpoint is not
hammered, and retried after it. While the current token has not expired yet (it was only inside
the renewal window), a failed or blocked renewal is not an error: callers keep getting the
current token until it expires. A refusal (HTTP 400, 401 or 403 from the endpoint of
:func:`oauth2_client_credentials`: wrong credentials, scope or grant) is a
:class:`TokenRejectedError`, permanent: a processor dead-letters its message at once instead
of retrying credentials that cannot work.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from apix_core.constants import TOKEN_KEY_ENV
from apix_core.errors import (
    ConfigurationError,
    TokenRefreshError,
    TokenRejectedError,
    redact_error_message,
)
from apix_core.observability.logging import get_logger
from apix_core.store.database import Database
from apix_core.store.errors import is_lock_timeout
from apix_core.store.models import api_tokens
from apix_core.store.sql import insert_ignore
from apix_core.tenancy import require_tenant

#: ``await fetch_token()`` → ``(token, expires_in_seconds)``.
FetchToken = Callable[[], Awaitable[tuple[str, float]]]

_t = api_tokens
_log = get_logger("apix.tokens")


@dataclass
class _Cached:
    token: str
    token_id: str
    expires_at: datetime
    refreshed_at: datetime | None


class ApiTokenService:
    """Hands out a valid token per tenant and operation, coordinating refreshes across processes.

    ``fetch_token`` is called with no arguments, or with the operation name when
    ``fetch_takes_operation=True``. A token is renewed once less than ``min(skew, lifetime / 2)``
    seconds of it are left; ``failure_backoff`` is how long a failed refresh is remembered before
    a retry. ``refresh_timeout`` bounds each ``fetch_token`` call (default: half of
    ``db.timeout``); it must be less than ``db.timeout``, the time other callers wait for the row
    lock held during the call.
    """

    def __init__(
        self,
        db: Database,
        *,
        fetch_token: Callable[..., Awaitable[tuple[str, float]]],
        encryption_key: str | bytes | None = None,
        skew: float = 60.0,
        failure_backoff: float = 30.0,
        refresh_timeout: float | None = None,
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
        if refresh_timeout is None:
            refresh_timeout = db.timeout / 2
        if not 0 < refresh_timeout < db.timeout:
            raise ConfigurationError(
                f"refresh_timeout ({refresh_timeout}s) must be positive and less than the "
                f"database timeout ({db.timeout}s): callers waiting for the token row lock, "
                "which is held during the refresh, give up after the database timeout"
            )
        self.db = db
        self.fetch_token = fetch_token
        self.skew = skew
        self.failure_backoff = failure_backoff
        self.refresh_timeout = refresh_timeout
        self._fetch_takes_operation = fetch_takes_operation
        self._cache: dict[tuple[str, str], _Cached] = {}
        #: Refreshes this process performed (observability; tests read it).
        self.refreshes = 0

    async def get_valid_token(
        self, operation: str, *, rejected: str | None = None
    ) -> tuple[str, str]:
        """``(token, token_id)`` for the current tenant (call inside ``tenant_context``).

        ``rejected``: the id of a token the API just refused (a 401): a token other than that
        one is returned — renewed once across all instances (whoever renews first; the others
        reuse the new token).
        """
        tenant = require_tenant()
        key = (tenant, operation)
        cached = self._cache.get(key)
        if (
            cached is not None
            and cached.token_id != rejected
            and self._fresh(cached.expires_at, cached.refreshed_at)
        ):
            return cached.token, cached.token_id
        row = await self._read(tenant, operation)
        if (
            row is not None
            and row.token_ciphertext
            and row.token_id != rejected
            and self._fresh(row.expires_at, row.refreshed_at)
        ):
            return self._remember(key, row)
        backoff = _backoff_error(row)
        if backoff is not None:
            return self._fallback(key, row, backoff)
        try:
            return await self._refresh(tenant, operation, rejected)
        except sa.exc.DBAPIError as exc:
            if not is_lock_timeout(exc, postgres=self.db.is_postgres):
                raise
            error = TokenRefreshError(
                f"gave up waiting for the token row of {operation!r} after the database timeout "
                f"({self.db.timeout}s): another instance is refreshing it and its token "
                "endpoint is slow (its refresh_timeout should be below this timeout)"
            )
            error.__cause__ = exc
            return self._fallback(key, row, error)

    def invalidate(self, operation: str) -> None:
        """Forget this process's copy (e.g. after a 401); the next call re-reads the row."""
        self._cache.pop((require_tenant(), operation), None)

    # -- internals ------------------------------------------------------------------------
    def _fresh(self, expires_at: datetime | None, refreshed_at: datetime | None) -> bool:
        """Not due for renewal: more than ``min(skew, lifetime / 2)`` left before expiry."""
        if expires_at is None:
            return False
        expires = _aware(expires_at)
        margin = self.skew
        if refreshed_at is not None:
            lifetime = (expires - _aware(refreshed_at)).total_seconds()
            margin = min(margin, max(lifetime, 0.0) / 2)
        return datetime.now(UTC) < expires - timedelta(seconds=margin)

    def _remember(self, key: tuple[str, str], row: sa.Row) -> tuple[str, str]:  # type: ignore[type-arg]
        token = self._fernet.decrypt(row.token_ciphertext.encode("ascii")).decode("utf-8")
        self._cache[key] = _Cached(
            token,
            row.token_id,
            _aware(row.expires_at),
            _aware(row.refreshed_at) if row.refreshed_at is not None else None,
        )
        return token, row.token_id

    def _fallback(
        self,
        key: tuple[str, str],
        row: sa.Row | None,  # type: ignore[type-arg]
        error: TokenRefreshError,
    ) -> tuple[str, str]:
        """The current token if it has not expired yet (renewal failed inside the window),
        else ``error``."""
        if (
            row is None
            or not row.token_ciphertext
            or row.expires_at is None
            or _aware(row.expires_at) <= datetime.now(UTC)
        ):
            raise error
        _log.warning(
            "token renewal for %r failed, using the current token until it expires at %s: %s",
            key[1],
            _aware(row.expires_at).isoformat(),
            error,
        )
        return self._remember(key, row)

    async def _read(self, tenant: str, operation: str) -> sa.Row | None:  # type: ignore[type-arg]
        async with self.db.transaction(tenant_id=tenant, write=False) as conn:
            return (
                await conn.execute(
                    sa.select(_t).where(_t.c.tenant_id == tenant, _t.c.operation == operation)
                )
            ).first()

    async def _fetch(self, operation: str) -> tuple[str, float]:
        if self._fetch_takes_operation:
            return await self.fetch_token(operation)
        return await self.fetch_token()

    async def _refresh(
        self, tenant: str, operation: str, rejected: str | None = None
    ) -> tuple[str, str]:
        now = datetime.now(UTC)
        key = (tenant, operation)
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
            if (
                row.token_ciphertext
                and row.token_id != rejected
                and self._fresh(row.expires_at, row.refreshed_at)
            ):
                return self._remember(key, row)
            backoff = _backoff_error(row)
            if backoff is not None:
                return self._fallback(key, row, backoff)
            where = sa.and_(_t.c.tenant_id == tenant, _t.c.operation == operation)
            deadline = asyncio.timeout(self.refresh_timeout)
            try:
                async with deadline:
                    token, expires_in = await self._fetch(operation)
            except Exception as exc:
                if deadline.expired():
                    failure = TimeoutError(
                        f"the token endpoint did not answer within {self.refresh_timeout}s"
                    )
                else:
                    failure = exc
                now = datetime.now(UTC)
                # Recorded (and committed) so other instances back off too.
                await conn.execute(
                    sa.update(_t)
                    .where(where)
                    .values(
                        last_error=redact_error_message(failure),
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
                self._cache[key] = _Cached(token, token_id, expires_at, now)
                result = (token, token_id)
        if failure is not None:
            # A refusal stays permanent: retrying the same credentials cannot succeed.
            kind = (
                TokenRejectedError if isinstance(failure, TokenRejectedError) else TokenRefreshError
            )
            error = kind(f"token refresh for {operation!r} failed: {failure}")
            error.__cause__ = failure
            return self._fallback(key, row, error)
        assert result is not None
        return result


def _backoff_error(row: sa.Row | None) -> TokenRefreshError | None:  # type: ignore[type-arg]
    """The error to report while a recent failure is remembered (``failed_until``), else None."""
    if row is not None and row.failed_until is not None:
        until = _aware(row.failed_until)
        if until > datetime.now(UTC):
            return TokenRefreshError(
                f"token refresh failed recently (retry after {until.isoformat()}): {row.last_error}"
            )
    return None


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; apix always stores UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


#: Token endpoint answers that retrying cannot change (RFC 6749 section 5.2 errors).
REJECTED_STATUSES = frozenset({400, 401, 403})
_OAUTH_ERROR_CODE = re.compile(r"^[a-z_]{1,40}$")


def _oauth_error(body: bytes) -> str:
    """``: invalid_client`` from an RFC 6749 error body; only a code of that shape, since the
    body may echo the request (and its secret)."""
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return ""
    return f": {code}" if isinstance(code, str) and _OAUTH_ERROR_CODE.match(code) else ""


def oauth2_client_credentials(
    token_url: str,
    client_id: str,
    client_secret: str,
    *,
    scope: str | None = None,
    timeout: float = 5.0,
) -> FetchToken:
    """A ``fetch_token`` for the OAuth2 client-credentials grant, over httpx (async, no thread).

    ``timeout`` bounds the request; keep it at most the service's ``refresh_timeout``. httpx
    comes with the ``extract`` extra and is imported on the first fetch.
    """
    form = {"grant_type": "client_credentials", "client_id": client_id}
    if scope:
        form["scope"] = scope

    async def fetch_token() -> tuple[str, float]:
        try:
            import httpx
        except ImportError:  # pragma: no cover - httpx ships with apix-core[extract]
            raise ConfigurationError(
                "OAuth2 token requests use httpx: pip install 'apix-core[extract]'"
            ) from None
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(
                token_url,
                data={**form, "client_secret": client_secret},
                headers={"Accept": "application/json"},
            )
        if response.status_code in REJECTED_STATUSES:
            raise TokenRejectedError(
                f"token endpoint refused the client credentials: HTTP {response.status_code} "
                f"{response.reason_phrase}{_oauth_error(response.content)} (check the client "
                "id, the secret and the scope)"
            )
        if response.status_code != 200:
            # The body may echo the request (and its secret): report the status only.
            raise TokenRefreshError(
                f"token endpoint answered HTTP {response.status_code} {response.reason_phrase}"
            )
        try:
            body = json.loads(response.content)
        except ValueError:
            raise TokenRefreshError(
                "token endpoint answered with a body that is not JSON"
            ) from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:
            keys = list(body) if isinstance(body, dict) else type(body).__name__
            raise TokenRefreshError(f"token endpoint answered without access_token: {keys}")
        # Count the request time against the lifetime: the clock started when we asked.
        expires_in = float(body.get("expires_in", 3600)) - (time.monotonic() - started)
        return str(token), expires_in

    return fetch_token


__all__ = [
    "ApiTokenService",
    "FetchToken",
    "TokenRefreshError",
    "TokenRejectedError",
    "oauth2_client_credentials",
]
