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
    FileOutputError,
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

    ``"format": "jsonl"`` (implied by a ``.jsonl`` name) ends the record with a newline.
    ``"roll": {"max_bytes": N, "max_records": N, "max_seconds": N}`` (any of them) appends the
    records to rolling segments of the stream ``file_pattern`` names (default
    ``"{processor}.jsonl"``) instead of one file per record: see :func:`append_rolling`.
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
    pattern = cfg.get("file_pattern", "{processor}.jsonl" if "roll" in cfg else "{message_id}.json")
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
    roll_limits(row.config or {}, name)
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


def is_jsonl(config: dict[str, Any], name: str) -> bool:
    """Whether records are JSON Lines (each ends with a newline)."""
    return config.get("format") == "jsonl" or name.endswith((".jsonl", ".jsonl.gz"))


ROLL_LIMITS = ("max_bytes", "max_records", "max_seconds")


def roll_limits(config: dict[str, Any], name: str) -> dict[str, float] | None:
    """The ``roll`` limits of a file output (None: one file per record), checked."""
    roll = config.get("roll")
    if roll is None:
        return None
    if not isinstance(roll, dict) or not roll or set(roll) - set(ROLL_LIMITS):
        raise FileOutputError(
            f"file output 'roll' must be a dict of {', '.join(ROLL_LIMITS)}, not {roll!r}"
        )
    for key, value in roll.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise FileOutputError(f"file output roll {key} must be a positive number: {value!r}")
    if not is_jsonl(config, name):
        raise FileOutputError('a rolling file output needs "format": "jsonl"')
    if config.get("compress"):
        raise FileOutputError("a rolling file output cannot be compressed (records are appended)")
    return {k: float(v) for k, v in roll.items()}


def write_file(row: OutboxRow) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half a file.

    The target is checked by :func:`check_file_name` first. A ``roll`` config appends to a
    rolling segment instead (:func:`append_rolling`).
    """
    target = check_file_name(row)
    cfg = row.config or {}
    if "roll" in cfg:
        return append_rolling(row, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = row.body.encode("utf-8")
    if is_jsonl(cfg, target.name):
        data += b"\n"
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


@dataclass
class _Segment:
    name: str
    records: int
    end: int  # bytes of the segment that the index accounts for
    opened_at: float


@dataclass
class _StreamIndex:
    """What a stream's index file says, read incrementally (cached per process)."""

    inode: int = -1
    offset: int = 0
    ids: dict[str, str] | None = None
    current: _Segment | None = None


_INDEXES: dict[str, _StreamIndex] = {}


def append_rolling(row: OutboxRow, stream: Path) -> Path:
    """Append ``row``'s record to the current segment of ``stream``, exactly once.

    Segments are ``<stem>-<first row id><suffix>`` beside the stream's name; a new one starts
    when the current one would pass ``max_bytes``, has ``max_records``, or is ``max_seconds``
    old. An index (``.<stream name>.index``: one ``row id, segment, end offset, time`` line per
    record, written *after* the record) makes appends idempotent: a row already in the index is
    not appended again (a re-dispatch after a crash between the write and the outbox's
    ``sent`` mark), and bytes past the last indexed end (a crash between the record and its
    index line) are truncated before the next append — that record's row was not marked sent,
    so it is re-dispatched and appended again. A file lock serialises writers (processes
    included). Protects against process crashes; not fsynced, like single-file outputs.
    """
    import fcntl
    import time

    limits = roll_limits(row.config or {}, stream.name) or {}
    stream.parent.mkdir(parents=True, exist_ok=True)
    index_path = stream.with_name(f".{stream.name}.index")
    record = (row.body + "\n").encode("utf-8")
    with open(index_path, "a+b") as index_file:
        fcntl.flock(index_file, fcntl.LOCK_EX)
        state = _read_index(index_path, index_file)
        assert state.ids is not None
        if row.id in state.ids:
            return stream.with_name(state.ids[row.id])
        now = time.time()
        seg = state.current
        if seg is not None:
            seg_path = stream.with_name(seg.name)
            if seg_path.exists() and seg_path.stat().st_size > seg.end:
                os.truncate(seg_path, seg.end)  # an unindexed tail: see the docstring
        if seg is None or _full(seg, limits, len(record), now):
            suffix = "".join(stream.suffixes) or ".jsonl"
            stem = stream.name[: len(stream.name) - len("".join(stream.suffixes))]
            seg = _Segment(f"{stem}-{row.id}{suffix}", 0, 0, now)
            stream.with_name(seg.name).unlink(missing_ok=True)  # this row's unindexed try
        seg_path = stream.with_name(seg.name)
        with open(seg_path, "ab") as out:
            out.write(record)
        seg = _Segment(seg.name, seg.records + 1, seg.end + len(record), seg.opened_at)
        line = f"{row.id}\t{seg.name}\t{seg.end}\t{seg.opened_at!r}\n".encode()
        index_file.seek(0, os.SEEK_END)
        index_file.write(line)
        index_file.flush()
        state.ids[row.id] = seg.name
        state.current = seg
        state.offset += len(line)
        return seg_path


def _full(seg: _Segment, limits: dict[str, float], size: int, now: float) -> bool:
    if seg.records == 0:
        return False
    return (
        ("max_records" in limits and seg.records >= limits["max_records"])
        or ("max_bytes" in limits and seg.end + size > limits["max_bytes"])
        or ("max_seconds" in limits and now - seg.opened_at >= limits["max_seconds"])
    )


def _read_index(path: Path, index_file: Any) -> _StreamIndex:
    """The stream's index, reading only what was appended since the last call."""
    inode = os.fstat(index_file.fileno()).st_ino
    state = _INDEXES.get(str(path))
    size = os.fstat(index_file.fileno()).st_size
    if state is None or state.inode != inode or state.offset > size:
        state = _INDEXES[str(path)] = _StreamIndex(inode=inode, ids={})
    assert state.ids is not None
    index_file.seek(state.offset)
    tail = index_file.read()
    complete = tail[: tail.rfind(b"\n") + 1]
    if len(complete) < len(tail):  # a torn last line (a crash mid-write): drop it
        index_file.truncate(state.offset + len(complete))
    for raw in complete.splitlines():
        row_id, name, end, opened = raw.decode().split("\t")
        cur = state.current
        records = cur.records + 1 if cur is not None and cur.name == name else 1
        state.current = _Segment(name, records, int(end), float(opened))
        state.ids[row_id] = name
    state.offset += len(complete)
    return state


FILE = register_output_kind(FileOutput())
