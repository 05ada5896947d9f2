"""cross-tenant work through SECURITY DEFINER functions; the ``apix.bypass_rls`` setting removed

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

Until 0006 the tenant policies also passed a row when the transaction had set
``apix.bypass_rls = 'on'``, and any application session could set it. On PostgreSQL this
revision:

* creates the cluster-wide role ``apix_maintenance`` (NOLOGIN, BYPASSRLS; like ``apix_app`` it
  is made once per cluster and kept by the downgrade), which owns nothing but the functions below
  and has only the table rights they need;
* creates one SECURITY DEFINER function per cross-tenant operation of apix (the local queue's
  receive, ack, release, dead-letter, peek, depth, purge and queue names; dead-letter list,
  count, get, delete, purge and replay; the outbox sweeper's read of stale rows; retention),
  owned by ``apix_maintenance``, with ``search_path`` pinned, ``EXECUTE`` revoked from PUBLIC
  and granted to ``apix_app``. Each does one narrow job with bounded arguments (row limits are
  clipped to :data:`MAX_ROWS`; a receipt never leaves the database except to the receiver);
* recreates every tenant policy without the ``apix.bypass_rls`` clause: an application session
  now sees its own tenant's rows and nothing else, whatever it sets. The predicate compares
  under ``COLLATE "C"`` so that it never drives index choice (see :data:`PREDICATE`).

The downgrade drops the functions and restores 0006's policies. SQLite has no roles nor
row-level security: nothing to do there.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

APP_ROLE = "apix_app"
MAINTENANCE_ROLE = "apix_maintenance"
POLICY = "apix_tenant_isolation"
OLD_PREDICATE = (
    "tenant_id = current_setting('apix.tenant_id', true) "
    "OR current_setting('apix.bypass_rls', true) = 'on'"
)
#: ``COLLATE "C"`` keeps the policy out of index choice (equality is byte equality under any
#: deterministic collation, so it admits the same rows): otherwise, for an application role,
#: a generic plan made without statistics satisfies the policy with a tenant-led index (the
#: entities' natural key) and walks every row of the tenant instead of looking up the key the
#: statement names (``id = ANY(...)``). A superuser never saw it: row-level security skips it.
PREDICATE = "tenant_id COLLATE \"C\" = current_setting('apix.tenant_id', true)"
POLICY_TABLES = (
    "apix_entities",
    "apix_entity_versions",
    "apix_state_transitions",
    "apix_processing_errors",
    "apix_idempotency",
    "apix_outbox",
    "apix_api_tokens",
    "apix_dead_letters",
    "apix_state",
    "apix_queue_messages",
    "apix_watermarks",
)
#: What the functions touch, and the rights their owner gets on it (UPDATE where retention
#: locks rows: ``FOR UPDATE SKIP LOCKED`` needs it).
MAINTENANCE_GRANTS = {
    "apix_queue_messages": "SELECT, INSERT, UPDATE, DELETE",
    "apix_dead_letters": "SELECT, INSERT, UPDATE, DELETE",
    "apix_outbox": "SELECT, UPDATE, DELETE",
    "apix_idempotency": "SELECT, UPDATE, DELETE",
    "apix_state_transitions": "SELECT, UPDATE, DELETE",
    "apix_processing_errors": "SELECT, UPDATE, DELETE",
}
#: The most rows one call returns or deletes (a caller wanting more pages on).
MAX_ROWS = 10000

_DL_FILTER = """
      (p_queue IS NULL OR d.queue = p_queue)
  AND (p_processor IS NULL OR d.processor = p_processor)
  AND (p_tenant IS NULL OR d.tenant_id = p_tenant)
  AND (p_code IS NULL OR d.error_code = p_code)
  AND (p_since IS NULL OR d.created_at >= p_since)"""
_DL_ARGS = "p_queue text, p_processor text, p_tenant text, p_code text, p_since timestamptz"

#: name(arguments) -> (returns, body). Bodies are PL/pgSQL (plans cached per session); every
#: column is qualified, and ``#variable_conflict use_column`` settles the rest.
FUNCTIONS: dict[str, tuple[str, str]] = {
    # The queue's ready messages, hidden until p_hidden_until under a fresh receipt. It returns
    # messages of the named queue only: any holder of the queue reads them, inherent to a
    # shared queue.
    "apix_queue_receive(p_queue text, p_hidden_until float8, p_receipt text, p_now float8, "
    "p_max integer)": (
        "TABLE (id integer, message_id text, body text, attributes text, enqueued_at float8, "
        "receive_count integer)",
        f"""
        RETURN QUERY
        UPDATE apix_queue_messages AS m
           SET visible_at = p_hidden_until, receive_count = m.receive_count + 1,
               receipt = p_receipt
         WHERE m.id IN (
               SELECT q.id FROM apix_queue_messages AS q
                WHERE q.queue = p_queue AND q.visible_at <= p_now
                ORDER BY q.visible_at, q.id
                LIMIT least(greatest(p_max, 0), {MAX_ROWS})
                  FOR UPDATE SKIP LOCKED)
        RETURNING m.id, m.message_id::text, m.body, m.attributes::text, m.enqueued_at,
                  m.receive_count;
        """,
    ),
    # Settling needs the receipt a receive handed out: ids alone settle nothing.
    "apix_queue_ack(p_receipt text, p_ids integer[])": (
        "integer",
        """
        DELETE FROM apix_queue_messages AS m WHERE m.receipt = p_receipt AND m.id = ANY(p_ids);
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
        """,
    ),
    "apix_queue_release(p_id integer, p_receipt text, p_visible_at float8)": (
        "integer",
        """
        UPDATE apix_queue_messages AS m SET visible_at = p_visible_at, receipt = NULL
         WHERE m.id = p_id AND m.receipt = p_receipt;
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
        """,
    ),
    # Writes a dead letter and removes the received message (when its receipt still holds).
    "apix_queue_dead_letter(p_id integer, p_receipt text, p_queue text, p_message_id text, "
    "p_tenant text, p_body text, p_attributes text, p_code text, p_category text, "
    "p_message text, p_processor text, p_attempts integer, p_created_at timestamptz)": (
        "integer",
        """
        INSERT INTO apix_dead_letters (queue, message_id, tenant_id, body, attributes,
               error_code, error_category, error_message, processor, attempts, created_at)
        VALUES (p_queue, p_message_id, p_tenant, p_body, p_attributes::json, p_code,
               p_category, p_message, p_processor, p_attempts, p_created_at);
        n := 0;
        IF p_id IS NOT NULL THEN
            DELETE FROM apix_queue_messages AS m WHERE m.id = p_id AND m.receipt = p_receipt;
            GET DIAGNOSTICS n = ROW_COUNT;
        END IF;
        RETURN n;
        """,
    ),
    # Without receipts: whether a message is in flight, never the receipt that settles it.
    "apix_queue_peek(p_queue text, p_limit integer)": (
        "TABLE (id integer, message_id text, body text, attributes text, enqueued_at float8, "
        "visible_at float8, receive_count integer, in_flight boolean)",
        f"""
        RETURN QUERY
        SELECT m.id, m.message_id::text, m.body, m.attributes::text, m.enqueued_at,
               m.visible_at, m.receive_count, m.receipt IS NOT NULL
          FROM apix_queue_messages AS m WHERE m.queue = p_queue
         ORDER BY m.visible_at, m.id LIMIT least(greatest(p_limit, 0), {MAX_ROWS});
        """,
    ),
    "apix_queue_depth(p_queue text, p_now float8)": (
        "TABLE (visible bigint, in_flight bigint, delayed bigint)",
        """
        RETURN QUERY
        SELECT count(*) FILTER (WHERE m.visible_at <= p_now),
               count(*) FILTER (WHERE m.visible_at > p_now AND m.receipt IS NOT NULL),
               count(*) FILTER (WHERE m.visible_at > p_now AND m.receipt IS NULL)
          FROM apix_queue_messages AS m WHERE m.queue = p_queue;
        """,
    ),
    "apix_queue_purge(p_queue text)": (
        "integer",
        """
        DELETE FROM apix_queue_messages AS m WHERE m.queue = p_queue;
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
        """,
    ),
    "apix_queue_names()": (
        "SETOF text",
        "RETURN QUERY SELECT DISTINCT m.queue::text FROM apix_queue_messages AS m;",
    ),
    # Dead-letter administration (`apix dlq`): an operator's view across tenants, paged.
    f"apix_dead_letters_list({_DL_ARGS}, p_before integer, p_limit integer, p_offset integer)": (
        "SETOF apix_dead_letters",
        f"""
        RETURN QUERY
        SELECT d.* FROM apix_dead_letters AS d
         WHERE {_DL_FILTER}
           AND (p_before IS NULL OR d.id < p_before)
         ORDER BY d.id DESC
         LIMIT least(greatest(p_limit, 0), {MAX_ROWS}) OFFSET greatest(p_offset, 0);
        """,
    ),
    f"apix_dead_letters_count({_DL_ARGS})": (
        "bigint",
        f"RETURN (SELECT count(*) FROM apix_dead_letters AS d WHERE {_DL_FILTER});",
    ),
    f"apix_dead_letters_purge({_DL_ARGS})": (
        "integer",
        f"""
        DELETE FROM apix_dead_letters AS d WHERE {_DL_FILTER};
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
        """,
    ),
    "apix_dead_letter_get(p_id integer)": (
        "SETOF apix_dead_letters",
        "RETURN QUERY SELECT d.* FROM apix_dead_letters AS d WHERE d.id = p_id;",
    ),
    "apix_dead_letter_delete(p_id integer)": (
        "integer",
        """
        DELETE FROM apix_dead_letters AS d WHERE d.id = p_id;
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
        """,
    ),
    # Back on its queue as a fresh delivery (receive_count 0); NULL when there is no such id.
    "apix_dead_letter_replay(p_id integer, p_now float8, p_replayed_at timestamptz)": (
        "text",
        """
        UPDATE apix_dead_letters AS d SET replayed_at = p_replayed_at WHERE d.id = p_id
        RETURNING d.message_id INTO v_message_id;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        INSERT INTO apix_queue_messages (queue, tenant_id, message_id, body, attributes,
               enqueued_at, visible_at, receive_count)
        SELECT d.queue, coalesce(d.tenant_id, ''), d.message_id, d.body, d.attributes,
               p_now, p_now, 0
          FROM apix_dead_letters AS d WHERE d.id = p_id
        ON CONFLICT (queue, tenant_id, message_id) DO NOTHING;
        RETURN v_message_id;
        """,
    ),
    # The outbox sweeper: unsent rows created before p_cutoff, oldest first.
    "apix_outbox_stale(p_cutoff timestamptz, p_limit integer)": (
        "SETOF apix_outbox",
        f"""
        RETURN QUERY
        SELECT o.* FROM apix_outbox AS o
         WHERE o.sent_at IS NULL AND o.created_at <= p_cutoff
         ORDER BY o.created_at LIMIT least(greatest(p_limit, 0), {MAX_ROWS});
        """,
    ),
    # Retention: deletes at most p_batch rows of one category of history, returns how many.
    # It never touches live rows (entities, unsent outbox rows, state, watermarks, tokens, an
    # idempotency record whose outbox rows are unsent).
    "apix_prune(p_category text, p_cutoff timestamptz, p_now timestamptz, p_batch integer)": (
        "integer",
        f"""
        lim := least(greatest(p_batch, 0), {MAX_ROWS});
        IF p_category = 'idempotency' THEN
            DELETE FROM apix_idempotency AS i
             WHERE (i.tenant_id, i.processor, i.message_id) IN (
                   SELECT k.tenant_id, k.processor, k.message_id FROM apix_idempotency AS k
                    WHERE ((k.expires_at IS NOT NULL AND k.expires_at < p_now)
                        OR (k.expires_at IS NULL AND k.created_at < p_cutoff))
                      AND NOT EXISTS (
                          SELECT 1 FROM apix_outbox AS o
                           WHERE o.tenant_id = k.tenant_id AND o.processor = k.processor
                             AND o.source_message_id = k.message_id AND o.sent_at IS NULL)
                    LIMIT lim FOR UPDATE SKIP LOCKED);
        ELSIF p_category = 'sent_outbox' THEN
            DELETE FROM apix_outbox AS o
             WHERE (o.tenant_id, o.id) IN (
                   SELECT k.tenant_id, k.id FROM apix_outbox AS k
                    WHERE k.sent_at IS NOT NULL AND k.sent_at < p_cutoff
                    LIMIT lim FOR UPDATE SKIP LOCKED);
        ELSIF p_category = 'state_transitions' THEN
            DELETE FROM apix_state_transitions AS t
             WHERE t.id IN (
                   SELECT k.id FROM apix_state_transitions AS k WHERE k.created_at < p_cutoff
                    LIMIT lim FOR UPDATE SKIP LOCKED);
        ELSIF p_category = 'processing_errors' THEN
            DELETE FROM apix_processing_errors AS e
             WHERE e.id IN (
                   SELECT k.id FROM apix_processing_errors AS k WHERE k.created_at < p_cutoff
                    LIMIT lim FOR UPDATE SKIP LOCKED);
        ELSIF p_category = 'replayed_dead_letters' THEN
            DELETE FROM apix_dead_letters AS d
             WHERE d.id IN (
                   SELECT k.id FROM apix_dead_letters AS k
                    WHERE k.replayed_at IS NOT NULL AND k.replayed_at < p_cutoff
                    LIMIT lim FOR UPDATE SKIP LOCKED);
        ELSE
            RAISE EXCEPTION 'unknown retention category %', p_category
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
        """,
    ),
}

#: Locals some bodies use (declared in every function: unused ones cost nothing).
_DECLARE = "DECLARE n integer; lim integer; v_message_id text;"


def _schema() -> str:
    return str(op.get_bind().exec_driver_sql("SELECT current_schema()").scalar())


def _create_role() -> None:
    # Roles are cluster-wide: another database (or a concurrent migration) may have made it.
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{MAINTENANCE_ROLE}') THEN
                CREATE ROLE {MAINTENANCE_ROLE} NOLOGIN BYPASSRLS;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END
        $$;
        """
    )


