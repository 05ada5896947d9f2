"""File outputs: the payload as JSON in a file under a directory, written after commit."""

from __future__ import annotations

import gzip
import os
import string
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from apix_core.errors import (
    InvalidFilePatternError,
    OutputSerializationError,
    UnsafeFilePathError,
)
from apix_core.message import dump_json
from apix_core.outputs.base import (
    OutboxRow,
    OutputHandler,
    OutputKind,
    RowContext,
    register_output_kind,
)

if TYPE_CHECKING:
    from apix_core.transport.base import Producer


@dataclass
class FileOutputHandler(OutputHandler):
    """Write the payload as JSON to a file under ``destination`` (a directory).

    ``config``: ``file_pattern`` (default ``"{message_id}.json"``; fields ``{message_id}``,
    ``{tenant_id}``, ``{processor}``, ``{timestamp}``, ``{date}``) and ``compress`` (gzip).
    The name derives from the outbox row, so a re-dispatch rewrites the same file.
    """

    payload: dict[str, Any] | None = None

    kind: ClassVar[str] = "file"


class FileOutput(OutputKind):
    name = "file"
    handler_types = (FileOutputHandler,)

    def to_row(self, handler: OutputHandler, row_id: str, seq: int, rc: RowContext) -> OutboxRow:
        assert isinstance(handler, FileOutputHandler)
        payload = handler.payload if handler.payload is not None else rc.message.payload
        row = OutboxRow(
            row_id,
            rc.tenant_id,
            rc.processor,
            rc.message.message_id,
            seq,
            self.name,
            handler.destination,
            _payload_json(payload),
            0.0,
            rc.created_at,
            dict(handler.config),
        )
        # A bad pattern or a path outside the destination fails this message now (a
        # permanent error), not every dispatch after commit.
        check_file_name(row)
        return row

    async def dispatch(self, rows: Sequence[OutboxRow], producer: Producer | None) -> None:
        for row in rows:
            write_file(row)


def _payload_json(payload: Any) -> str:
    try:
        return dump_json(payload)
    except OutputSerializationError as exc:
        raise exc.under("payload") from None


#: The placeholders a ``file_pattern`` may use (plain ``{name}``: no conversion or format spec).
FILE_PATTERN_FIELDS = frozenset({"message_id", "tenant_id", "processor", "timestamp", "date"})


def file_name(row: OutboxRow) -> str:
    """The file name of a file output row, relative to its destination directory.

    Raises :class:`~apix_core.errors.InvalidFilePatternError` for a ``file_pattern`` that is
    not a format string of the known placeholders (:data:`FILE_PATTERN_FIELDS`).
    """
    cfg = row.config or {}
    pattern = cfg.get("file_pattern", "{message_id}.json")
    if not isinstance(pattern, str) or not pattern:
        raise InvalidFilePatternError(f"file_pattern must be a non-empty string, not {pattern!r}")
    try:
        fields = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise InvalidFilePatternError(f"file_pattern {pattern!r} is not valid: {exc}") from None
    for _, field, spec, conversion in fields:
        if field is None:
            continue
        if field not in FILE_PATTERN_FIELDS:
            raise InvalidFilePatternError(
                f"file_pattern {pattern!r}: unknown placeholder {{{field}}}; use "
                + ", ".join(f"{{{f}}}" for f in sorted(FILE_PATTERN_FIELDS))
            )
        if spec or conversion:
            raise InvalidFilePatternError(
                f"file_pattern {pattern!r}: write {{{field}}} without a conversion or format spec"
            )
    name = pattern.format(
        message_id=row.id,
        tenant_id=row.tenant_id,
        processor=row.processor,
        timestamp=row.created_at.strftime("%Y%m%dT%H%M%S%fZ"),
        date=row.created_at.strftime("%Y-%m-%d"),
    )
    if cfg.get("compress") and not name.endswith(".gz"):
        name += ".gz"
    return name


def check_file_name(row: OutboxRow) -> Path:
    """The absolute path a file output row writes to, checked to stay inside its destination.

    Call it when building a file row: a bad row then fails its message (a validation error,
    dead-lettered) instead of failing every dispatch. Raises
    :class:`~apix_core.errors.InvalidFilePatternError` (see :func:`file_name`) or
    :class:`~apix_core.errors.UnsafeFilePathError` when the resolved path (``..``, an
    absolute pattern, a symlink) is not strictly inside the resolved destination directory.
    Both are :class:`~apix_core.errors.FileOutputError`, a ``PermanentError``.
    """
    name = file_name(row)
    if "\0" in name or "\0" in row.destination:
        raise UnsafeFilePathError(f"file output path of {row.id!r} contains a NUL character")
    base = Path(row.destination).resolve()
    # Resolving (not just joining) catches '..', absolute names and symlinks out of the base.
    target = (base / name).resolve()
    if target == base or not target.is_relative_to(base):
        raise UnsafeFilePathError(
            f"file output {name!r} resolves to {str(target)!r}, outside {str(base)!r}"
        )
    return target


def write_file(row: OutboxRow) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half a file.

    The target is checked by :func:`check_file_name` first.
    """
    target = check_file_name(row)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = row.body.encode("utf-8")
    if (row.config or {}).get("compress"):
        data = gzip.compress(data, mtime=0)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".apix-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


FILE = register_output_kind(FileOutput())
