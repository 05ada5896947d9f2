"""kept HTTP answers on idempotency claims; the purge functions delete at most 10,000 rows a call

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

* ``apix_idempotency`` gets four nullable columns, written only for an HTTP request with an
  ``Idempotency-Key``, in the transaction that completes it: ``request_hash`` (sha256 of the
  request's method, path, query and body: a retry with another request under the same key is
  refused) and the first answer, ``response_status``, ``response_headers`` and
  ``response_body`` (JSON text, capped by ``apix_core.http.MAX_KEPT_ANSWER_BYTES``). Queue
  claims leave them NULL. On PostgreSQL the table's tenant policy (0007) already covers every
  column, and ``apix_app``'s and ``apix_maintenance``'s table-level rights take in new columns:
  they are re-stated here so that the schema says what the columns are under.
* ``apix_queue_purge`` and ``apix_dead_letters_purge`` (0007) deleted every matching row in one
  statement; they now delete at most :data:`MAX_ROWS` (like every other function of 0007) and
  the caller calls again until fewer come back, so a purge of a million rows is a series of
  bounded transactions instead of one that holds its locks and WAL until the end.

The downgrade drops the columns (their answers are lost: retries are answered ``duplicate``
again) and restores 0007's uncapped purges.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

APP_ROLE = "apix_app"
MAINTENANCE_ROLE = "apix_maintenance"
POLICY = "apix_tenant_isolation"
#: 0007's predicate: the policy is re-created as it is (same text), nothing widened.
PREDICATE = "tenant_id COLLATE \"C\" = current_setting('apix.tenant_id', true)"
#: The most rows one purge call deletes (0007's ``MAX_ROWS``).
MAX_ROWS = 10000


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_headers", sa.Text(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
    ]


_DL_FILTER = """
      (p_queue IS NULL OR d.queue = p_queue)
  AND (p_processor IS NULL OR d.processor = p_processor)
  AND (p_tenant IS NULL OR d.tenant_id = p_tenant)
  AND (p_code IS NULL OR d.error_code = p_code)
  AND (p_since IS NULL OR d.created_at >= p_since)"""
_DL_ARGS = "p_queue text, p_processor text, p_tenant text, p_code text, p_since timestamptz"
_DECLARE = "DECLARE n integer; lim integer; v_message_id text;"

#: signature -> (0008's capped body, 0007's body restored by the downgrade). Any rows of the
#: filter, unordered: ordering them would sort every remaining row on each call (quadratic over
#: a large purge). No SKIP LOCKED: a purge waits for a row being received rather than leaving it.
PURGES: dict[str, tuple[str, str]] = {
    "apix_queue_purge(p_queue text)": (
        f"""
        DELETE FROM apix_queue_messages AS m
         WHERE m.id IN (
               SELECT q.id FROM apix_queue_messages AS q WHERE q.queue = p_queue
                LIMIT {MAX_ROWS});
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
        """,
        """
        DELETE FROM apix_queue_messages AS m WHERE m.queue = p_queue;
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
        """,
    ),
    f"apix_dead_letters_purge({_DL_ARGS})": (
        f"""
        DELETE FROM apix_dead_letters AS x
         WHERE x.id IN (
               SELECT d.id FROM apix_dead_letters AS d WHERE {_DL_FILTER}
                LIMIT {MAX_ROWS});
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
        """,
        f"""
        DELETE FROM apix_dead_letters AS d WHERE {_DL_FILTER};
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
        """,
    ),
}


def _is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _schema() -> str:
    return str(op.get_bind().exec_driver_sql("SELECT current_schema()").scalar())


def _purges(which: int) -> None:
    schema = _schema()
    for signature, bodies in PURGES.items():
        # CREATE OR REPLACE keeps the owner (apix_maintenance) and the grants of 0007.
        op.execute(
            f"CREATE OR REPLACE FUNCTION {signature} RETURNS integer "
            f'LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, "{schema}", pg_temp '
            f"AS $fn$ #variable_conflict use_column\n{_DECLARE}\nBEGIN\n{bodies[which]}\nEND $fn$"
        )


def upgrade() -> None:
    with op.batch_alter_table("apix_idempotency") as batch:
        for column in _columns():
            batch.add_column(column)
    if not _is_postgres():
        return
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON apix_idempotency TO {APP_ROLE}")
    op.execute(f"GRANT SELECT, UPDATE, DELETE ON apix_idempotency TO {MAINTENANCE_ROLE}")
    op.execute("ALTER TABLE apix_idempotency ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE apix_idempotency FORCE ROW LEVEL SECURITY")
    op.execute(f"DROP POLICY IF EXISTS {POLICY} ON apix_idempotency")
    op.execute(
        f"CREATE POLICY {POLICY} ON apix_idempotency FOR ALL "
        f"USING ({PREDICATE}) WITH CHECK ({PREDICATE})"
    )
    _purges(0)


def downgrade() -> None:
    if _is_postgres():
        _purges(1)
    with op.batch_alter_table("apix_idempotency") as batch:
        for column in reversed(_columns()):
            batch.drop_column(column.name)
