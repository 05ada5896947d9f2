"""Tenant scoping: every repository call reads the tenant from this context variable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from apix_core.exceptions import TenantRequiredError

_current_tenant: ContextVar[str | None] = ContextVar("apix_tenant_id", default=None)


@contextmanager
def tenant_context(tenant_id: str) -> Iterator[str]:
    """Scope everything inside the block to ``tenant_id``."""
    if not tenant_id or not isinstance(tenant_id, str):
        raise TenantRequiredError("tenant_context needs a non-empty tenant id")
    token = _current_tenant.set(tenant_id)
    try:
        yield tenant_id
    finally:
        _current_tenant.reset(token)


def current_tenant() -> str | None:
    """The tenant in scope, or None."""
    return _current_tenant.get()


def require_tenant() -> str:
    """The tenant in scope; raises :class:`TenantRequiredError` outside ``tenant_context``."""
    tenant = _current_tenant.get()
    if tenant is None:
        raise TenantRequiredError(
            "no tenant in scope: wrap the call in `with tenant_context(tenant_id):`"
        )
    return tenant
