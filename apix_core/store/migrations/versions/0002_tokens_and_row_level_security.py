"""api tokens table; PostgreSQL row-level security and the apix_app role

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

On PostgreSQL every tenant table gets ``ENABLE`` + ``FORCE ROW LEVEL SECURITY`` and one policy:
a row is visible and writable when its ``tenant_id`` equals the transaction's
``apix.tenant_id`` setting, or when the transaction set ``apix.bypass_rls = 'on'`` (the
maintenance path used by the outbox sweeper and retention; see docs/postgres.md). The cluster-wide
role ``apix_app`` (NOLOGIN) gets DML rights but owns nothing. SQLite only gets the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

APP_ROLE = "apix_app"
POLICY = "apix_tenant_isolation"
TENANT_TABLES = (
    "apix_entities",
    "apix_entity_versions",
    "apix_state_transitions",
    "apix_processing_errors",
    "apix_idempotency",
    "apix_outbox",
    "apix_api_tokens",
)
OTHER_TABLES = ("apix_queue_messages", "apix_dead_letters")
PREDICATE = (
    "tenant_id = current_setting('apix.tenant_id', true) "
    "OR current_setting('apix.bypass_rls', true) = 'on'"
)


def upgrade() -> None:
    op.create_table(
        "apix_api_tokens",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=255), nullable=False),
        sa.Column("token_id", sa.String(length=36), nullable=True),
        sa.Column("token_ciphertext", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("failed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "operation", name=op.f("pk_apix_api_tokens")),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    # Roles are cluster-wide: another database (or a concurrent migration) may have made it.
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                CREATE ROLE {APP_ROLE} NOLOGIN;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END
        $$;
        """
    )
    op.execute(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}")
    for table in (*TENANT_TABLES, *OTHER_TABLES):
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP_ROLE}")
    op.execute(f"GRANT SELECT ON alembic_version TO {APP_ROLE}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}")
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {POLICY} ON {table} FOR ALL "
            f"USING ({PREDICATE}) WITH CHECK ({PREDICATE})"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TENANT_TABLES:
            op.execute(f"DROP POLICY IF EXISTS {POLICY} ON {table}")
            op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        for table in (*TENANT_TABLES, *OTHER_TABLES):
            op.execute(f"REVOKE ALL ON {table} FROM {APP_ROLE}")
        op.execute(f"REVOKE ALL ON alembic_version FROM {APP_ROLE}")
        op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {APP_ROLE}")
        op.execute(f"REVOKE USAGE ON SCHEMA public FROM {APP_ROLE}")
        # The role stays: it is cluster-wide and other databases may use it.
    op.drop_table("apix_api_tokens")
