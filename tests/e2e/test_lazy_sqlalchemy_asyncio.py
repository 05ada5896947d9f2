"""``apix_core.store`` makes ``sqlalchemy.ext.asyncio`` load its engine without the ORM, and the
package still gives everything a plain import gives once a session-side name is used."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROBE = """
import sys
import apix_core.store
assert "sqlalchemy" not in sys.modules, "installing the lazy package imported SQLAlchemy"

from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
import sqlalchemy.ext.asyncio as pkg
from sqlalchemy.ext.asyncio.engine import AsyncConnection as real_connection
assert AsyncConnection is real_connection
assert "sqlalchemy.orm" not in sys.modules, "the engine half loaded the ORM"

import asyncio
async def query():
    engine = create_async_engine("sqlite+aiosqlite://")
    async with engine.connect() as conn:
        value = (await conn.exec_driver_sql("select 41 + 1")).scalar()
    await engine.dispose()
    return value
assert asyncio.run(query()) == 42
assert "sqlalchemy.orm" not in sys.modules, "a query loaded the ORM"

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio.session import AsyncSession as real_session
assert AsyncSession is real_session and callable(async_sessionmaker)
assert "sqlalchemy.orm" in sys.modules
assert {"AsyncSession", "AsyncEngine", "async_scoped_session"} <= set(dir(pkg))
try:
    pkg.NoSuchName
except AttributeError:
    pass
else:
    raise AssertionError("a missing name did not raise AttributeError")
print("ok")
"""


@pytest.mark.slow
def test_engine_without_orm_then_everything_on_demand() -> None:
    # GIVEN a fresh interpreter that imports apix's store package first
    # WHEN it uses the asyncio engine, then the session half of sqlalchemy.ext.asyncio
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROBE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # THEN the engine worked without the ORM, and the session names came with it on use
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
