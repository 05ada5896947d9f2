"""Alembic environment: uses the connection apix hands over (``Database.upgrade``), or
``APIX_DATABASE_URL`` when run by the ``alembic`` command for autogenerate."""

from __future__ import annotations

import asyncio
import os

import sqlalchemy as sa
from alembic import context

from apix_core.store.models import attach_postgres_index_options, metadata

config = context.config


def _run(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        attach_postgres_index_options()
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_from_url() -> None:
    from apix_core.store.database import Database

    db = Database(os.environ.get("APIX_DATABASE_URL", "sqlite:///.apix/apix.db"))

    async def go() -> None:
        await db.run_migration(_run)
        await db.dispose()

    asyncio.run(go())


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    _run_from_url()
