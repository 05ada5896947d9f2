"""Schema of the metadata store and of the local queue transport (SQLAlchemy Core tables).

The store keeps metadata only: ids, hashes, versions, states, errors. The one place content may
sit is an outbox row's ``body`` between commit and dispatch; it is set to NULL when sent.
Every table but the transport's has ``tenant_id``.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from apix_core.message import dump_json

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TZ = sa.DateTime(timezone=True)


class TextJSON(sa.TypeDecorator[Any]):
    """JSON stored as TEXT (SQLite): SQLite gives a column declared ``JSON`` numeric affinity,
    which turns a top-level number into INTEGER or REAL (``2**70`` loses digits, ``1.0`` reads
    back as ``1``). Encoded as the engine encodes its JSON columns
    (:data:`~apix_core.message.dump_json`)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> str:
        return dump_json(value)

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> Any:
        return None if value is None else json.loads(value)


#: A JSON value of any kind, top-level numbers included: JSON on PostgreSQL, TEXT on SQLite.
ANY_JSON = sa.JSON().with_variant(TextJSON(), "sqlite")

entities = sa.Table(
    "apix_entities",
    metadata,
    sa.Column("id", sa.String(36), nullable=False),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("external_id", sa.String(255), nullable=False),
    sa.Column("canonical_type", sa.String(100), nullable=False),
    sa.Column("source", sa.String(100), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("state", sa.String(64), nullable=False),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
    # The key includes the tenant (migration 0005): a key one tenant picks never collides
    # with, and so never reveals, another tenant's row. Id first: lookups by `id = ANY(...)`
    # are a range on the leading column even under a generic plan made without statistics.
    sa.PrimaryKeyConstraint("id", "tenant_id"),
    # Also serves listing by (tenant, type): its prefix. Every index here is maintained on the
    # hot path, so none is redundant (migration 0003 dropped two that were).
    sa.UniqueConstraint(
        "tenant_id", "canonical_type", "source", "external_id", name="uq_apix_entities_natural_key"
    ),
)

entity_versions = sa.Table(
    "apix_entity_versions",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("entity_id", sa.String(36), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("processor", sa.String(100), nullable=True),
    sa.Column("message_id", sa.String(255), nullable=True),
    sa.Column("created_at", TZ, nullable=False),
)

state_transitions = sa.Table(
    "apix_state_transitions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("entity_id", sa.String(36), nullable=True),
    sa.Column("message_id", sa.String(255), nullable=True),
    sa.Column("processor", sa.String(100), nullable=True),
    sa.Column("from_state", sa.String(64), nullable=True),
    sa.Column("to_state", sa.String(64), nullable=False),
    sa.Column("reason", sa.String(255), nullable=True),
    sa.Column("created_at", TZ, nullable=False),
    sa.Index("ix_apix_state_transitions_entity", "tenant_id", "entity_id"),
    # Retention scans by age. On PostgreSQL a BRIN index: rows arrive in time order, and it
    # costs next to nothing per insert.
    sa.Index("ix_apix_state_transitions_created", "created_at"),
)

processing_errors = sa.Table(
    "apix_processing_errors",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("processor", sa.String(100), nullable=False),
    sa.Column("message_id", sa.String(255), nullable=True),
    sa.Column("entity_id", sa.String(36), nullable=True),
    sa.Column("error_code", sa.String(100), nullable=False),
    sa.Column("category", sa.String(20), nullable=False),
    sa.Column("error_message", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("final", sa.Boolean, nullable=False),
    sa.Column("created_at", TZ, nullable=False),
    sa.Index("ix_apix_processing_errors_lookup", "tenant_id", "processor", "created_at"),
    sa.Index("ix_apix_processing_errors_created", "created_at"),
)

idempotency = sa.Table(
    "apix_idempotency",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("processor", sa.String(100), primary_key=True),
    sa.Column("message_id", sa.String(255), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("expires_at", TZ, nullable=True),
    # HTTP requests with an Idempotency-Key only (migration 0008): the request's hash and the
    # first answer, replayed to retries. Queue claims leave them NULL.
    sa.Column("request_hash", sa.String(64), nullable=True),
    sa.Column("response_status", sa.Integer, nullable=True),
    sa.Column("response_headers", sa.Text, nullable=True),
    sa.Column("response_body", sa.Text, nullable=True),
    sa.Index("ix_apix_idempotency_created", "created_at"),
)

outbox = sa.Table(
    "apix_outbox",
    metadata,
    sa.Column("id", sa.String(36), nullable=False),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("processor", sa.String(100), nullable=False),
    sa.Column("source_message_id", sa.String(255), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("destination", sa.String(1024), nullable=False),
    sa.Column("body", sa.Text, nullable=True),
    sa.Column("delay_seconds", sa.Float, nullable=False, server_default="0"),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("sent_at", TZ, nullable=True),
    sa.PrimaryKeyConstraint("id", "tenant_id"),  # see apix_entities
    sa.Index("ix_apix_outbox_source", "tenant_id", "processor", "source_message_id"),
    # Only unsent rows are looked up by the sweeper; a partial index stays small and is cheap
    # to maintain when a row is marked sent.
    sa.Index("ix_apix_outbox_unsent", "created_at", sqlite_where=sa.text("sent_at IS NULL")),
    sa.Index("ix_apix_outbox_sent", "sent_at"),
)

# -- local queue transport (workers serve every tenant) ---------------------------------------
queue_messages = sa.Table(
    "apix_queue_messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("queue", sa.String(255), nullable=False),
    # '' for a message that names no tenant; part of the message's identity (migration 0005).
    sa.Column("tenant_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    # NULL when a message has no attributes (the usual case: apix envelopes carry their tenant).
    sa.Column("attributes", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("enqueued_at", sa.Float, nullable=False),
    sa.Column("visible_at", sa.Float, nullable=False),
    sa.Column("receive_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("receipt", sa.String(36), nullable=True),
    sa.UniqueConstraint(
        "queue", "tenant_id", "message_id", name="uq_apix_queue_messages_queue_tenant_message"
    ),
    # Matches the receive query's ORDER BY visible_at, id: no sort of the whole backlog.
    sa.Index("ix_apix_queue_messages_ready", "queue", "visible_at", "id"),
)

dead_letters = sa.Table(
    "apix_dead_letters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("queue", sa.String(255), nullable=False),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("tenant_id", sa.String(64), nullable=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("error_code", sa.String(100), nullable=False),
    sa.Column("error_category", sa.String(20), nullable=False),
    sa.Column("error_message", sa.Text, nullable=False),
    sa.Column("processor", sa.String(100), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("replayed_at", TZ, nullable=True),
    sa.Index("ix_apix_dead_letters_queue", "queue", "created_at"),
)

# -- coordinated API tokens (apix_core.tokens); ciphertext only, never the plaintext token ------
api_tokens = sa.Table(
    "apix_api_tokens",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("operation", sa.String(255), primary_key=True),
    sa.Column("token_id", sa.String(36), nullable=True),
    sa.Column("token_ciphertext", sa.Text, nullable=True),
    sa.Column("expires_at", TZ, nullable=True),
    sa.Column("refreshed_at", TZ, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("failed_until", TZ, nullable=True),
    sa.Column("updated_at", TZ, nullable=False),
)

# -- per-tenant transactional state (apix_core.store.state): watermarks, cursors, positions --
# Small JSON values written in the processing transaction; ``version`` counts writes (1 on
# insert) for compare-and-set. Live positions, never pruned by retention.
state = sa.Table(
    "apix_state",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("namespace", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(500), primary_key=True),
    sa.Column("value", ANY_JSON, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
)

# -- incremental-load watermarks (apix_core.extract.watermarks), migration 0006 --
# One row per (tenant, pipeline, key): the highest cursor value durably written, the content
# hashes of the records AT that value (bounded boundary dedupe) and, for a run cut short by a
# deadline, where to resume. ``version`` counts commits for compare-and-set.
watermarks = sa.Table(
    "apix_watermarks",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("pipeline_id", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("last_value", ANY_JSON, nullable=True),
    sa.Column("boundary", ANY_JSON, nullable=False),
    sa.Column("position", ANY_JSON, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
)

#: Tables with row-level security on PostgreSQL (migrations 0002 to 0006): every table with a
#: ``tenant_id`` column, the local queue's included.
TENANT_TABLES = tuple(t for t in metadata.sorted_tables if "tenant_id" in t.c)


#: PostgreSQL's options of the indexes above (BRIN for the age scans of retention: rows arrive
#: in time order and a BRIN index costs next to nothing per insert; the unsent outbox rows'
#: partial index). Attached by :func:`attach_postgres_index_options`, not declared in the
#: ``sa.Index`` calls: SQLAlchemy validates a ``postgresql_*`` argument by importing its
#: PostgreSQL dialect, which would load it on SQLite too, at every cold start.
POSTGRES_INDEX_OPTIONS: dict[str, dict[str, Any]] = {
    "ix_apix_state_transitions_created": {"postgresql_using": "brin"},
    "ix_apix_processing_errors_created": {"postgresql_using": "brin"},
    "ix_apix_idempotency_created": {"postgresql_using": "brin"},
    "ix_apix_outbox_unsent": {"postgresql_where": sa.text("sent_at IS NULL")},
    "ix_apix_outbox_sent": {"postgresql_using": "brin"},
}


def attach_postgres_index_options() -> None:
    """Give the indexes their PostgreSQL options (idempotent): before the metadata meets
    PostgreSQL (a PostgreSQL ``Database``, Alembic's environment)."""
    for table in metadata.tables.values():
        for index in table.indexes:
            for key, value in POSTGRES_INDEX_OPTIONS.get(str(index.name), {}).items():
                index.dialect_kwargs[key] = value
