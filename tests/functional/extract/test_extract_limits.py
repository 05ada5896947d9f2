"""Retries, Retry-After, rate limits and concurrency against the loopback API."""

from __future__ import annotations

import time
from typing import Any

import pytest
from extract_api_server import ApiServer

from apix_core.errors import PermanentError, TransientError
from apix_core.extract import (
    ExtractHTTPStatusError,
    ExtractRequestError,
    HttpExtractor,
    MalformedResponseError,
)

FAST_RETRY = {"max_attempts": 3, "initial_backoff": 0.01, "max_backoff": 0.05, "jitter": 0.01}


def _extractor(base_url: str, path: str, **extra: Any) -> HttpExtractor:
    config: dict[str, Any] = {"base_url": base_url, "path": path, "retry": FAST_RETRY}
    return HttpExtractor({**config, **extra})


async def test_flaky_5xx_is_retried_until_it_succeeds(api: ApiServer) -> None:
    # GIVEN an endpoint that fails twice with 503, then answers
    extractor = _extractor(api.url, "/flaky", params={"fail": 2, "key": "a"})
    # WHEN extracted THEN the records arrive after two retries
    assert len(await extractor.extract()) == 2
    assert len(api.requests_to("/flaky")) == 3
    assert extractor.last_client is not None and extractor.last_client.retrier.retries == 2


async def test_last_attempt_raises_a_typed_error_naming_url_and_status(api: ApiServer) -> None:
    extractor = _extractor(api.url, "/status/500", params={"q": "x"})
    with pytest.raises(ExtractRequestError) as info:
        await extractor.extract()
    error = info.value
    assert str(error) == (
        f"request to {api.url}/status/500 failed after 3 attempts: HTTP 500 Internal Server Error"
    )
    assert (error.status, error.attempts, error.url) == (500, 3, f"{api.url}/status/500")
    assert isinstance(error, TransientError)
    assert len(api.log) == 3


async def test_a_client_error_is_not_retried(api: ApiServer) -> None:
    with pytest.raises(ExtractHTTPStatusError, match=r"/status/404 answered HTTP 404") as info:
        await _extractor(api.url, "/status/404").extract()
    assert isinstance(info.value, PermanentError) and info.value.status == 404
    assert len(api.log) == 1


async def test_malformed_json_is_a_permanent_typed_error(api: ApiServer) -> None:
    with pytest.raises(MalformedResponseError, match="is not valid JSON") as info:
        await _extractor(api.url, "/malformed").extract()
    assert isinstance(info.value, PermanentError)
    assert len(api.log) == 1  # retrying cannot fix a body


async def test_a_json_scalar_is_not_taken_for_an_empty_page(api: ApiServer) -> None:
    with pytest.raises(MalformedResponseError, match="is a JSON str, not records"):
        await _extractor(api.url, "/scalar").extract()


async def test_one_attempt_means_no_retry(api: ApiServer) -> None:
    extractor = _extractor(api.url, "/status/503", retry={"max_attempts": 1})
    with pytest.raises(ExtractRequestError, match=r"failed after 1 attempt: HTTP 503"):
        await extractor.extract()
    assert len(api.log) == 1


async def test_timeouts_are_retried_then_reported(api: ApiServer) -> None:
    extractor = _extractor(api.url, "/slow", params={"delay": 1.0}, timeout=0.2)
    with pytest.raises(ExtractRequestError, match=r"/slow failed after 3 attempts: timed out"):
        await extractor.extract()
    assert len(api.requests_to("/slow")) == 3


async def test_connection_errors_are_retried_then_reported(api: ApiServer) -> None:
    with pytest.raises(ExtractRequestError, match=r"/drop failed after 3 attempts: connection"):
        await _extractor(api.url, "/drop").extract()
    assert len(api.requests_to("/drop")) == 3
    port = api.port
    api.stop()  # nothing listens any more
    with pytest.raises(ExtractRequestError, match="connection error"):
        await _extractor(f"http://127.0.0.1:{port}", "/pages").extract()


