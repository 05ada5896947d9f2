"""Incremental loads: filter records by a cursor field against a stored watermark.

A run starts from the stored watermark (or ``initial_value``) and keeps records whose cursor is
newer. Records with exactly the stored value are the *boundary*: an API queried with ``>=``
returns them again, so their content hashes are kept and matched. Unlike a dedupe set that
grows with every record, the boundary holds only the records at the current maximum cursor
value: when a larger value arrives the set restarts, so state stays as small as the number of
records that share one cursor value (capped by ``max_boundary``).

``lookback`` moves the run's request bound (:attr:`IncrementalRun.lower_bound`, what an API's
``since`` parameter gets) that far below the watermark, to re-read late arrivals.
``max_lateness`` is how far below the watermark a record is still accepted (at least
``lookback``): older records are *late*, dropped and counted (:meth:`IncrementalRun.is_late`).
Records accepted below the watermark may have been delivered by an earlier run (at-least-once
inside that window): use an output whose ids derive from the record (queue, entity) to make
them effect-once, or keep both at 0 (the default) for exactly-once by the cursor. ``end_value``
bounds a backfill: records at or past it are left out and the watermark is not advanced past it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

from apix_core.errors import ConfigurationError, PermanentError
from apix_core.extract.config import parse_duration as _parse_duration
from apix_core.extract.exceptions import ExtractConfigError, ExtractError
from apix_core.extract.watermarks import Watermark
from apix_core.hashing import content_hash

#: Boundary hashes kept at most (records sharing the maximum cursor value).
DEFAULT_MAX_BOUNDARY = 10_000


class IncrementalError(ExtractError, PermanentError):
    """A record's cursor is missing or cannot be compared with the watermark."""

    code: ClassVar[str] = "INCREMENTAL_CURSOR"


def parse_duration(value: str | float | timedelta | None, name: str = "duration") -> timedelta:
    """``"90s"``, ``"30m"``, ``"1h"``, ``"1h30m"``, a number of seconds, or a ``timedelta``."""
    if value is None:
        return timedelta(0)
    try:
        return _parse_duration(value)
    except ValueError as exc:
        raise ExtractConfigError(f"{name}={value!r}: {exc}", key=name, value=value) from None


def _as_datetime(value: str) -> datetime | None:
    text = value.strip()
    if len(text) < 10 or not text[:4].isdigit() or text[4] != "-":
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def comparable(value: Any, where: str = "cursor") -> Any:
    """The value to compare cursors by: numbers as they are, ISO 8601 strings and datetimes as
    aware datetimes (naive ones taken as UTC), other strings as strings."""
    if isinstance(value, bool) or value is None:
        raise IncrementalError(f"{where} is {value!r}: a cursor is a number, a date or a string")
    if isinstance(value, int | float):
        return value
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        parsed = _as_datetime(value)
        return value if parsed is None else parsed
    raise IncrementalError(f"{where} is a {type(value).__name__}, which cannot be a cursor")


