"""Parallel strategies on the loopback API: one concurrency cap, one rate budget, order, and
failed tasks retried alone."""

from __future__ import annotations

from typing import Any

import pytest
from extract_api_server import ApiServer

from apix_core.extract.exceptions import ExtractConfigError, ExtractRequestError
from apix_core.extract.parallel import ParallelExtractor


def http(api: ApiServer, path: str, **extra: Any) -> dict[str, Any]:
    return {
        "base_url": api.url,
        "path": path,
        "retry": {"max_attempts": 1},
        **extra,
    }


def peak_in_flight(api: ApiServer, path: str, delay: float) -> int:
    """Most requests the server had open at once (each took ``delay`` seconds)."""
    starts = sorted(r.at for r in api.requests_to(path))
    return max(sum(1 for s in starts if t <= s < t + delay * 0.9) for t in starts)


async def test_known_pages_in_order_under_the_concurrency_cap(api: ApiServer) -> None:
    # GIVEN 20 pages of 10, each answered after 50 ms, fetched with at most 4 in flight
    extractor = ParallelExtractor(
        http(
            api,
            "/pp",
            params={"total": 200, "delay": 0.05},
            data_selector="data",
            pagination={
                "type": "page_number",
                "page_size": 10,
                "total_pages_path": "meta.total_pages",
            },
        ),
        {"strategy": "KNOWN_PAGES", "max_concurrency": 4},
    )
    # WHEN extracted
    records = await extractor.extract()
    # THEN every record comes once and in page order, the first page told the page count,
    # and the server never saw more than 4 requests at once — but did see 4
    assert [r["id"] for r in records] == list(range(200))
    assert extractor.report.tasks == 20 and extractor.report.pages == 20
    assert len(api.requests_to("/pp")) == 20
    assert peak_in_flight(api, "/pp", 0.05) == 4


async def test_calculated_offsets_count_first_then_parallel(api: ApiServer) -> None:
    extractor = ParallelExtractor(
        http(
            api,
            "/offset",
            params={"total": 95},
            data_selector="results",
            pagination={"type": "offset", "limit": 10},
        ),
        {"strategy": "calculated_offsets", "count_path": "count", "count_params": {"limit": 1}},
    )
    records = await extractor.extract()
    assert [r["id"] for r in records] == list(range(95))
    seen = api.requests_to("/offset")
    # the count request first (limit=1), then one request per offset
    assert seen[0].query["limit"] == "1" and "offset" not in seen[0].query
    assert sorted(int(r.query["offset"]) for r in seen[1:]) == list(range(0, 95, 10))


async def test_time_windows_paginate_inside_each_window(api: ApiServer) -> None:
    # GIVEN 4 hours of one event a minute, fetched as 1h windows with pages of 25
    extractor = ParallelExtractor(
        http(
            api,
            "/events",
            params={"per_page": 25},
            data_selector="data",
            pagination={
                "type": "page_number",
                "page_size_param": None,
                "total_pages_path": "meta.total_pages",
            },
        ),
        {
            "strategy": "time_windows",
            "max_concurrency": 3,
            "window": {
                "window_type": "fixed",
                "window_size": "1h",
                "start": "2026-01-01T00:00:00Z",
                "end": "2026-01-01T04:00:00Z",
            },
        },
    )
    records = await extractor.extract()
    # THEN 240 events in time order, 4 windows × 3 pages (25 + 25 + 10)
    assert [r["id"] for r in records] == list(range(240))
    assert extractor.report.tasks == 4 and extractor.report.pages == 12
    assert {r.query["start"] for r in api.requests_to("/events")} == {
        f"2026-01-01T0{h}:00:00Z" for h in range(4)
    }


async def test_a_failing_page_is_retried_alone(api: ApiServer) -> None:
    # GIVEN page 3 fails once (the client does not retry: max_attempts 1)
    extractor = ParallelExtractor(
        http(
            api,
            "/pp",
            params={"total": 100, "fail_page": "3", "fail_times": 1},
            data_selector="data",
            pagination={"type": "page_number", "page_size": 10},
        ),
        {"strategy": "known_pages", "total_pages": 10, "max_task_attempts": 2},
    )
    records = await extractor.extract()
    # THEN the task is retried once by itself and nothing else is fetched twice
    assert [r["id"] for r in records] == list(range(100))
    pages = [r.query["page"] for r in api.requests_to("/pp")]
    assert pages.count("3") == 2 and len(pages) == 11
    assert extractor.report.task_retries == 1 and not extractor.report.failed


async def test_a_failing_window_is_retried_alone(api: ApiServer) -> None:
    extractor = ParallelExtractor(
        http(
            api,
            "/events",
            params={"per_page": 30, "fail_start": "2026-01-01T01:00:00Z", "fail_times": 1},
            data_selector="data",
            pagination={
                "type": "page_number",
                "page_size_param": None,
                "total_pages_path": "meta.total_pages",
            },
        ),
        {
            "strategy": "time_windows",
            "window": {
                "window_type": "fixed",
                "window_size": "1h",
                "start": "2026-01-01T00:00:00Z",
                "end": "2026-01-01T03:00:00Z",
            },
        },
    )
    records = await extractor.extract()
    assert [r["id"] for r in records] == list(range(180))
    assert extractor.report.task_retries == 1


async def test_error_policy_continue_reports_the_failed_page(api: ApiServer) -> None:
    extractor = ParallelExtractor(
        http(
            api,
            "/pp",
            params={"total": 50, "fail_page": "2", "fail_times": 5},
            data_selector="data",
            pagination={"type": "page_number", "page_size": 10},
        ),
        {"strategy": "known_pages", "total_pages": 5, "on_error": "continue"},
    )
    records = await extractor.extract()
    assert [r["id"] for r in records] == [*range(10), *range(20, 50)]
    (failure,) = extractor.report.failed
    assert failure.task.label == "page 2" and failure.attempts == 2
    assert isinstance(failure.error, ExtractRequestError) and failure.error.status == 503
    assert "503" in failure.reason


