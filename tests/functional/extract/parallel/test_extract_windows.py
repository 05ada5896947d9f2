"""Window plans (fixed, sliding, global), session grouping, strict durations, watermark start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from apix_core.errors import ConfigurationError
from apix_core.extract.config import ParallelConfig, WindowConfig, parse_config
from apix_core.extract.exceptions import ExtractConfigError
from apix_core.extract.windows import group_sessions, plan_windows, range_start, sessions_for


def t(hour: int, minute: int = 0, day: int = 1) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC)


def test_fixed_windows_are_aligned_and_clipped_to_the_range() -> None:
    # GIVEN 1h windows and a range that starts and ends mid-hour
    config = WindowConfig(window_type="fixed", window_size="1h")
    # WHEN planned
    windows = plan_windows(config, start=t(0, 30), end=t(3, 15))
    # THEN the boundaries sit on whole hours and the range is covered exactly, without overlap
    assert [(w.start, w.end) for w in windows] == [
        (t(0, 30), t(1)),
        (t(1), t(2)),
        (t(2), t(3)),
        (t(3), t(3, 15)),
    ]
    assert [w.index for w in windows] == [0, 1, 2, 3]


def test_window_offset_shifts_the_alignment() -> None:
    config = WindowConfig(window_type="fixed", window_size="1d", window_offset="2h")
    windows = plan_windows(config, start=t(0), end=t(0, day=3))
    assert [w.start for w in windows] == [t(0), t(2), t(2, day=2)]
    assert windows[-1].end == t(0, day=3)


def test_sliding_windows_overlap() -> None:
    config = WindowConfig(window_type="sliding", window_size="1h", window_overlap="30m")
    windows = plan_windows(config, start=t(0), end=t(2))
    assert [(w.start, w.end) for w in windows] == [
        (t(0), t(1)),
        (t(0, 30), t(1, 30)),
        (t(1), t(2)),
    ]


def test_global_window_is_the_whole_range() -> None:
    windows = plan_windows({"window_type": "global"}, start=t(0), end=t(5))
    assert [(w.start, w.end) for w in windows] == [(t(0), t(5))]


def test_next_run_starts_at_the_watermark_minus_the_lookback() -> None:
    # GIVEN a stored watermark at 10:00 and a 30m lookback
    config = WindowConfig(
        window_type="fixed", window_size="1h", start="2026-01-01T00:00:00Z", lookback="30m"
    )
    # WHEN the next run plans its windows
    windows = plan_windows(config, watermark="2026-01-01T10:00:00Z", end=t(12))
    # THEN it starts at 09:30, not at the configured first start
    assert range_start(config, "2026-01-01T10:00:00Z") == t(9, 30)
    assert windows[0].start == t(9, 30)
    assert windows[-1].end == t(12)
    # and without a watermark from window.start
    assert plan_windows(config, end=t(2))[0].start == t(0)


def test_window_params_iso_and_epoch() -> None:
    iso = WindowConfig(window_type="global", start_param="since", end_param="until")
    window = plan_windows(iso, start=t(0), end=t(1))[0]
    assert window.params(iso) == {"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T01:00:00Z"}
    epoch = WindowConfig(window_type="global", time_format="epoch")
    assert window.params(epoch) == {"start": 1767225600, "end": 1767229200}


def test_sessions_split_where_the_gap_is_exceeded() -> None:
    records = [
        {"id": 3, "at": "2026-01-01T00:50:00Z"},
        {"id": 1, "at": "2026-01-01T00:00:00Z"},
        {"id": 2, "at": "2026-01-01T00:20:00Z"},
        {"id": 4, "at": "2026-01-01T02:00:00Z"},
    ]
    config = WindowConfig(window_type="session", session_gap="30m", timestamp_field="at")
    sessions = sessions_for(config, records)
    assert [[r["id"] for r in s.records] for s in sessions] == [[1, 2, 3], [4]]
    assert (sessions[0].start, sessions[0].end) == (t(0), t(0, 50))


def test_session_record_without_the_field_is_named() -> None:
    with pytest.raises(ExtractConfigError, match="record 1 has no 'at'"):
        group_sessions(
            [{"at": "2026-01-01T00:00:00Z"}, {"id": 2}],
            gap=timedelta(minutes=5),
            timestamp_field="at",
        )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"window_type": "fixed", "window_size": "1 hour"}, "window_size: .*not a duration"),
        ({"window_type": "fixed", "window_size": "0m"}, "positive duration"),
        ({"window_type": "fixed", "window_size": "-5m"}, "window_size"),
        ({"window_type": "fixed"}, "needs window_size"),
        ({"window_type": "sliding", "window_size": "1h", "window_overlap": "1h"}, "overlap"),
        ({"window_type": "session", "session_gap": "30m"}, "timestamp_field"),
        ({"window_type": "tumbling", "window_size": "1h"}, "window_type"),
        ({"window_type": "fixed", "window_size": "1h", "size": "1h"}, "size: unknown key"),
    ],
)
def test_bad_window_configs_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ExtractConfigError, match=message) as caught:
        parse_config(WindowConfig, data, where="window")
    assert isinstance(caught.value, ConfigurationError)


def test_durations_accept_the_usual_units() -> None:
    config = WindowConfig(window_type="session", session_gap="7d", timestamp_field="at")
    assert config.session_gap == timedelta(days=7)
    assert WindowConfig(window_type="fixed", window_size="30m").window_size == timedelta(minutes=30)


def test_parallel_config_checks_the_strategy_and_window() -> None:
    assert ParallelConfig(strategy="KNOWN_PAGES").strategy == "known_pages"
    with pytest.raises(ExtractConfigError, match="needs a window"):
        parse_config(ParallelConfig, {"strategy": "TIME_WINDOWS"})
    with pytest.raises(ExtractConfigError, match="session windows group records"):
        parse_config(
            ParallelConfig,
            {
                "strategy": "time_windows",
                "window": {"window_type": "session", "session_gap": "5m", "timestamp_field": "a"},
            },
        )
    with pytest.raises(ExtractConfigError, match="strategy"):
        parse_config(ParallelConfig, {"strategy": "random_pages"})
