"""Fixtures of the PostgreSQL-only tests: the skip on the SQLite backend, and a role's
attributes as the catalog has them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple

import pytest
import sqlalchemy as sa

from apix_core.store.database import Database


class RoleAttributes(NamedTuple):
    login: bool
    superuser: bool
    bypass_rls: bool


@pytest.fixture
def postgres_only(backend: str) -> None:
    if backend != "postgres":
        pytest.skip("roles, functions and row-level security exist on PostgreSQL only")


@pytest.fixture
def role_attributes(admin_db: Database) -> Callable[[str], Awaitable[RoleAttributes]]:
    """``await role_attributes(name)``: can the role log in, is it a superuser, does it pass
    row-level security (read as the superuser)."""

    async def read(name: str) -> RoleAttributes:
        async with admin_db.connect() as conn:
            row = (
                await conn.execute(
                    sa.text(
                        "SELECT rolcanlogin, rolsuper, rolbypassrls FROM pg_roles "
                        "WHERE rolname = :name"
                    ),
                    {"name": name},
                )
            ).one()
        return RoleAttributes(*row)

    return read
