"""The head revision apix reads without Alembic is Alembic's head."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from apix_core.store.migrate import alembic_config
from apix_core.store.revision import head_revision


def test_head_revision_is_alembics_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [head_revision()]
