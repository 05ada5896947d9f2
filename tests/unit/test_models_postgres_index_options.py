"""The models' PostgreSQL index options are attached on demand (not declared, so SQLite never
imports the PostgreSQL dialect) and then compile into PostgreSQL's DDL."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex

from apix_core.store.models import (
    POSTGRES_INDEX_OPTIONS,
    attach_postgres_index_options,
    metadata,
)


def _index(name: str) -> sa.Index:
    for table in metadata.tables.values():
        for index in table.indexes:
            if index.name == name:
                return index
    raise AssertionError(f"no index {name}")


def test_attached_options_compile_into_postgres_ddl() -> None:
    # GIVEN the models' metadata
    # WHEN the PostgreSQL options are attached (twice: it must be idempotent)
    attach_postgres_index_options()
    attach_postgres_index_options()

    # THEN every listed index exists and PostgreSQL's DDL carries its option
    ddl = {
        name: str(CreateIndex(_index(name)).compile(dialect=postgresql.dialect()))
        for name in POSTGRES_INDEX_OPTIONS
    }
    assert "USING brin" in ddl["ix_apix_outbox_sent"]
    assert "USING brin" in ddl["ix_apix_idempotency_created"]
    assert "WHERE sent_at IS NULL" in ddl["ix_apix_outbox_unsent"]
    assert "USING" not in ddl["ix_apix_outbox_unsent"]
