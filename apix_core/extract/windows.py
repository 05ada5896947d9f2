"""Time windows: cutting a range into fixed, sliding or global windows, and grouping records
into session windows.

Windows are half-open ``[start, end)`` in UTC. Fixed windows are aligned on multiples of
``window_size`` counted from the Unix epoch plus ``window_offset`` (so ``1d`` windows with a
``2h`` offset run 02:00→02:00 whatever the run's start), then clipped to the range. Sliding
windows start every ``window_size - window_overlap``. A run composes with a watermark through
:func:`range_start`: it starts at the stored mark minus the lookback, so records that arrive
late inside the lookback are read again (the incremental filter drops the duplicates).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apix_core.extract.config import WindowConfig, parse_config
from apix_core.extract.exceptions import ExtractConfigError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, order=True)
class Window:
    """``[start, end)`` in UTC; ``index`` is its position in the plan."""

    start: datetime
    end: datetime
    index: int = 0

    def params(self, config: WindowConfig) -> dict[str, Any]:
        """The query parameters that ask the API for this window."""
        return {
            config.start_param: format_time(self.start, config.time_format),
            config.end_param: format_time(self.end, config.time_format),
        }


@dataclass(frozen=True)
class Session:
    """Records whose timestamps are at most the session gap apart; first and last timestamp."""

    start: datetime
    end: datetime
    records: list[dict[str, Any]]


def format_time(moment: datetime, time_format: str) -> str | int:
    if time_format == "epoch":
        return int(moment.timestamp())
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_utc(value: Any, name: str = "time") -> datetime:
    """A datetime, an ISO 8601 string (``Z`` allowed) or Unix seconds → aware UTC datetime."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            return to_utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
        except ValueError:
            pass
    raise ExtractConfigError(
        f"{name}: {value!r} is not a time; write an ISO 8601 string like "
        "'2026-01-01T00:00:00Z' or Unix seconds",
        key=name,
        value=value,
    )


def range_start(
    config: WindowConfig, watermark: Any = None, *, lookback: timedelta | None = None
) -> datetime:
    """Where a run starts: the watermark minus the lookback when one is stored, else
    ``config.start``. ``lookback`` defaults to the window config's own."""
    back = config.lookback if lookback is None else lookback
    if watermark is not None:
        return to_utc(watermark, "watermark") - back
    if config.start is None:
        raise ExtractConfigError(
            "window.start: required when no watermark is stored yet (where the first run "
            "begins, e.g. '2026-01-01T00:00:00Z')",
            key="window.start",
        )
    return to_utc(config.start, "window.start")


def plan_windows(
    config: WindowConfig | Mapping[str, Any],
    *,
    start: Any = None,
    end: Any = None,
    watermark: Any = None,
    now: datetime | None = None,
) -> list[Window]:
    """The windows covering ``[start, end)``; ``start`` defaults to :func:`range_start`,
    ``end`` to ``config.end`` or now."""
    config = parse_config(WindowConfig, config, where="window")
    lo = to_utc(start, "start") if start is not None else range_start(config, watermark)
    if end is not None:
        hi = to_utc(end, "end")
    elif config.end is not None:
        hi = to_utc(config.end, "window.end")
    else:
        hi = to_utc(now or datetime.now(UTC))
    if hi <= lo:
        return []
    kind = config.window_type
    if kind == "global":
        return [Window(lo, hi, 0)]
    if kind == "session":
        raise ExtractConfigError(
            "session windows are found in fetched records (group_sessions), not planned "
            "ahead; use fixed, sliding or global to split a range",
            key="window.window_type",
            value=kind,
        )
    size = config.window_size
    assert size is not None  # the config validator requires it
    step = size - config.window_overlap
    origin = _EPOCH + config.window_offset
    first = origin + ((lo - origin) // step) * step
    windows: list[Window] = []
    cursor = first
    while cursor < hi:
        w_start, w_end = max(cursor, lo), min(cursor + size, hi)
        if w_end > w_start:
            windows.append(Window(w_start, w_end, len(windows)))
        if cursor + size >= hi:
            break
        cursor += step
    return windows


def group_sessions(
    records: Iterable[dict[str, Any]], *, gap: timedelta, timestamp_field: str
) -> list[Session]:
    """Records sorted by ``timestamp_field`` and split wherever two neighbours are more than
    ``gap`` apart. A record without the field (or with a non-time) is an error naming it."""
    stamped: list[tuple[datetime, int, dict[str, Any]]] = []
    for position, record in enumerate(records):
        if timestamp_field not in record:
            raise ExtractConfigError(
                f"window.timestamp_field: record {position} has no {timestamp_field!r} "
                f"(keys: {', '.join(sorted(record)) or 'none'})",
                key="window.timestamp_field",
                value=timestamp_field,
            )
        stamped.append((to_utc(record[timestamp_field], timestamp_field), position, record))
    stamped.sort(key=lambda item: (item[0], item[1]))
    sessions: list[Session] = []
    current: list[dict[str, Any]] = []
    first = last = _EPOCH
    for moment, _, record in stamped:
        if current and moment - last > gap:
            sessions.append(Session(first, last, current))
            current = []
        if not current:
            first = moment
        current.append(record)
        last = moment
    if current:
        sessions.append(Session(first, last, current))
    return sessions


def sessions_for(config: WindowConfig, records: Iterable[dict[str, Any]]) -> list[Session]:
    """:func:`group_sessions` with the gap and field of a session ``config``."""
    if config.window_type != "session" or config.session_gap is None or not config.timestamp_field:
        raise ExtractConfigError(
            "window.window_type: sessions need window_type 'session' with session_gap and "
            "timestamp_field",
            key="window.window_type",
            value=config.window_type,
        )
    return group_sessions(records, gap=config.session_gap, timestamp_field=config.timestamp_field)


__all__ = [
    "Session",
    "Window",
    "format_time",
    "group_sessions",
    "plan_windows",
    "range_start",
    "sessions_for",
    "to_utc",
]
