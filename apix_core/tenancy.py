"""Tenant scoping: every repository call reads the tenant from this context variable."""

from __future__ import annotations

import re
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


class tenant_context:  # lower case: a function to its callers (`with tenant_context(t):`)
    """Scope everything inside the block to ``tenant_id`` (``with tenant_context(t) as t:``).

    Raises :class:`TenantRequiredError` for an empty id and :class:`InvalidTenantError` (a
    subclass of it) for one that does not match :data:`TENANT_ID_PATTERN`, on entering.

    A class, not a ``@contextmanager`` generator, and valid ids are remembered: every batch
    enters one, and the generator's machinery and the regex cost more than a warm record.
    """

    __slots__ = ("_tenant_id", "_token")

    def __init__(self, tenant_id: str) -> None:
        self._tenant_id = tenant_id

    def __enter__(self) -> str:
        tenant_id = self._tenant_id
        if type(tenant_id) is not str or tenant_id not in _valid_tenants:
            check_tenant_id(tenant_id)
            if len(_valid_tenants) >= _MAX_REMEMBERED:
                _valid_tenants.clear()  # bounded: a flood of distinct tenants re-validates
            if type(tenant_id) is str:
                _valid_tenants.add(tenant_id)
        self._token = _current_tenant.set(tenant_id)
        return tenant_id

    def __exit__(self, *exc: object) -> None:
        _current_tenant.reset(self._token)


#: Tenant ids :func:`check_tenant_id` accepted (exact ``str`` only: anything else, unhashable
#: values included, goes through the check every time).
_valid_tenants: set[str] = set()
_MAX_REMEMBERED = 1024


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
