"""The extraction engine's pure parts: token bucket, Retry-After, selectors, paginators."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from apix_core.extract.config import PaginationConfig
from apix_core.extract.exceptions import ExtractConfigError, PaginationLoopError
from apix_core.extract.paginators import Page, PageRequest, Paginator
from apix_core.extract.ratelimit import TokenBucket
from apix_core.extract.retry import parse_retry_after
from apix_core.extract.selectors import compile_path, default_records


def test_token_bucket_spaces_requests_evenly() -> None:
    # GIVEN 10 requests/s and ten callers arriving at the same instant
    bucket = TokenBucket(10, burst=1)
    waits = [bucket.reserve(100.0) for _ in range(10)]
    # THEN each waits one interval more than the one before
    assert waits == pytest.approx([i * 0.1 for i in range(10)])


def test_token_bucket_has_no_window_edge_burst() -> None:
    # GIVEN a bucket idle for a long time (a fixed window would have reset its counter)
    bucket = TokenBucket(5, burst=2)
    # WHEN 12 callers arrive at t=0.99 and 12 more at t=1.01
    waits = [bucket.reserve(0.99) for _ in range(12)] + [bucket.reserve(1.01) for _ in range(12)]
    starts = sorted([0.99 + w for w in waits[:12]] + [1.01 + w for w in waits[12:]])
    # THEN no one-second window holds more than rate + burst requests
    for i, start in enumerate(starts):
        assert sum(1 for t in starts[i:] if t - start < 1.0) <= 5 + 2


def test_token_bucket_hold_resumes_without_a_burst() -> None:
    bucket = TokenBucket(10, burst=3)
    bucket.hold_until(50.0)
    assert bucket.reserve(49.0) == pytest.approx(1.0)  # nothing before the end of the pause


def test_retry_after_parsing() -> None:
    now = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Mon, 30 Nov 2026 12:00:05 GMT", now) == 5.0
    assert parse_retry_after("Mon, 30 Nov 2026 11:59:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data.items", [1, 2]),
        ("$.data.items[*]", [1, 2]),
        ("data.items[1]", 2),
        ("data.items[5]", None),
        ("rows[0].id", "r"),
        ("['odd.key']", "x"),
        ("missing.deep", None),
        ("$", None),
    ],
)
def test_selectors(path: str, expected: Any) -> None:
    body = {"data": {"items": [1, 2]}, "rows": [{"id": "r"}], "odd.key": "x"}
    assert compile_path(path)(body) == (body if path == "$" else expected)


def test_bad_selector_is_a_config_error() -> None:
    with pytest.raises(ExtractConfigError, match="invalid selector"):
        compile_path("data..[")


def test_default_records() -> None:
    assert default_records([1]) == [1]
    assert default_records({"meta": {}, "results": [1, 2]}) == [1, 2]
    assert default_records({"id": 1}) == [{"id": 1}]


def _page(records: list[Any], body: Any = None, number: int = 1) -> Page:
    return Page(body or {}, {}, records, number, "https://api/x")


def test_paginator_stops_and_loop_guard() -> None:
    paginator = Paginator(PaginationConfig(type="cursor", cursor_path="next"))
    first = paginator.first(PageRequest("https://api/x"))
    second = paginator.next(first, _page([1], {"next": "abc"}))
    assert second is not None and second.params == {"cursor": "abc"}
    with pytest.raises(PaginationLoopError, match="cursor='abc'") as info:
        paginator.next(second, _page([1], {"next": "abc"}, 2))
    assert info.value.token == "abc"
    bounded = Paginator(PaginationConfig(type="page_number", max_pages=1))
    assert bounded.next(bounded.first(PageRequest("https://api/x")), _page([1])) is None
