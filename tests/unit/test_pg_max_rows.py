"""The row cap callers page by is the cap migration 0007's maintenance functions clip to."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from apix_core.store.migrate import alembic_config
from apix_core.store.sql import PG_MAX_ROWS


def test_pg_max_rows_is_the_cap_of_migration_0007() -> None:
    # GIVEN migration 0007 as Alembic loads it
    migration = ScriptDirectory.from_config(alembic_config()).get_revision("0007")
    assert migration is not None

    # WHEN its row cap (the LIMIT of every function it creates) is read
    cap = migration.module.MAX_ROWS

    # THEN a caller paging by PG_MAX_ROWS asks for exactly what one call returns: no more
    # (rows silently clipped), no less (an extra round trip per page)
    assert cap == PG_MAX_ROWS
