"""The transactional outbox: rows written with the processing transaction, dispatched after commit.

``repository`` holds the SQL (insert, pending and stale rows, mark sent); ``dispatcher`` sends
rows through their output kinds (``apix_core.outputs``). Rows carry deterministic ids, so a
re-dispatch after a crash is deduplicated by the next stage.
"""

from __future__ import annotations

from typing import Any

from apix_core.outbox.dispatcher import Dispatcher
from apix_core.outputs.base import OutboxRow
from apix_core.outputs.file import FILE_PATTERN_FIELDS, check_file_name, file_name, write_file

_REPOSITORY = {"insert_rows", "pending_rows", "stale_rows", "mark_sent", "OUTBOX_COLUMNS"}


def __getattr__(name: str) -> Any:
    # The SQL side loads on first use: dispatching needs none of it.
    if name in _REPOSITORY:
        from apix_core.outbox import repository

        return getattr(repository, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FILE_PATTERN_FIELDS",
    "Dispatcher",
    "OutboxRow",
    "check_file_name",
    "file_name",
    "insert_rows",
    "mark_sent",
    "pending_rows",
    "stale_rows",
    "write_file",
]
