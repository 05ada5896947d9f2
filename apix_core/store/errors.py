"""What a database failure means: the store's error vocabulary for both dialects."""

from __future__ import annotations

import sqlalchemy as sa

from apix_core.errors import ApixError

#: PostgreSQL ``lock_not_available``: ``lock_timeout`` expired.
LOCK_NOT_AVAILABLE = "55P03"

#: SQLSTATE classes of failures that are the database's, not a message's: connection (08),
#: resources (53), operator intervention (57), transaction rollback (40: serialization,
#: deadlock), lock not available (55P03), and query cancelled by statement timeout (57014).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57", "40", LOCK_NOT_AVAILABLE)


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE of an asyncpg error, also when SQLAlchemy wrapped it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "sqlstate", None)
        if isinstance(code, str):
            return code
        current = getattr(current, "orig", None) or current.__cause__
    return None


def is_transient_store_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the database's failure (unavailable, contended), not the data's."""
    if isinstance(exc, ApixError):
        return exc.retryable
    if isinstance(
        exc,
        OSError
        | TimeoutError
        | sa.exc.TimeoutError
        | sa.exc.OperationalError
        | sa.exc.DisconnectionError,
    ):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    code = sqlstate(exc)
    if code is not None:
        return code.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    return type(exc).__name__ in ("ConnectionDoesNotExistError", "InterfaceError")


def is_lock_timeout(exc: sa.exc.DBAPIError, *, postgres: bool) -> bool:
    """Whether ``exc`` is a lock wait that ran out (PostgreSQL ``lock_timeout``, SQLite busy)."""
    if postgres:
        return sqlstate(exc) == LOCK_NOT_AVAILABLE
    return isinstance(exc, sa.exc.OperationalError) and "locked" in str(exc.orig).lower()
