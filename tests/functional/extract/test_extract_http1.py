"""The lean HTTP/1.1 path of the extraction client, against the real test API on 127.0.0.1:
framing (chunked, gzip, deflate, Connection: close, a server that hangs up), what it hands to
httpx (redirects, cookies, auth flows), and queries written exactly as httpx writes them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from extract_api_server import ApiServer

from apix_core.extract import HttpExtractor
from apix_core.extract.http1 import encode_params


def _config(api: ApiServer, mode: str, **extra: Any) -> dict[str, Any]:
    return {
        "base_url": api.url,
        "path": "/framing",
        "params": {"mode": mode, "total": 25},
        "data_selector": "data",
        "pagination": {"type": "page_number", "total_pages_path": "meta.total_pages"},
        **extra,
    }


@pytest.mark.parametrize("mode", ["plain", "gzip", "deflate", "chunked", "close", "hangup"])
async def test_every_framing_gives_every_record_without_httpx(api: ApiServer, mode: str) -> None:
    # GIVEN an API answering in one HTTP/1.1 framing (3 pages: 10 + 10 + 5 records)
    extractor = HttpExtractor(_config(api, mode))

    # WHEN everything is extracted
    records = await extractor.extract()

    # THEN every record arrives once, in order, and httpx was never needed
    assert [r["id"] for r in records] == list(range(25))
    client = extractor.last_client
    assert client is not None and client._http is None and client.closed
    assert api.hits["/framing"] == 3


async def test_a_connection_is_kept_alive_between_pages(api: ApiServer) -> None:
    # GIVEN an API that keeps connections open
    extractor = HttpExtractor(_config(api, "plain", params={"mode": "plain", "total": 95}))

    # WHEN ten pages are extracted
    records = await extractor.extract()

    # THEN all ten went over one connection (the same client address and port)
    assert len(records) == 95
    assert len({r.peer for r in api.requests_to("/framing")}) == 1
    assert extractor.last_client is not None and extractor.last_client.requests == 10


async def test_a_redirect_is_followed_by_httpx(api: ApiServer) -> None:
    # GIVEN an API that redirects every page (302 to the same page)
    extractor = HttpExtractor(_config(api, "redirect"))

    # WHEN everything is extracted
    records = await extractor.extract()

    # THEN httpx followed the redirects and every record arrived; after the first redirect
    # the lean path stood aside (one request of page 1 was sent twice)
    assert [r["id"] for r in records] == list(range(25))
    client = extractor.last_client
    assert client is not None and client._http is not None and client.pool is None
    modes = [r.query["mode"] for r in api.requests_to("/framing")]
    assert modes.count("redirect") == 4 and modes.count("plain") == 3


async def test_a_session_cookie_is_kept_by_httpx_from_then_on(api: ApiServer) -> None:
    # GIVEN an API whose first page sets a session cookie that later pages require
    extractor = HttpExtractor(_config(api, "cookie"))

    # WHEN everything is extracted
    records = await extractor.extract()

    # THEN the cookie went back on pages 2 and 3 (no 401), and every record arrived
    assert [r["id"] for r in records] == list(range(25))
    later = [r for r in api.requests_to("/framing") if r.query.get("page") != "1"]
    assert later and all("session=s1" in r.headers.get("cookie", "") for r in later)


async def test_static_auth_goes_on_the_lean_path(api: ApiServer) -> None:
    # GIVEN an API key sent as a query parameter and a bearer token, configured separately
    query_key = HttpExtractor(
        {
            "base_url": api.url,
            "path": "/echo",
            "auth": {"type": "api_key", "name": "key", "value": "k-123", "location": "query"},
        }
    )
    bearer = HttpExtractor(
        {"base_url": api.url, "path": "/echo", "auth": {"type": "bearer", "token": "t-456"}}
    )

    # WHEN each extracts
    [echo_query] = await query_key.extract()
    [echo_bearer] = await bearer.extract()

    # THEN the key and the token reached the server, without httpx
    assert echo_query["query"] == {"key": "k-123"}
    assert echo_bearer["headers"]["authorization"] == "Bearer t-456"
    for extractor in (query_key, bearer):
        assert extractor.last_client is not None and extractor.last_client._http is None


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/echo", {"q": "a b&c=d", "flag": True, "off": False, "n": 3}),
        ("/echo?fixed=1&page=9", {"page": 2, "tags": ["x", "y z"]}),  # params replace the query
        ("/echo?a=%2F", {"é": "ü"}),
    ],
)
async def test_the_query_is_written_as_httpx_writes_it(
    api: ApiServer, path: str, params: dict[str, Any]
) -> None:
    # GIVEN a URL (maybe with its own query) and parameters of every kind
    extractor = HttpExtractor({"base_url": api.url, "path": path, "params": params})

    # WHEN one request goes out on the lean path, and the same through httpx
    await extractor.extract()
    async with httpx.AsyncClient() as client:
        await client.get(f"{api.url}{path}", params=params)

    # THEN the server saw the same request target twice
    lean, reference = (r.raw_target for r in api.requests_to("/echo"))
    assert lean == reference
    assert encode_params({"b": True, "n": None}) == str(httpx.QueryParams({"b": True, "n": None}))


async def test_a_header_the_lean_path_cannot_write_as_is_goes_through_httpx(
    api: ApiServer,
) -> None:
    # GIVEN a configured Host header (it frames the message: httpx places it)
    extractor = HttpExtractor(
        {"base_url": api.url, "path": "/echo", "headers": {"Host": "api.example.test"}}
    )

    # WHEN it extracts
    [echo] = await extractor.extract()

    # THEN httpx sent the request, with that one Host header
    assert echo["headers"]["host"] == "api.example.test"
    client = extractor.last_client
    assert client is not None and client.pool is None and client._http is not None


async def test_a_query_key_is_merged_into_next_urls_as_httpx_merges_it(api: ApiServer) -> None:
    # GIVEN next-URL pagination (the next URL carries its own query) and an API key in the query
    extractor = HttpExtractor(
        {
            "base_url": api.url,
            "path": "/next-url",
            "params": {"total": 25},
            "data_selector": "records",
            "pagination": {"type": "next_url", "next_url_path": "links.next"},
            "auth": {"type": "api_key", "name": "key", "value": "k-1", "location": "query"},
        }
    )

    # WHEN everything is extracted
    records = await extractor.extract()

    # THEN every page was followed (its own query kept) and every request carried the key
    assert [r["id"] for r in records] == list(range(25))
    seen = api.requests_to("/next-url")
    assert [r.query.get("page", "1") for r in seen] == ["1", "2", "3"]
    assert all(r.query["key"] == "k-1" and r.query["total"] == "25" for r in seen)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_json_body_goes_through_httpx_with_the_configured_content_type(
    api: ApiServer, method: str
) -> None:
    # GIVEN an endpoint called with a JSON body and a configured Content-Type
    extractor = HttpExtractor(
        {
            "base_url": api.url,
            "path": "/echo",
            "method": method,
            "json_body": {"q": "é"},
            "headers": {"Content-Type": "application/vnd.api+json"},
        }
    )

    # WHEN it extracts
    [echo] = await extractor.extract()

    # THEN httpx sent it (the lean path serves bodiless GETs only): one Content-Type, the
    # configured one, and the body as httpx encodes json=
    client = extractor.last_client
    assert client is not None and client._http is not None
    assert echo["headers"]["content-type"] == "application/vnd.api+json"
    [request] = api.requests_to("/echo")
    assert request.method == method
    assert request.body == '{"q":"é"}'.encode()
