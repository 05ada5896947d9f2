"""leaner hot-path indexes, retention indexes, row-level security on dead letters

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Every index on the exactly-once path is maintained once per message, so:

* dropped ``ix_apix_entities_tenant_type`` (the natural-key constraint has the same prefix) and
  ``ix_apix_entity_versions_tenant`` (versions are read by entity, the primary key);
* ``ix_apix_idempotency_expires`` (nothing sets ``expires_at`` today) is replaced by an index
  on ``created_at``, which retention scans; retention also gets ``processing_errors.created_at``
  and ``outbox.sent_at``. On PostgreSQL these age indexes, and the one on state transitions,
  are BRIN: rows arrive in time order, and a BRIN index costs next to nothing per insert;
* the local queue's ready index gains ``id``, matching the receive query's ORDER BY.

On PostgreSQL ``apix_dead_letters`` (it has ``tenant_id``) gets the tenant policy of 0002;
the local transport reads and writes it on the maintenance path.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

POLICY = "apix_tenant_isolation"
PREDICATE = (
    "tenant_id = current_setting('apix.tenant_id', true) "
    "OR current_setting('apix.bypass_rls', true) = 'on'"
)


def _is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    pg = _is_postgres()
    brin = {"postgresql_using": "brin"}
    with op.batch_alter_table("apix_entities") as b:
        b.drop_index("ix_apix_entities_tenant_type")
    with op.batch_alter_table("apix_entity_versions") as b:
        b.drop_index("ix_apix_entity_versions_tenant")
    with op.batch_alter_table("apix_idempotency") as b:
        b.drop_index("ix_apix_idempotency_expires")
        b.create_index("ix_apix_idempotency_created", ["created_at"], **brin)
    with op.batch_alter_table("apix_state_transitions") as b:
        b.drop_index("ix_apix_state_transitions_created")
        b.create_index("ix_apix_state_transitions_created", ["created_at"], **brin)
    with op.batch_alter_table("apix_processing_errors") as b:
        b.create_index("ix_apix_processing_errors_created", ["created_at"], **brin)
    with op.batch_alter_table("apix_outbox") as b:
        b.create_index("ix_apix_outbox_sent", ["sent_at"], **brin)
    with op.batch_alter_table("apix_queue_messages") as b:
        b.drop_index("ix_apix_queue_messages_ready")
        b.create_index("ix_apix_queue_messages_ready", ["queue", "visible_at", "id"])
    if pg:
        op.execute("ALTER TABLE apix_dead_letters ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE apix_dead_letters FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {POLICY} ON apix_dead_letters FOR ALL "
            f"USING ({PREDICATE}) WITH CHECK ({PREDICATE})"
        )


def downgrade() -> None:
    if _is_postgres():
        op.execute(f"DROP POLICY IF EXISTS {POLICY} ON apix_dead_letters")
        op.execute("ALTER TABLE apix_dead_letters NO FORCE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE apix_dead_letters DISABLE ROW LEVEL SECURITY")
    with op.batch_alter_table("apix_queue_messages") as b:
        b.drop_index("ix_apix_queue_messages_ready")
        b.create_index("ix_apix_queue_messages_ready", ["queue", "visible_at"])
    with op.batch_alter_table("apix_outbox") as b:
        b.drop_index("ix_apix_outbox_sent")
    with op.batch_alter_table("apix_processing_errors") as b:
        b.drop_index("ix_apix_processing_errors_created")
    with op.batch_alter_table("apix_state_transitions") as b:
        b.drop_index("ix_apix_state_transitions_created")
        b.create_index("ix_apix_state_transitions_created", ["created_at"])
    with op.batch_alter_table("apix_idempotency") as b:
        b.drop_index("ix_apix_idempotency_created")
        b.create_index("ix_apix_idempotency_expires", ["expires_at"])
    with op.batch_alter_table("apix_entity_versions") as b:
        b.create_index("ix_apix_entity_versions_tenant", ["tenant_id"])
    with op.batch_alter_table("apix_entities") as b:
        b.create_index("ix_apix_entities_tenant_type", ["tenant_id", "canonical_type"])
