"""Settings from arguments or ``APIX_*`` environment variables (see :mod:`apix_core.constants`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from apix_core import constants as c
from apix_core.errors import ConfigurationError
from apix_core.tenancy import TENANT_ID_RULE, is_valid_tenant_id


def _env_bool(name: str) -> bool | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be true or false, not {raw!r}")


def _env_num(name: str, default: float, kind: type = float) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {raw!r}") from None


def _sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def default_queue_url(database_url: str) -> str:
    """The local transport's database when ``APIX_QUEUE_URL`` is not set.

    A SQLite database file gets a sibling file ``<stem>-queues.db``: message payloads live only
    in the queues, never in the metadata file (DESIGN §3). Any other database (PostgreSQL) and
    an in-memory SQLite database keep the queues in the same database.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(database_url)
    except ArgumentError:
        return database_url
    path = url.database
    if url.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return database_url
    if path.startswith("file:") or url.query.get("mode") == "memory":
        return database_url  # SQLite URI filenames: leave them to the user
    db_file = Path(path)
    queues = db_file.with_name(f"{db_file.stem}-queues.db")
    return url.set(database=str(queues)).render_as_string(hide_password=False)


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of an :class:`~apix_core.App`."""

    database_url: str
    queue_url: str
    tenant_id: str | None = None
    tenant_header: str = c.DEFAULT_TENANT_HEADER
    auto_migrate: bool = True
    max_attempts: int = c.DEFAULT_MAX_ATTEMPTS
    batch_size: int = c.DEFAULT_BATCH_SIZE
    visibility_timeout: float = c.DEFAULT_VISIBILITY_TIMEOUT
    local_max_message_bytes: int = c.DEFAULT_LOCAL_MAX_MESSAGE_BYTES
    db_timeout: float = c.DEFAULT_DB_TIMEOUT
    #: Development mode: retry delays capped at ``FAST_RETRY_MAX_SECONDS`` (``APIX_FAST_RETRIES``).
    fast_retries: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Environment first, then ``overrides`` (arguments given to ``App``) where not None."""
        home = Path(os.environ.get(c.HOME_ENV) or c.DEFAULT_HOME)
        db_url = overrides.get("database_url") or os.environ.get(c.DATABASE_URL_ENV)
        embedded = not db_url
        db_url = db_url or _sqlite_url(home / c.DEFAULT_DATABASE_FILE)
        queue_url = overrides.get("queue_url") or os.environ.get(c.QUEUE_URL_ENV)
        if not queue_url:
            queue_url = (
                _sqlite_url(home / c.DEFAULT_QUEUE_FILE) if embedded else default_queue_url(db_url)
            )
        auto = _env_bool(c.AUTO_MIGRATE_ENV)
        if auto is None:
            auto = db_url.startswith("sqlite")
        values: dict[str, Any] = {
            "database_url": db_url,
            "queue_url": queue_url,
            "tenant_id": os.environ.get(c.TENANT_ID_ENV) or None,
            "tenant_header": os.environ.get(c.TENANT_HEADER_ENV) or c.DEFAULT_TENANT_HEADER,
            "auto_migrate": auto,
            "max_attempts": _env_num(c.MAX_ATTEMPTS_ENV, c.DEFAULT_MAX_ATTEMPTS, int),
            "batch_size": _env_num(c.BATCH_SIZE_ENV, c.DEFAULT_BATCH_SIZE, int),
            "visibility_timeout": _env_num(c.VISIBILITY_TIMEOUT_ENV, c.DEFAULT_VISIBILITY_TIMEOUT),
            "local_max_message_bytes": _env_num(
                c.LOCAL_MAX_MESSAGE_BYTES_ENV, c.DEFAULT_LOCAL_MAX_MESSAGE_BYTES, int
            ),
            "db_timeout": _env_num(c.DB_TIMEOUT_ENV, c.DEFAULT_DB_TIMEOUT),
            "fast_retries": bool(_env_bool(c.FAST_RETRIES_ENV)),
        }
        names = {f.name for f in fields(cls)}
        for key, value in overrides.items():
            if key not in names:
                raise ConfigurationError(f"unknown setting {key!r}")
            if value is not None and key not in ("database_url", "queue_url"):
                values[key] = value
        settings = cls(**values)
        if settings.batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        if settings.tenant_id is not None and not is_valid_tenant_id(settings.tenant_id):
            raise ConfigurationError(
                f"tenant id {settings.tenant_id!r} ({c.TENANT_ID_ENV} or tenant_id=) must be "
                + TENANT_ID_RULE
            )
        return settings

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)
