"""``tenant_context``: a plain context manager that remembers the tenant ids it validated."""

from __future__ import annotations

from typing import Any

import pytest

from apix_core.errors import InvalidTenantError, TenantRequiredError
from apix_core.tenancy import current_tenant, tenant_context


def test_scopes_nest_and_restore() -> None:
    # GIVEN two nested scopes
    # WHEN each is entered and left
    with tenant_context("outer") as outer:
        assert (outer, current_tenant()) == ("outer", "outer")
        with tenant_context("inner"):
            assert current_tenant() == "inner"
        # THEN leaving the inner one restores the outer tenant, and then none
        assert current_tenant() == "outer"
    assert current_tenant() is None


@pytest.mark.parametrize(
    ("tenant", "error"),
    [
        ("", TenantRequiredError),
        (None, TenantRequiredError),
        ({}, TenantRequiredError),  # unhashable: still the typed error, not a TypeError
        (["a"], TenantRequiredError),
        ("a b", InvalidTenantError),
        ("../etc", InvalidTenantError),
    ],
)
def test_bad_tenant_is_refused_every_time(tenant: Any, error: type[Exception]) -> None:
    # GIVEN a tenant id that is empty, not a string or not matching the rule
    for _ in range(2):  # WHEN entered twice (nothing invalid is remembered)
        # THEN each time it raises the typed error and leaves no tenant in scope
        with pytest.raises(error), tenant_context(tenant):
            pass
        assert current_tenant() is None


def test_str_subclass_equal_to_a_valid_id_is_checked_not_remembered() -> None:
    # GIVEN a valid id already remembered, and a str subclass equal to it
    class Sneaky(str):
        pass

    with tenant_context("acme"):
        pass
    # WHEN the subclass is entered
    with tenant_context(Sneaky("acme")) as tenant:
        # THEN it is scoped (it passes the same check), as before
        assert tenant == "acme"
