"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "apix_dead_letters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("queue", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("error_code", sa.String(length=100), nullable=False),
        sa.Column("error_category", sa.String(length=20), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("processor", sa.String(length=100), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apix_dead_letters")),
    )
    with op.batch_alter_table("apix_dead_letters", schema=None) as batch_op:
        batch_op.create_index("ix_apix_dead_letters_queue", ["queue", "created_at"], unique=False)

    op.create_table(
        "apix_entities",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("canonical_type", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apix_entities")),
        sa.UniqueConstraint(
            "tenant_id",
            "canonical_type",
            "source",
            "external_id",
            name="uq_apix_entities_natural_key",
        ),
    )
    with op.batch_alter_table("apix_entities", schema=None) as batch_op:
        batch_op.create_index(
            "ix_apix_entities_tenant_type", ["tenant_id", "canonical_type"], unique=False
        )

    op.create_table(
        "apix_entity_versions",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("processor", sa.String(length=100), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("entity_id", "version", name=op.f("pk_apix_entity_versions")),
    )
    with op.batch_alter_table("apix_entity_versions", schema=None) as batch_op:
        batch_op.create_index("ix_apix_entity_versions_tenant", ["tenant_id"], unique=False)

    op.create_table(
        "apix_idempotency",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("processor", sa.String(length=100), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint(
            "tenant_id", "processor", "message_id", name=op.f("pk_apix_idempotency")
        ),
    )
    with op.batch_alter_table("apix_idempotency", schema=None) as batch_op:
        batch_op.create_index("ix_apix_idempotency_expires", ["expires_at"], unique=False)

    op.create_table(
        "apix_outbox",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("processor", sa.String(length=100), nullable=False),
        sa.Column("source_message_id", sa.String(length=255), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("destination", sa.String(length=1024), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("delay_seconds", sa.Float(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apix_outbox")),
    )
    with op.batch_alter_table("apix_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_apix_outbox_unsent",
            ["created_at"],
            unique=False,
            sqlite_where=sa.text("sent_at IS NULL"),
            postgresql_where=sa.text("sent_at IS NULL"),
        )
        batch_op.create_index(
            "ix_apix_outbox_source", ["tenant_id", "processor", "source_message_id"], unique=False
        )

    op.create_table(
        "apix_processing_errors",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("processor", sa.String(length=100), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("entity_id", sa.String(length=36), nullable=True),
        sa.Column("error_code", sa.String(length=100), nullable=False),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apix_processing_errors")),
    )
    with op.batch_alter_table("apix_processing_errors", schema=None) as batch_op:
        batch_op.create_index(
            "ix_apix_processing_errors_lookup",
            ["tenant_id", "processor", "created_at"],
            unique=False,
        )

    op.create_table(
        "apix_queue_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("queue", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("attributes", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("enqueued_at", sa.Float(), nullable=False),
        sa.Column("visible_at", sa.Float(), nullable=False),
        sa.Column("receive_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("receipt", sa.String(length=36), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apix_queue_messages")),
        sa.UniqueConstraint("queue", "message_id", name="uq_apix_queue_messages_queue_message"),
    )
    with op.batch_alter_table("apix_queue_messages", schema=None) as batch_op:
        batch_op.create_index("ix_apix_queue_messages_ready", ["queue", "visible_at"], unique=False)

    op.create_table(
        "apix_state_transitions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=36), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("processor", sa.String(length=100), nullable=True),
        sa.Column("from_state", sa.String(length=64), nullable=True),
        sa.Column("to_state", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apix_state_transitions")),
    )
    with op.batch_alter_table("apix_state_transitions", schema=None) as batch_op:
        batch_op.create_index("ix_apix_state_transitions_created", ["created_at"], unique=False)
        batch_op.create_index(
            "ix_apix_state_transitions_entity", ["tenant_id", "entity_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("apix_state_transitions", schema=None) as batch_op:
        batch_op.drop_index("ix_apix_state_transitions_entity")
        batch_op.drop_index("ix_apix_state_transitions_created")

    op.drop_table("apix_state_transitions")
    with op.batch_alter_table("apix_queue_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_apix_queue_messages_ready")

    op.drop_table("apix_queue_messages")
    with op.batch_alter_table("apix_processing_errors", schema=None) as batch_op:
        batch_op.drop_index("ix_apix_processing_errors_lookup")

    op.drop_table("apix_processing_errors")
    with op.batch_alter_table("apix_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_apix_outbox_source")
        batch_op.drop_index("ix_apix_outbox_unsent")

    op.drop_table("apix_outbox")
    with op.batch_alter_table("apix_idempotency", schema=None) as batch_op:
        batch_op.drop_index("ix_apix_idempotency_expires")

    op.drop_table("apix_idempotency")
    with op.batch_alter_table("apix_entity_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_apix_entity_versions_tenant")

    op.drop_table("apix_entity_versions")
    with op.batch_alter_table("apix_entities", schema=None) as batch_op:
        batch_op.drop_index("ix_apix_entities_tenant_type")

    op.drop_table("apix_entities")
    with op.batch_alter_table("apix_dead_letters", schema=None) as batch_op:
        batch_op.drop_index("ix_apix_dead_letters_queue")

    op.drop_table("apix_dead_letters")
