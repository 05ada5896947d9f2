"""Streaming: one batch per page, fetching held back by a slow consumer, resumable position."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

from extract_api_server import ApiServer

from apix_core.extract import HttpExtractor


def _pages(api: ApiServer, **extra: Any) -> HttpExtractor:
    return HttpExtractor(
        {
            "base_url": api.url,
            "path": "/pages",
            "params": {"total": 95},
            "data_selector": "data",
            "pagination": {"type": "page_number", "page_size": 10},
            **extra,
        }
    )


async def test_a_slow_consumer_holds_fetching_back(api: ApiServer) -> None:
    # GIVEN a stream buffering at most two pages
    extractor = _pages(api, stream_buffer_pages=2)
    seen = 0
    async with aclosing(extractor.extract_stream()) as stream:
        async for batch in stream:
            seen += len(batch)
            if seen == 10:
                # WHEN the consumer stalls on its first page
                await asyncio.sleep(0.3)
                # THEN the fetcher stopped: 2 pages buffered + 1 waiting to be queued
                assert len(api.log) <= 4
    assert seen == 95 and len(api.log) == 10


async def test_stopping_early_stops_fetching_and_closes_the_client(api: ApiServer) -> None:
    extractor = _pages(api, stream_buffer_pages=1)
    async with aclosing(extractor.extract_stream()) as stream:
        async for _ in stream:
            break
    await asyncio.sleep(0.1)  # a request already on the wire may still land
    fetched = len(api.log)
    await asyncio.sleep(0.3)
    assert len(api.log) == fetched <= 3
    assert extractor.last_client is not None and extractor.last_client.closed


async def test_iter_pages_gives_a_position_to_resume_from(api: ApiServer) -> None:
    # GIVEN an extraction stopped after three pages, keeping where it stood
    extractor = _pages(api)
    first: list[Any] = []
    async with aclosing(extractor.iter_pages()) as pages:
        async for page in pages:
            first += page.records
            if page.number == 3:
                position = page.next_request
                break
    assert position is not None and position.params["page"] == 4
    # WHEN a new extractor (a later invocation) resumes from it
    rest = [r async for p in _pages(api).iter_pages(resume=position) for r in p.records]
    # THEN together they read every record once
    assert [r["id"] for r in first + rest] == list(range(95))
