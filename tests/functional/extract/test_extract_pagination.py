"""HttpExtractor against the loopback API: every pagination style, stops, and the loop guard."""

from __future__ import annotations

from typing import Any

import pytest
from extract_api_server import ApiServer

from apix_core.extract import HttpExtractor, PaginationLoopError
from apix_core.extract.paginators import next_link


def _extractor(
    api: ApiServer, path: str, pagination: dict[str, Any], **extra: Any
) -> HttpExtractor:
    return HttpExtractor({"base_url": api.url, "path": path, "pagination": pagination, **extra})


def _ids(records: list[dict[str, Any]]) -> list[int]:
    return [r["id"] for r in records]


@pytest.mark.parametrize(
    ("path", "pagination", "selector"),
    [
        ("/pages", {"type": "page_number", "page_size": 10}, "data"),
        ("/pages", {"type": "page_number", "total_pages_path": "meta.total_pages"}, "$.data[*]"),
        ("/pages", {"type": "page_number", "has_more_path": "meta.has_more"}, "data"),
        ("/pages", {"type": "page_number", "total_path": "meta.total"}, "data"),
        ("/pages", {"type": "page_number"}, "data"),  # stops on the empty page after the last
        ("/offset", {"type": "offset", "limit": 10}, "results"),
        ("/offset", {"type": "offset", "limit": 10, "total_path": "count"}, None),
        ("/cursor", {"type": "cursor", "cursor_path": "paging.next"}, "items"),
        ("/cursor-header", {"type": "cursor", "cursor_header": "X-Next-Cursor"}, None),
        ("/link", {"type": "link_header"}, None),
        ("/next-url", {"type": "next_url", "next_url_path": "links.next"}, "records"),
    ],
)
async def test_every_style_returns_every_record_once(
    api: ApiServer, path: str, pagination: dict[str, Any], selector: str | None
) -> None:
    # GIVEN 95 records served 10 per page in the API's style
    extractor = _extractor(api, path, pagination, data_selector=selector, params={"total": 95})
    # WHEN the extractor runs
    records = await extractor.extract()
    # THEN every record arrives exactly once, in order
    assert _ids(records) == list(range(95))
    assert len(api.log) <= 11  # 10 pages (+1 empty page when nothing else says "last")


async def test_single_page(api: ApiServer) -> None:
    records = await _extractor(api, "/single", {"type": "single_page"}).extract()
    assert _ids(records) == [0, 1, 2] and len(api.log) == 1


async def test_max_pages_bounds_the_extraction(api: ApiServer) -> None:
    extractor = _extractor(
        api, "/cursor", {"type": "cursor", "cursor_path": "paging.next", "max_pages": 3}
    )
    records = await extractor.extract({})
    assert _ids(records) == list(range(30)) and len(api.log) == 3


async def test_stream_yields_one_batch_per_page(api: ApiServer) -> None:
    extractor = _extractor(
        api, "/pages", {"type": "page_number", "page_size": 10}, data_selector="data"
    )
    sizes = [len(batch) async for batch in extractor.extract_stream()]
    assert sizes == [10] * 9 + [5]


@pytest.mark.parametrize(
    ("path", "pagination"),
    [
        ("/loop-cursor", {"type": "cursor", "cursor_path": "paging.next"}),
        ("/loop-link", {"type": "link_header"}),
    ],
)
async def test_a_repeated_cursor_or_link_fails_clearly(
    api: ApiServer, path: str, pagination: dict[str, Any]
) -> None:
    # GIVEN an API whose next token (or next link) never changes
    extractor = _extractor(api, path, pagination, data_selector=None)
    # WHEN extracted THEN a typed error after the repeat, not an endless loop
    with pytest.raises(PaginationLoopError, match="pagination loop") as info:
        await extractor.extract()
    assert len(api.log) <= 3
    assert path in info.value.url
    assert not info.value.retryable


def test_link_header_parsing_follows_rfc_8288() -> None:
    header = (
        '<https://a/p?page=1>; rel="first", <https://a/p?page=3>; title="x, y"; '
        'rel="nofollow next", <https://a/p?page=9>; rel=last'
    )
    assert next_link(header) == "https://a/p?page=3"
    assert next_link(header, "last") == "https://a/p?page=9"
    assert next_link('<https://a/p?page=1>; rel="prev"') is None
    assert next_link("garbage") is None


async def test_request_templates_fill_path_and_query_from_inputs(api: ApiServer) -> None:
    # GIVEN a path and parameter template
    extractor = HttpExtractor(
        {
            "base_url": api.url,
            "path": "/users/{user_id}/repos",
            "params": {"since": "{since}", "per_page": 50, "fixed": "v-{user_id}"},
            "data_selector": "data",
        }
    )
    # WHEN extracted for two users (two inputs, paginated concurrently)
    records = await extractor.extract(
        [{"user_id": "ada lovelace", "since": 7}, {"user_id": "bob", "since": 9}]
    )
    # THEN each request carried its input's values, URL-encoded in the path
    users = sorted({(r["user"], r["q"]["since"], r["q"]["fixed"]) for r in records})
    assert users == [("ada lovelace", "7", "v-ada lovelace"), ("bob", "9", "v-bob")]
    assert {r.path for r in api.log} == {"/users/ada%20lovelace/repos", "/users/bob/repos"}


async def test_a_missing_template_input_names_the_placeholder(api: ApiServer) -> None:
    from apix_core.extract import ExtractConfigError

    extractor = HttpExtractor({"base_url": api.url, "path": "/users/{user_id}/repos"})
    with pytest.raises(ExtractConfigError, match=r"needs input 'user_id'.*inputs: org"):
        await extractor.extract({"org": "x"})
    assert api.log == []


async def test_the_http_extractor_is_registered_by_name(api: ApiServer) -> None:
    from apix_core.extract import ExtractorFactory

    # GIVEN only a name and a mapping, as a pipeline file gives them
    extractor = ExtractorFactory.create("http", {"base_url": api.url, "path": "/single"})
    # THEN the built-in HTTP extractor is loaded on first use
    assert isinstance(extractor, HttpExtractor)
    assert len(await extractor.extract()) == 3
