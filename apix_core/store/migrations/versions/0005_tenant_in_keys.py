"""the tenant in every key: queue message identity and the primary keys of tenant tables

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

* ``apix_queue_messages`` gains ``tenant_id`` (``''`` for a message that names none) and
  deduplicates on (queue, tenant, message id): one tenant's id no longer suppresses another
  tenant's message. On PostgreSQL the table gets the tenant policy of 0002 (enabled and
  forced): a tenant's session sees only its own queued messages; the transport serves every
  tenant past the policy.
* The primary keys of ``apix_entities`` (id, tenant), ``apix_entity_versions`` (tenant, entity,
  version) and ``apix_outbox`` (id, tenant) include the tenant, so a key chosen by one tenant
  never collides with (and so never reveals) another tenant's row. Entities and outbox rows are
  looked up by ``id = ANY(...) AND tenant_id = ...``: with the id first, that is an index range
  on the key's leading column even under a generic plan made without statistics (tenant first,
  such a plan walked all of the tenant's rows). Tables keyed by a sequence
  (transitions, processing errors, dead letters) keep their keys: the database picks those ids.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OLD_QUEUE_UNIQUE = "uq_apix_queue_messages_queue_message"
QUEUE_UNIQUE = "uq_apix_queue_messages_queue_tenant_message"

POLICY = "apix_tenant_isolation"
PREDICATE = (
    "tenant_id = current_setting('apix.tenant_id', true) "
    "OR current_setting('apix.bypass_rls', true) = 'on'"
)

#: table -> (old primary key, new primary key)
KEYS = {
    "apix_entities": (("id",), ("id", "tenant_id")),
    "apix_entity_versions": (("entity_id", "version"), ("tenant_id", "entity_id", "version")),
    "apix_outbox": (("id",), ("id", "tenant_id")),
}


def upgrade() -> None:
    with op.batch_alter_table("apix_queue_messages") as b:
        b.add_column(
            sa.Column("tenant_id", sa.String(length=64), server_default="", nullable=False)
        )
        b.drop_constraint(OLD_QUEUE_UNIQUE, type_="unique")
        b.create_unique_constraint(QUEUE_UNIQUE, ["queue", "tenant_id", "message_id"])
    for table, (_, new) in KEYS.items():
        with op.batch_alter_table(table) as b:
            b.drop_constraint(f"pk_{table}", type_="primary")
            b.create_primary_key(f"pk_{table}", list(new))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE apix_queue_messages ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE apix_queue_messages FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {POLICY} ON apix_queue_messages FOR ALL "
            f"USING ({PREDICATE}) WITH CHECK ({PREDICATE})"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP POLICY IF EXISTS {POLICY} ON apix_queue_messages")
        op.execute("ALTER TABLE apix_queue_messages NO FORCE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE apix_queue_messages DISABLE ROW LEVEL SECURITY")
    for table, (old, _) in KEYS.items():
        with op.batch_alter_table(table) as b:
            b.drop_constraint(f"pk_{table}", type_="primary")
            b.create_primary_key(f"pk_{table}", list(old))
    with op.batch_alter_table("apix_queue_messages") as b:
        b.drop_constraint(QUEUE_UNIQUE, type_="unique")
        b.create_unique_constraint(OLD_QUEUE_UNIQUE, ["queue", "message_id"])
        b.drop_column("tenant_id")
