"""incremental-load watermarks (apix_watermarks), tenant-scoped under row-level security

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

``apix_watermarks`` holds one row per (tenant, pipeline, key): the highest cursor value an
extraction has durably written, the content hashes of the records at exactly that value (the
bounded boundary-dedupe set) and, for a run cut short by its invocation's deadline, the position
to resume from (see :mod:`apix_core.extract.watermarks`). ``version`` counts commits for
compare-and-set. Retention never prunes it: its rows are live positions.

On PostgreSQL the table gets the tenant policy of 0002 (enabled and forced) and ``apix_app``
gets DML rights on it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

APP_ROLE = "apix_app"
POLICY = "apix_tenant_isolation"
PREDICATE = (
    "tenant_id = current_setting('apix.tenant_id', true) "
    "OR current_setting('apix.bypass_rls', true) = 'on'"
)


def _is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    # TEXT on SQLite: a column declared JSON has numeric affinity there (see models.TextJSON).
    json_type = sa.JSON().with_variant(sa.Text(), "sqlite")
    op.create_table(
        "apix_watermarks",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("pipeline_id", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("last_value", json_type, nullable=True),
        sa.Column("boundary", json_type, nullable=False),
        sa.Column("position", json_type, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "pipeline_id", "key", name=op.f("pk_apix_watermarks")),
    )
    if not _is_postgres():
        return
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON apix_watermarks TO {APP_ROLE}")
    op.execute("ALTER TABLE apix_watermarks ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE apix_watermarks FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY {POLICY} ON apix_watermarks FOR ALL USING ({PREDICATE}) "
        f"WITH CHECK ({PREDICATE})"
    )


def downgrade() -> None:
    # Dropping the table drops its policy and grants with it.
    op.drop_table("apix_watermarks")