async def test_error_policy_fail_raises_the_typed_error(api: ApiServer) -> None:
    extractor = ParallelExtractor(
        http(
            api,
            "/pp",
            params={"total": 50, "fail_page": "2", "fail_times": 5},
            data_selector="data",
            pagination={"type": "page_number", "page_size": 10},
        ),
        {"strategy": "known_pages", "total_pages": 5},
    )
    with pytest.raises(ExtractRequestError, match="/pp"):
        await extractor.extract()


async def test_a_429_pauses_every_task(api: ApiServer) -> None:
    # GIVEN a server allowing 5 answers per clock second, 429 + Retry-After: 1 beyond
    extractor = ParallelExtractor(
        {
            "base_url": api.url,
            "path": "/limited",
            "params": {"rps": 5, "total": 150},
            "data_selector": "data",
            "pagination": {"type": "page_number", "page_size": 10},
            "retry": {"max_attempts": 10, "initial_backoff": 0.05, "jitter": 0},
        },
        {"strategy": "known_pages", "total_pages": 15, "max_concurrency": 8},
    )
    records = await extractor.extract()
    # THEN nothing is lost, the budget was paused, and after each 429 no task sent anything
    # until the Retry-After had passed
    assert [r["id"] for r in records] == list(range(150))
    assert extractor.report.rate_limit_pauses >= 1
    log = api.requests_to("/limited")
    assert api.limited_rejections
    assert len(log) == 15 + len(api.limited_rejections)
    first_429 = api.limited_rejections[0]
    assert not [r for r in log if first_429 + 0.1 < r.at < first_429 + 0.9]


def test_strategy_needs_the_matching_pagination(api: ApiServer) -> None:
    with pytest.raises(ExtractConfigError, match=r"needs pagination\.type 'offset'"):
        ParallelExtractor(
            http(api, "/pp", pagination={"type": "page_number"}),
            {"strategy": "calculated_offsets", "count_path": "count"},
        )


async def test_known_pages_without_a_page_count_says_what_to_set(api: ApiServer) -> None:
    extractor = ParallelExtractor(
        http(api, "/pp", data_selector="data", pagination={"type": "page_number"}),
        {"strategy": "known_pages"},
    )
    with pytest.raises(ExtractConfigError, match="total_pages_path"):
        await extractor.extract()


async def test_unordered_output_comes_as_tasks_finish(api: ApiServer) -> None:
    # GIVEN four pages fetched with ordered: false
    extractor = ParallelExtractor(
        http(
            api,
            "/pp",
            params={"total": 40},
            data_selector="data",
            pagination={"type": "page_number", "page_size": 10},
        ),
        {"strategy": "known_pages", "total_pages": 4, "ordered": False},
    )
    labels = [r.task.label async for r in extractor.iter_results()]
    # THEN every page comes exactly once (order not promised)
    assert sorted(labels) == ["page 1", "page 2", "page 3", "page 4"]
    assert extractor.report.records == 40


def _speculative(api: ApiServer, total: int, speculative: int, **params: Any) -> ParallelExtractor:
    return ParallelExtractor(
        http(
            api,
            "/pp",
            params={"total": total, "delay": 0.05, **params},
            data_selector="data",
            pagination={
                "type": "page_number",
                "page_size": 10,
                "total_pages_path": "meta.total_pages",
            },
        ),
        {"strategy": "known_pages", "max_concurrency": 4, "speculative_pages": speculative},
    )


async def test_speculative_pages_go_out_with_the_first(api: ApiServer) -> None:
    # GIVEN 10 pages of 10 (50 ms each), 3 speculative pages beside the first, 4 in flight
    extractor = _speculative(api, 100, 3)
    # WHEN extracted
    records = await extractor.extract()
    # THEN pages 1-4 went out together (before the page count was known), every page was
    # requested once and every record comes once, in order
    assert [r["id"] for r in records] == list(range(100))
    requests = sorted(api.requests_to("/pp"), key=lambda r: r.at)
    assert sorted(int(r.query["page"]) for r in requests) == list(range(1, 11))
    first_four = requests[:4]
    assert {int(r.query["page"]) for r in first_four} == {1, 2, 3, 4}
    assert first_four[-1].at - first_four[0].at < 0.04  # one round trip, not four
    assert extractor.report.tasks == 10 and extractor.report.pages == 10


async def test_speculative_pages_past_the_end_are_dropped(api: ApiServer) -> None:
    # GIVEN 2 pages only (15 records), 3 speculative pages beside the first
    extractor = _speculative(api, 15, 3)
    # WHEN extracted
    records = await extractor.extract()
    # THEN only the 15 records of pages 1-2 come out; the pages past the end are not used
    assert [r["id"] for r in records] == list(range(15))
    assert extractor.report.tasks == 2 and extractor.report.failed == []


async def test_a_failing_speculative_page_is_retried_like_any_task(api: ApiServer) -> None:
    # GIVEN page 3 (speculative) answers 503 once
    extractor = _speculative(api, 100, 3, fail_page=3, fail_times=1)
    # WHEN extracted
    records = await extractor.extract()
    # THEN it was retried alone and every record comes once
    assert [r["id"] for r in records] == list(range(100))
    assert extractor.report.task_retries == 1
    assert [r.query["page"] for r in api.requests_to("/pp")].count("3") == 2
