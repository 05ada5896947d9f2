"""The file extractor: JSONL and CSV records from local paths and globs, gzip or not, streamed.

Files are read one after the other in sorted path order (globs expanded, ``~`` and
``{name}`` input templates filled in), in pages of ``batch_size`` records; only one page is in
memory at a time, and the reading happens in a worker thread so the event loop stays free.
Gzip is recognised by its magic bytes (``compression: auto``), so ``data.jsonl`` that is
really gzipped still reads. The format comes from the name (``.jsonl``/``.ndjson``/``.csv``,
before any ``.gz``) unless ``format`` says. CSV values stay strings (CSV has no types).

A bad line (not JSON, not an object, a CSV row with too many fields) fails the extraction with
:class:`MalformedFileError` naming the file and line, or is skipped and counted
(``on_bad_line: skip``; see :attr:`FileExtractor.skipped`).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import glob
import gzip
import io
import json
import os
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, ClassVar, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from apix_core.errors import PermanentError
from apix_core.extract.base import BaseExtractor, ExtractorFactory, Inputs, Record
from apix_core.extract.exceptions import ExtractConfigError, ExtractError

_GZIP_MAGIC = b"\x1f\x8b"


class MalformedFileError(ExtractError, PermanentError):
    """A line of an input file is not a record (``path`` and ``line`` say where)."""

    code: ClassVar[str] = "EXTRACT_MALFORMED_FILE"

    def __init__(self, message: str, *, path: str = "", line: int = 0) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


class FileExtractorConfig(BaseModel):
    """``paths``: a path or glob (``data/*.jsonl.gz``, ``logs/**/*.csv``) or a list of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    paths: list[str] = Field(min_length=1)
    format: Literal["auto", "jsonl", "csv"] = "auto"
    compression: Literal["auto", "gzip", "none"] = "auto"
    batch_size: int = Field(1000, ge=1, le=1_000_000)
    encoding: str = "utf-8"
    delimiter: str = Field(",", min_length=1, max_length=1)
    on_bad_line: Literal["fail", "skip"] = "fail"
    #: No file matching is an error unless this is true (an empty drop folder is normal).
    allow_empty: bool = False
    #: Add the file's path to each record under this key.
    source_field: str | None = None

    @field_validator("paths", mode="before")
    @classmethod
    def _one_path(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


@ExtractorFactory.register("file")
@ExtractorFactory.register("files")
class FileExtractor(BaseExtractor):
    """Records of every file ``paths`` matches, in pages of ``batch_size``."""

    config_model: ClassVar[type[BaseModel] | None] = FileExtractorConfig

    def __init__(self, config: FileExtractorConfig | Mapping[str, Any]) -> None:
        if not isinstance(config, FileExtractorConfig):
            from apix_core.extract.config import parse_config

            config = parse_config(FileExtractorConfig, config, where="file extractor")
        self.config = config
        #: Bad lines skipped (``on_bad_line: skip``), files read, records read.
        self.skipped = 0
        self.files_read = 0
        self.records = 0

    def files(self, inputs: Mapping[str, Any] | None = None) -> list[Path]:
        """The files the config matches (with these template values), sorted, deduplicated."""
        found: dict[str, None] = {}
        for pattern in self.config.paths:
            try:
                text = pattern.format_map(dict(inputs or {})) if "{" in pattern else pattern
            except (KeyError, IndexError, ValueError) as exc:
                raise ExtractConfigError(
                    f"file extractor path {pattern!r} needs the input {exc} "
                    "(give it in the pipeline's parameters or --param name=...)",
                    key="paths",
                    value=pattern,
                ) from None
            text = os.path.expanduser(text)
            if glob.has_magic(text):
                matches = sorted(glob.glob(text, recursive=True))
            else:
                matches = [text] if os.path.exists(text) else []
            matches = [m for m in matches if os.path.isfile(m)]
            if not matches and not self.config.allow_empty:
                raise ExtractConfigError(
                    f"file extractor: no file matches {text!r} (set allow_empty: true if an "
                    "empty match is normal)",
                    key="paths",
                    value=pattern,
                )
            found.update(dict.fromkeys(matches))
        return [Path(p) for p in found]

    async def extract_stream(self, inputs: Inputs = None) -> AsyncIterator[list[Record]]:
        items = list(inputs) if isinstance(inputs, list) else [inputs or {}]
        for item in items:
            for path in self.files(item):
                batches = self._read(path)
                while True:
                    batch = await asyncio.to_thread(next, batches, None)
                    if batch is None:
                        break
                    self.records += len(batch)
                    yield batch
                self.files_read += 1

    def _read(self, path: Path) -> Iterator[list[Record]]:
        cfg = self.config
        fmt = cfg.format if cfg.format != "auto" else _format_of(path)
        delimiter = cfg.delimiter
        if fmt == "tsv":  # by its name: tab-separated unless a delimiter was set
            fmt, delimiter = "csv", "\t" if delimiter == "," else delimiter
        size = cfg.batch_size
        with _open(path, cfg.compression, cfg.encoding) as stream:
            rows = _jsonl(stream, path) if fmt == "jsonl" else _csv(stream, path, delimiter)
            batch: list[Record] = []
            source = cfg.source_field
            try:
                for record in rows:
                    if type(record) is MalformedFileError:
                        if cfg.on_bad_line == "fail":
                            raise record
                        self.skipped += 1
                        continue
                    found = cast(Record, record)
                    if source:
                        found[source] = str(path)
                    batch.append(found)
                    if len(batch) >= size:
                        yield batch
                        batch = []
            except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
                # A file that cannot be decoded at all (bad gzip, wrong encoding).
                raise MalformedFileError(
                    f"{path}: cannot be read ({type(exc).__name__}: {exc}); check compression "
                    "and encoding",
                    path=str(path),
                ) from None
            if batch:
                yield batch


def _format_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv"
    raise ExtractConfigError(
        f"file extractor: cannot tell the format of {str(path)!r} from its name; set "
        "format: jsonl or format: csv",
        key="format",
        value="auto",
    )


@contextlib.contextmanager
def _open(path: Path, compression: str, encoding: str) -> Iterator[IO[str]]:
    with path.open("rb") as raw:
        gz = compression == "gzip" or (compression == "auto" and raw.peek(2)[:2] == _GZIP_MAGIC)
        binary: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw  # type: ignore[assignment]
        with io.TextIOWrapper(binary, encoding=encoding, newline="") as text:
            yield text


def _jsonl(stream: IO[str], path: Path) -> Iterator[Record | MalformedFileError]:
    loads = json.loads
    for number, line in enumerate(stream, 1):
        try:
            record = loads(line)
        except json.JSONDecodeError as exc:
            if not line.strip():
                continue
            yield MalformedFileError(
                f"{path} line {number}: not JSON ({exc.msg})", path=str(path), line=number
            )
            continue
        if type(record) is not dict:
            yield MalformedFileError(
                f"{path} line {number}: a JSONL record is an object, not {type(record).__name__}",
                path=str(path),
                line=number,
            )
            continue
        yield record


def _csv(stream: IO[str], path: Path, delimiter: str) -> Iterator[Record | MalformedFileError]:
    reader = csv.reader(stream, delimiter=delimiter)
    header: list[str] | None = None
    try:
        for row in reader:
            if header is None:
                header = row
                continue
            if not row:
                continue
            if len(row) > len(header):
                yield MalformedFileError(
                    f"{path} line {reader.line_num}: {len(row)} fields, the header has "
                    f"{len(header)}",
                    path=str(path),
                    line=reader.line_num,
                )
                continue
            yield dict(zip(header, row + [""] * (len(header) - len(row)), strict=True))
    except csv.Error as exc:
        yield MalformedFileError(
            f"{path} line {reader.line_num}: not CSV ({exc})", path=str(path), line=reader.line_num
        )


__all__ = ["FileExtractor", "FileExtractorConfig", "MalformedFileError"]
