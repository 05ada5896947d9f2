"""JSONL files, optionally gzip-compressed, partitioned by a date field OF THE RECORD.

Each output batch becomes one file per partition, ``<path>/<partition>=<YYYY-MM-DD>/<prefix>-
<run>-<seq>.jsonl[.gz]`` — the date is the record's (``partition_by``: a dotted field path),
not the load date, so a late record lands in the day it belongs to. Every file is written
atomically: to a hidden temporary file in the same folder, flushed to disk, then renamed. A crash
mid-write leaves no file under a final name (only a ``.apix-*.tmp`` that readers and reruns
ignore), so a rerun never skips a half-written file. File names derive from the run id and the
batch sequence, so re-running a batch from the same position rewrites the same files instead
of adding duplicates.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from apix_core.errors import ApixError, PermanentError
from apix_core.extract.base import OutputFactory, OutputResult, Record
from apix_core.extract.config import OutputBatchConfig, parse_config
from apix_core.extract.exceptions import ExtractError
from apix_core.extract.incremental import comparable, get_path
from apix_core.extract.outputs.buffered import BufferedOutput, encode_record

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class PartitionError(ExtractError, PermanentError):
    """A record's partition field is missing or is not a date."""

    code = "EXTRACT_PARTITION"


class JsonlOutputConfig(BaseModel):
    """``path``: the folder; ``partition_by``: the record's date field (dotted path) or None;
    ``partition_name``: the folder prefix (``date=2026-11-30``); ``partition_format``: strftime
    of the folder value; ``on_missing_partition``: ``error`` or a folder value for records
    without a date (e.g. ``"unknown"``); ``compression``: ``gzip`` or None; ``fsync``: flush
    files and folders to disk before the rename (durability across power loss)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["jsonl"] = "jsonl"
    path: str
    prefix: str = "part"
    partition_by: str | None = None
    partition_name: str = "date"
    partition_format: str = "%Y-%m-%d"
    on_missing_partition: str = "error"
    compression: Literal["gzip"] | None = None
    compress_level: int = Field(6, ge=1, le=9)
    fsync: bool = True
    batch: OutputBatchConfig = Field(default_factory=OutputBatchConfig)


@OutputFactory.register("jsonl")
class JsonlOutput(BufferedOutput):
    """Records to JSONL files; see the module docs. ``run_id`` names this run's files (a
    pipeline passes one that a rerun from the same position repeats); ``seq`` is the next batch
    number (``position()`` reads it back for a checkpoint)."""

    config_model = JsonlOutputConfig

    def __init__(
        self,
        config: JsonlOutputConfig | dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        seq: int = 0,
        **kwargs: Any,
    ) -> None:
        if not isinstance(config, JsonlOutputConfig):
            config = {**(config or {}), **kwargs}
        cfg = parse_config(JsonlOutputConfig, config, where="output")
        super().__init__(cfg.batch)
        self.config = cfg
        self.root = Path(cfg.path)
        self.run_id = _SAFE.sub("_", run_id or uuid.uuid4().hex[:12])
        self.seq = seq
        self._path = tuple(p for p in (cfg.partition_by or "").split(".") if p)
        self._buffers: dict[str, bytearray] = {}
        self._counts: dict[str, int] = {}
        self._suffix = ".jsonl.gz" if cfg.compression == "gzip" else ".jsonl"

    def position(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "seq": self.seq}

    def partition_of(self, record: Record) -> str:
        """The partition folder of ``record`` (``""`` when not partitioned)."""
        cfg = self.config
        if not self._path:
            return ""
        try:
            raw = get_path(record, self._path)
            value = comparable(raw, f"partition field {cfg.partition_by!r}")
            day = value.strftime(cfg.partition_format)
        except (KeyError, IndexError, TypeError, AttributeError, ApixError) as exc:
            if cfg.on_missing_partition != "error":
                day = cfg.on_missing_partition
            else:
                raise PartitionError(
                    f"record has no date at partition_by={cfg.partition_by!r} ({exc}); "
                    "set on_missing_partition to a folder name to keep such records"
                ) from None
        return f"{cfg.partition_name}={_SAFE.sub('_', day)}"

    def _accept(self, records: list[Record]) -> int:
        # Lines go straight into one growing buffer per partition: no object per record is
        # kept (an encoder's bytes object can hold a whole page of spare capacity).
        buffers = self._buffers
        before = sum(len(b) for b in buffers.values()) if len(buffers) > 1 else 0
        if not self._path:
            buf = buffers.get("")
            if buf is None:
                buf = buffers[""] = bytearray()
            start = len(buf)
            for record in records:
                buf += encode_record(record)
                buf += b"\n"
            self._counts[""] = self._counts.get("", 0) + len(records)
            return len(buf) - start
        for record in records:
            partition = self.partition_of(record)
            buf = buffers.get(partition)
            if buf is None:
                buf = buffers[partition] = bytearray()
            buf += encode_record(record)
            buf += b"\n"
            self._counts[partition] = self._counts.get(partition, 0) + 1
        return sum(len(b) for b in buffers.values()) - before

    async def _flush(self) -> OutputResult:
        buffers, self._buffers = self._buffers, {}
        counts, self._counts = self._counts, {}
        seq = self.seq
        self.seq += 1
        name = f"{self.config.prefix}-{self.run_id}-{seq:06d}{self._suffix}"
        # File I/O off the event loop: fetching continues while a batch is written.
        written = await asyncio.to_thread(self._write_all, buffers, name)
        return OutputResult(
            records_written=sum(counts.values()),
            batches_written=1,
            bytes_written=sum(size for _, size in written),
            locations=[path for path, _ in written],
        )

    def _write_all(self, buffers: dict[str, bytearray], name: str) -> list[tuple[str, int]]:
        out = []
        for partition, lines in buffers.items():
            folder = self.root / partition if partition else self.root
            out.append((str(folder / name), self._write_file(folder, name, lines)))
        return out

    def _write_file(self, folder: Path, name: str, lines: bytearray) -> int:
        folder.mkdir(parents=True, exist_ok=True)
        data: bytes | bytearray = lines
        if self.config.compression == "gzip":
            data = gzip.compress(lines, compresslevel=self.config.compress_level, mtime=0)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".apix-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if self.config.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if self.config.fsync:
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the rename itself survives a power loss
            finally:
                os.close(dir_fd)
        return len(data)