@pytest.mark.parametrize("form", ["seconds", "date"])
async def test_retry_after_is_honoured_in_both_forms(api: ApiServer, form: str) -> None:
    # GIVEN a 429 asking to wait 1 s (as delta-seconds, or as an HTTP date)
    extractor = _extractor(api.url, "/ratelimited", params={"key": form, "form": form})
    started = time.monotonic()
    # WHEN extracted
    records = await extractor.extract()
    # THEN the retry waited for it, then succeeded
    hits = api.requests_to("/ratelimited")
    assert len(records) == 2 and len(hits) == 2
    assert hits[1].at - hits[0].at >= 0.9
    assert time.monotonic() - started < 4


async def test_retry_after_pauses_every_task_of_the_extraction(api: ApiServer) -> None:
    # GIVEN one extraction of two inputs: one endpoint answers 429 (Retry-After: 1) once,
    # the other is a 20-page cursor endpoint (50 ms a page)
    extractor = _extractor(
        api.url,
        "/{endpoint}",
        params={"key": "pause", "total": 200, "delay": "{delay}"},
        pagination={"type": "cursor", "cursor_path": "paging.next"},
    )
    # WHEN both run concurrently
    records = await extractor.extract(
        [{"endpoint": "ratelimited", "delay": 0}, {"endpoint": "cursor", "delay": 0.05}]
    )
    # THEN the cursor task sent nothing while the budget was paused
    assert len(records) == 2 + 200
    limited_at = api.requests_to("/ratelimited")[0].at
    during = [r.at - limited_at for r in api.requests_to("/cursor")]
    assert not [t for t in during if 0.1 < t < 0.9], during
    assert extractor.last_client is not None and extractor.last_client.budget.pauses == 1


async def test_retry_after_longer_than_allowed_fails_at_once_with_the_delay(
    api: ApiServer,
) -> None:
    extractor = _extractor(
        api.url,
        "/ratelimited",
        params={"key": "long", "wait": 120},
        retry={**FAST_RETRY, "max_retry_after": 10},
    )
    with pytest.raises(
        ExtractRequestError, match=r"asks to wait 120s, more than max_retry_after"
    ) as info:
        await extractor.extract()
    assert info.value.retry_after == pytest.approx(120)
    assert len(api.log) == 1


async def test_rate_limit_holds_across_tasks_without_window_edge_bursts(api: ApiServer) -> None:
    # GIVEN 20 requests/s shared by three concurrent inputs (40 requests in all)
    extractor = _extractor(
        api.url,
        "/cursor",
        params={"total": "{total}"},
        pagination={"type": "cursor", "cursor_path": "paging.next"},
        rate_limit={"requests_per_second": 20, "max_concurrent": 10},
    )
    # WHEN extracted
    records = await extractor.extract([{"total": 130}, {"total": 130}, {"total": 140}])
    # THEN no window saw more than rate × length + 1 requests (+1: the server thread may stamp
    # two arrivals late and together on a loaded machine) — a fixed window resetting its
    # counter lets up to twice the rate through around its edge
    assert len(records) == 400
    times = sorted(r.at for r in api.log)
    assert len(times) == 40
    for i, start in enumerate(times):
        for window in (0.5, 1.0):
            inside = sum(1 for t in times[i:] if t - start < window)
            assert inside <= 20 * window + 2, (window, inside)
    assert times[-1] - times[0] >= 39 / 20 * 0.95


async def test_max_concurrent_caps_requests_in_flight(api: ApiServer) -> None:
    # GIVEN six inputs on a 300 ms endpoint and at most two requests in flight
    extractor = _extractor(
        api.url, "/slow", params={"delay": 0.3}, rate_limit={"max_concurrent": 2}
    )
    started = time.monotonic()
    records = await extractor.extract([{}] * 6)
    # THEN they ran two at a time: three rounds
    assert len(records) == 6
    assert time.monotonic() - started >= 0.85
    arrivals = sorted(r.at for r in api.log)
    assert all(arrivals[i + 2] - arrivals[i] >= 0.25 for i in range(len(arrivals) - 2))