def _policies(predicate: str) -> None:
    for table in POLICY_TABLES:
        op.execute(f"DROP POLICY IF EXISTS {POLICY} ON {table}")
        op.execute(
            f"CREATE POLICY {POLICY} ON {table} FOR ALL "
            f"USING ({predicate}) WITH CHECK ({predicate})"
        )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    schema = _schema()
    _create_role()
    op.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {MAINTENANCE_ROLE}')
    for table, rights in MAINTENANCE_GRANTS.items():
        op.execute(f"GRANT {rights} ON {table} TO {MAINTENANCE_ROLE}")
    op.execute(
        f"GRANT USAGE, SELECT ON SEQUENCE apix_queue_messages_id_seq, "
        f"apix_dead_letters_id_seq TO {MAINTENANCE_ROLE}"
    )
    for signature, (returns, body) in FUNCTIONS.items():
        op.execute(
            f"CREATE OR REPLACE FUNCTION {signature} RETURNS {returns} "
            f'LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, "{schema}", pg_temp '
            f"AS $fn$ #variable_conflict use_column\n{_DECLARE}\nBEGIN\n{body}\nEND $fn$"
        )
        op.execute(f"ALTER FUNCTION {_types(signature)} OWNER TO {MAINTENANCE_ROLE}")
        op.execute(f"REVOKE ALL ON FUNCTION {_types(signature)} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {_types(signature)} TO {APP_ROLE}")
    _policies(PREDICATE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _policies(OLD_PREDICATE)
    for signature in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {_types(signature)}")
    for table in MAINTENANCE_GRANTS:
        op.execute(f"REVOKE ALL ON {table} FROM {MAINTENANCE_ROLE}")
    op.execute(
        f"REVOKE ALL ON SEQUENCE apix_queue_messages_id_seq, apix_dead_letters_id_seq "
        f"FROM {MAINTENANCE_ROLE}"
    )
    op.execute(f'REVOKE USAGE ON SCHEMA "{_schema()}" FROM {MAINTENANCE_ROLE}')
    # The role stays: it is cluster-wide and other databases may use it.


def _types(signature: str) -> str:
    """``name(p_a text, p_b int)`` -> ``name(text, int)`` (what ALTER and DROP name)."""
    name, _, rest = signature.partition("(")
    args = [a.strip().split(" ", 1)[1] for a in rest.rstrip(")").split(",") if a.strip()]
    return f"{name}({', '.join(args)})"
