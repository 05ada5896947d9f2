"""Tenant scoping: every repository call reads the tenant from this context variable."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from apix_core.errors import InvalidTenantError, TenantRequiredError

#: A tenant id: 1-64 characters, a letter or digit first, then letters, digits, ``_.:@-``.
#: Tenant ids reach file names (``{tenant_id}`` in a ``file_pattern``), log fields and
#: PostgreSQL settings, so path separators, whitespace and control characters are refused.
TENANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$"
#: :data:`TENANT_ID_PATTERN` in words, for error messages.
TENANT_ID_RULE = "1-64 letters, digits or '_.:@-', starting with a letter or digit"

_TENANT_ID = re.compile(TENANT_ID_PATTERN)

_current_tenant: ContextVar[str | None] = ContextVar("apix_tenant_id", default=None)


def is_valid_tenant_id(tenant_id: object) -> bool:
    """Whether ``tenant_id`` matches :data:`TENANT_ID_PATTERN`."""
    return isinstance(tenant_id, str) and _TENANT_ID.fullmatch(tenant_id) is not None


def check_tenant_id(tenant_id: object) -> str:
    """``tenant_id`` if it is valid; else :class:`TenantRequiredError` (empty) or
    :class:`InvalidTenantError` (not matching :data:`TENANT_ID_PATTERN`)."""
    if not tenant_id or not isinstance(tenant_id, str):
        raise TenantRequiredError("a non-empty tenant id is required")
    if not is_valid_tenant_id(tenant_id):
        raise InvalidTenantError(f"invalid tenant id {tenant_id[:80]!r}: use {TENANT_ID_RULE}")
    return tenant_id


@contextmanager
def tenant_context(tenant_id: str) -> Iterator[str]:
    """Scope everything inside the block to ``tenant_id``.

    Raises :class:`TenantRequiredError` for an empty id and :class:`InvalidTenantError` (a
    subclass of it) for one that does not match :data:`TENANT_ID_PATTERN`.
    """
    check_tenant_id(tenant_id)
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
