"""Every environment variable apix reads, with its default (documented in docs/configuration.md)."""

from __future__ import annotations

#: SQLAlchemy URL of the metadata store. Default: a SQLite file under ``./.apix/``.
DATABASE_URL_ENV = "APIX_DATABASE_URL"
#: SQLAlchemy URL of the local (SQL-table) queue transport. Default: ``./.apix/queues.db`` when the
#: metadata store is the embedded default, else the same database as ``APIX_DATABASE_URL``.
QUEUE_URL_ENV = "APIX_QUEUE_URL"
#: Tenant for triggers that carry none (schedules; foreign messages without a tenant attribute).
TENANT_ID_ENV = "APIX_TENANT_ID"
#: HTTP header that carries the tenant of an HTTP trigger.
TENANT_HEADER_ENV = "APIX_TENANT_HEADER"
#: Directory of the embedded default database files.
HOME_ENV = "APIX_HOME"
#: Apply Alembic migrations when the app starts ("true"/"false"). Default: true for SQLite only.
AUTO_MIGRATE_ENV = "APIX_AUTO_MIGRATE"
#: Log level of the ``apix`` loggers.
LOG_LEVEL_ENV = "APIX_LOG_LEVEL"
#: "json" (default) or "text".
LOG_FORMAT_ENV = "APIX_LOG_FORMAT"
#: apix's own per-batch metrics output besides OpenTelemetry: "emf" (CloudWatch Embedded Metric
#: Format, one JSON line per batch on stdout) or unset.
METRICS_ENV = "APIX_METRICS"
#: CloudWatch namespace of the EMF metrics.
METRICS_NAMESPACE_ENV = "APIX_METRICS_NAMESPACE"
#: Maximum deliveries of a message before it is dead-lettered.
MAX_ATTEMPTS_ENV = "APIX_MAX_ATTEMPTS"
#: Messages received and processed per transaction by local workers.
BATCH_SIZE_ENV = "APIX_BATCH_SIZE"
#: Seconds a received local-queue message stays invisible to other workers.
VISIBILITY_TIMEOUT_ENV = "APIX_VISIBILITY_TIMEOUT"
#: Largest message (UTF-8 bytes) the local transport accepts.
LOCAL_MAX_MESSAGE_BYTES_ENV = "APIX_LOCAL_MAX_MESSAGE_BYTES"
#: Seconds to wait for a database connection or lock before failing with a clear error.
DB_TIMEOUT_ENV = "APIX_DB_TIMEOUT"
#: Development mode for retries (``apix run --fast-retries``): in-invocation backoff and
#: redelivery delays are capped at :data:`FAST_RETRY_MAX_SECONDS`. Never for production.
FAST_RETRIES_ENV = "APIX_FAST_RETRIES"

DEFAULT_HOME = ".apix"
DEFAULT_DATABASE_FILE = "apix.db"
DEFAULT_QUEUE_FILE = "queues.db"
DEFAULT_TENANT_HEADER = "X-Tenant-Id"
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_METRICS_NAMESPACE = "apix"
DEFAULT_BATCH_SIZE = 100
DEFAULT_VISIBILITY_TIMEOUT = 30.0
DEFAULT_LOCAL_MAX_MESSAGE_BYTES = 1024 * 1024
DEFAULT_DB_TIMEOUT = 10.0
#: The longest retry delay (in-invocation backoff or redelivery) with fast retries on.
FAST_RETRY_MAX_SECONDS = 0.1

#: Deepest JSON nesting apix parses on any input path (queue bodies, HTTP bodies, ``App.send``
#: payloads): a top-level object is depth 1, the envelope's payload depth 2. Deeper input is a
#: typed ``JsonTooDeepError`` (a dead letter, an HTTP 400), never a ``RecursionError``.
MAX_JSON_DEPTH = 64
#: Largest body (bytes, or characters of a str body) apix parses on any input path; larger is a
#: typed ``InputTooLargeError`` (transports usually refuse much less: SQS 256 KiB).
MAX_INPUT_BYTES = 16 * 1024 * 1024
#: Longest message id (the idempotency key; column size of every ``message_id``).
MAX_MESSAGE_ID_CHARS = 255

#: Version of the JSON envelope written by :meth:`apix_core.Message.to_queue_data`.
ENVELOPE_VERSION = 1
#: Key that marks a queue body as an apix envelope (its value is the envelope version).
ENVELOPE_KEY = "apix"
#: Message attribute that carries the tenant of a foreign (non-apix) queue message.
TENANT_ATTRIBUTE = "tenant_id"

#: Fernet key (urlsafe base64, 32 bytes) that encrypts API tokens at rest (``apix_core.tokens``).
TOKEN_KEY_ENV = "APIX_TOKEN_KEY"
#: "true" when PostgreSQL is reached through PgBouncer in transaction pooling mode: disables
#: asyncpg's prepared-statement cache and uses unique prepared-statement names.
DB_PGBOUNCER_ENV = "APIX_DB_PGBOUNCER"
#: Event loop of the loops apix creates (run_sync, the CLI): "auto" (uvloop when installed),
#: "uvloop" or "asyncio" (``apix_core.runtime.loop``).
EVENT_LOOP_ENV = "APIX_EVENT_LOOP"
DEFAULT_EVENT_LOOP = "auto"
#: Connections kept in the PostgreSQL pool of one process (a warm function reuses them).
DB_POOL_SIZE_ENV = "APIX_DB_POOL_SIZE"
DEFAULT_DB_POOL_SIZE = 5
