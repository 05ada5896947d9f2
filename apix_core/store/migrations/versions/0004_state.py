"""per-tenant transactional state (watermarks, cursors, pagination positions)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

``apix_state`` holds small JSON values keyed by (tenant, namespace, key), written in the
processing transaction (see :mod:`apix_core.store.state`); ``version`` counts writes for
compare-and-set. Retention never prunes it: its rows are live positions, not history.

On PostgreSQL the table gets the tenant policy of 0002 (enabled and forced) and ``apix_app``
gets DML rights on it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
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
    op.create_table(
        "apix_state",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("namespace", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=500), nullable=False),
        # TEXT on SQLite: a column declared JSON has numeric affinity there (see models.TextJSON).
        sa.Column("value", sa.JSON().with_variant(sa.Text(), "sqlite"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "namespace", "key", name=op.f("pk_apix_state")),
    )
    if not _is_postgres():
        return
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON apix_state TO {APP_ROLE}")
    op.execute("ALTER TABLE apix_state ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE apix_state FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY {POLICY} ON apix_state FOR ALL USING ({PREDICATE}) WITH CHECK ({PREDICATE})"
    )


def downgrade() -> None:
    # Dropping the table drops its policy and grants with it.
    op.drop_table("apix_state")