def storable(value: Any) -> Any:
    """The JSON form of a cursor value for the watermark row."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def get_path(record: Any, path: tuple[str, ...]) -> Any:
    """``record[a][b]...`` for a dotted path; a ``KeyError`` when a step is missing."""
    value = record
    for step in path:
        if isinstance(value, dict):
            value = value[step]
        elif isinstance(value, list) and step.lstrip("-").isdigit():
            value = value[int(step)]
        else:
            raise KeyError(step)
    return value


@dataclass(frozen=True)
class Incremental:
    """How a pipeline loads incrementally: the cursor field and the bounds of a run."""

    cursor_path: str
    initial_value: Any = None
    end_value: Any = None
    max_lateness: str | float | timedelta | None = None
    lookback: str | float | timedelta | None = None
    max_boundary: int = DEFAULT_MAX_BOUNDARY
    #: What a record without the cursor does: ``"error"`` (a typed error), ``"include"``,
    #: ``"exclude"``.
    on_missing: str = "error"

    def __post_init__(self) -> None:
        if not isinstance(self.cursor_path, str) or not self.cursor_path.strip(". "):
            raise ConfigurationError(
                f"incremental cursor_path={self.cursor_path!r} must name the record's cursor "
                "field, e.g. 'updated_at' or 'meta.modified'"
            )
        if self.on_missing not in ("error", "include", "exclude"):
            raise ConfigurationError(
                f"incremental on_missing={self.on_missing!r}: write 'error', 'include' or 'exclude'"
            )
        if not isinstance(self.max_boundary, int) or self.max_boundary < 1:
            raise ConfigurationError(
                f"incremental max_boundary={self.max_boundary!r} must be an int >= 1"
            )
        for name in ("initial_value", "end_value"):
            value = getattr(self, name)
            if value is not None:
                try:
                    comparable(value, f"incremental {name}")
                except IncrementalError as exc:
                    raise ConfigurationError(str(exc)) from None
        for name in ("max_lateness", "lookback"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                parse_duration(value, f"incremental {name}")

    @classmethod
    def from_config(cls, config: Any) -> Incremental:
        """From a ``WatermarkConfig``-like object (``cursor_path`` or ``timestamp_field``)."""
        cursor = getattr(config, "cursor_path", None) or getattr(config, "timestamp_field", None)
        kwargs: dict[str, Any] = {}
        for name in ("initial_value", "end_value", "max_boundary", "on_missing"):
            value = getattr(config, name, None)
            if value is not None:
                kwargs[name] = value
        for name in ("max_lateness", "lookback"):
            value = getattr(config, name, None)
            if value:
                kwargs[name] = value
        return cls(cursor_path=str(cursor), **kwargs)

    def start(self, watermark: Watermark) -> IncrementalRun:
        """A run from ``watermark`` (version 0: from ``initial_value``)."""
        return IncrementalRun(self, watermark)


class IncrementalRun:
    """The filter of one run. Feed it batches in any order (:meth:`filter`); after the output
    is durably written, persist :meth:`state`."""

    def __init__(self, spec: Incremental, watermark: Watermark) -> None:
        self.spec = spec
        self.watermark = watermark
        self._path = tuple(p for p in spec.cursor_path.split(".") if p)
        stored = watermark.last_value if watermark.version else None
        start = stored if stored is not None else spec.initial_value
        #: The stored (or initial) cursor value: the run's lower bound before lateness.
        self.start_value: Any = start
        self._start = None if start is None else comparable(start, "stored watermark")
        self._boundary_in: frozenset[str] = frozenset(watermark.boundary) if stored else frozenset()
        self._end = None if spec.end_value is None else comparable(spec.end_value, "end_value")
        self._floor = self._bound = self._start
        if self._start is not None:
            lookback = self._window(self._start, spec.lookback, "lookback")
            lateness = self._window(self._start, spec.max_lateness, "max_lateness")
            if lookback:
                self._bound = self._start - lookback
            if lateness or lookback:
                self._floor = self._start - max(lookback, lateness)
        # Running maximum and the hashes of the records at it (the bounded boundary).
        self._max = self._start
        self._max_raw: Any = start
        self._boundary: set[str] = set(self._boundary_in)
        #: Counts of this run.
        self.seen = 0
        self.emitted = 0
        self.late = 0
        self.duplicates = 0
        self.past_end = 0
        self.peak_boundary = len(self._boundary)

    def _window(self, sample: Any, value: Any, name: str) -> Any:
        """``value`` (a duration or a number) in the cursor's unit; 0 when unset."""
        if not value:
            return timedelta(0) if isinstance(sample, datetime) else 0
        if isinstance(sample, datetime):
            return parse_duration(value, name)
        if isinstance(value, int | float):
            return value
        raise IncrementalError(
            f"{name}={value!r} is a duration but the cursor {self.spec.cursor_path!r} is not a "
            "date: give a number for a numeric cursor"
        )

    @property
    def lower_bound(self) -> Any:
        """The smallest cursor value this run accepts (for an API's ``since`` parameter), in
        the stored form; None when there is no bound."""
        if self._bound is None:
            return None
        return storable(self._bound) if self._bound is not self._start else self.start_value

    @property
    def last_value(self) -> Any:
        """The highest cursor value seen so far (stored form)."""
        return storable(self._max_raw)

    def is_late(self, value: Any) -> bool:
        """Whether a record with cursor ``value`` is older than the watermark minus
        ``max_lateness`` (or ``lookback``, when larger)."""
        return self._floor is not None and self._compare(value) < self._floor

    def _compare(self, value: Any) -> Any:
        key = comparable(value, f"cursor {self.spec.cursor_path!r}")
        return key

    def filter(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records of a batch this run keeps; advances the running maximum."""
        out: list[dict[str, Any]] = []
        path = self._path
        for record in records:
            self.seen += 1
            try:
                raw = get_path(record, path)
            except (KeyError, IndexError, TypeError):
                if self.spec.on_missing == "include":
                    out.append(record)
                    self.emitted += 1
                    continue
                if self.spec.on_missing == "exclude":
                    continue
                raise IncrementalError(
                    f"record {self.seen} has no cursor {self.spec.cursor_path!r} "
                    f"(its keys: {sorted(record)[:10] if isinstance(record, dict) else '-'}); "
                    "set on_missing='include' or 'exclude' to accept such records"
                ) from None
            try:
                key = self._compare(raw)
                if self._end is not None and key >= self._end:
                    self.past_end += 1
                    continue
                if self._floor is not None and key < self._floor:
                    self.late += 1
                    continue
                at_start = self._start is not None and key == self._start
                top = self._max is None or key > self._max
                at_max = not top and key == self._max
            except TypeError:
                raise IncrementalError(
                    f"record {self.seen}: cursor {self.spec.cursor_path!r} = {raw!r} cannot "
                    f"be compared with {self._max_raw!r} (mixed types)"
                ) from None
            if at_start or at_max:
                digest = content_hash(record)
                if at_start and digest in self._boundary_in:
                    self.duplicates += 1
                    continue
                if at_max:
                    if digest in self._boundary:
                        self.duplicates += 1  # the same record twice at the running maximum
                        continue
                    self._add_boundary(digest)
            elif top:
                self._max, self._max_raw = key, raw
                self._boundary = {content_hash(record)}
            out.append(record)
            self.emitted += 1
        return out

    def _add_boundary(self, digest: str) -> None:
        self._boundary.add(digest)
        size = len(self._boundary)
        if size > self.peak_boundary:
            self.peak_boundary = size
            if size > self.spec.max_boundary:
                raise IncrementalError(
                    f"more than {self.spec.max_boundary} records share the cursor value "
                    f"{self._max_raw!r} of {self.spec.cursor_path!r}: choose a finer cursor "
                    "or raise max_boundary"
                )

    def snapshot(self) -> dict[str, Any]:
        """The run so far, as JSON: a run its deadline cut short resumes from it
        (:meth:`restore`) with the same start, so later out-of-order pages are judged against
        the same bound."""
        return {
            "start_value": storable(self.start_value),
            "start_boundary": sorted(self._boundary_in),
            "max": storable(self._max_raw),
            "boundary": sorted(self._boundary),
            "counts": [self.seen, self.emitted, self.late, self.duplicates, self.past_end],
        }

    @classmethod
    def restore(
        cls, spec: Incremental, snapshot: dict[str, Any], pipeline_id: str
    ) -> IncrementalRun:
        """The run of :meth:`snapshot`, continued."""
        start = snapshot.get("start_value")
        run = cls(
            spec,
            Watermark(
                pipeline_id,
                last_value=start,
                boundary=tuple(snapshot.get("start_boundary") or ()),
                version=1 if start is not None else 0,
            ),
        )
        top = snapshot.get("max")
        if top is not None:
            run._max, run._max_raw = run._compare(top), top
            run._boundary = set(snapshot.get("boundary") or ())
        counts = snapshot.get("counts") or [0, 0, 0, 0, 0]
        run.seen, run.emitted, run.late, run.duplicates, run.past_end = counts
        return run

    def state(self) -> tuple[Any, list[str]]:
        """``(last_value, boundary hashes)`` to commit once the output is durable."""
        return self.last_value, sorted(self._boundary)


__all__ = [
    "DEFAULT_MAX_BOUNDARY",
    "Incremental",
    "IncrementalError",
    "IncrementalRun",
    "comparable",
    "get_path",
    "parse_duration",
]
