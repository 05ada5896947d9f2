"""One HTTP client per extraction: httpx.AsyncClient (keep-alive, HTTP/2 when offered) under the
extraction's budget, retry policy and auth.

``ExtractClient.get_json`` is the one way a page is fetched: take a budget slot (rate,
concurrency, pauses), send, classify the answer — 2xx parsed as JSON; ``retry_statuses``,
timeouts and connection errors retried (a 429/503 ``Retry-After`` pauses the whole budget);
401 after the auth flow's one refresh is :class:`ExtractAuthError`; any other status a
:class:`ExtractHTTPStatusError`. Errors name the URL without its query (which may carry a key).
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from apix_core.extract.base import Closing
from apix_core.extract.config import ExtractorConfig
from apix_core.extract.exceptions import (
    ExtractAuthError,
    ExtractHTTPStatusError,
    MalformedResponseError,
)
from apix_core.extract.ratelimit import RequestBudget
from apix_core.extract.retry import Retrier, RetryableFailure, parse_retry_after

try:  # orjson parses pages several times faster; the stdlib is the fallback
    from orjson import JSONDecodeError as _JSONError
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is in the extract extra
    _loads = json.loads  # type: ignore[assignment]
    _JSONError = json.JSONDecodeError  # type: ignore[misc, assignment]


def _http2_available() -> bool:
    try:
        import h2  # noqa: F401
    except ImportError:
        return False
    return True


def public_url(url: str | httpx.URL) -> str:
    """``scheme://host/path`` — the query (possibly an API key) left out."""
    parts = urlsplit(str(url))
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def redacted_url(url: httpx.URL) -> str:
    """The URL with every query value masked (``?page=***&key=***``): names stay readable."""
    if not url.query:
        return str(url)
    names = "&".join(f"{name}=***" for name in dict.fromkeys(url.params.keys()))
    return f"{public_url(url)}?{names}"


class _RedactQueryValues(logging.Filter):
    """httpx logs every request's full URL at INFO; a query can carry an API key."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(
                redacted_url(a) if isinstance(a, httpx.URL) else a for a in record.args
            )
        return True


def _redact_httpx_logs() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactQueryValues) for f in logger.filters):
        logger.addFilter(_RedactQueryValues())


_redact_httpx_logs()


class Response:
    """A fetched page: status, headers, parsed JSON body, final URL."""

    __slots__ = ("body", "headers", "status", "url")

    def __init__(self, status: int, headers: httpx.Headers, body: Any, url: str) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.url = url


class ExtractClient(Closing):
    """The HTTP side of one extraction (use ``async with``)."""

    def __init__(
        self,
        config: ExtractorConfig,
        *,
        auth: httpx.Auth | None = None,
        budget: RequestBudget | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.budget = budget or RequestBudget(config.rate_limit)
        self.retrier = Retrier(config.retry)
        self.auth = auth
        connections = max(config.rate_limit.max_concurrent, config.batch.max_concurrent_batches)
        self.http = httpx.AsyncClient(
            headers=config.headers or None,
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            http2=config.http2 and _http2_available(),
            transport=transport,
            verify=_verify(config.verify),
            follow_redirects=True,
        )
        self.requests = 0

    async def close(self) -> None:
        await self.http.aclose()

    async def get_json(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        *,
        method: str = "GET",
        json_body: Any = None,
    ) -> Response:
        """The page at ``url`` with ``params``, parsed; retried as the config says."""
        shown = public_url(url)

        async def attempt() -> Response:
            async with self.budget.slot():
                self.requests += 1
                try:
                    response = await self.http.request(
                        method,
                        url,
                        params=params or None,
                        json=json_body,
                        auth=self.auth if self.auth is not None else httpx.USE_CLIENT_DEFAULT,
                    )
                except httpx.TimeoutException as exc:
                    raise RetryableFailure(
                        f"timed out ({type(exc).__name__}, timeout {self.config.timeout}s)",
                        url=shown,
                    ) from None
                except httpx.TransportError as exc:
                    raise RetryableFailure(
                        f"connection error ({type(exc).__name__}: {_reason(exc)})", url=shown
                    ) from None
            return self._classify(response, shown)

        return await self.retrier.call(attempt)

    def _classify(self, response: httpx.Response, shown: str) -> Response:
        status = response.status_code
        if 200 <= status < 300:
            try:
                body = _loads(response.content) if response.content else None
            except _JSONError as exc:
                raise MalformedResponseError(
                    f"response of {shown} (HTTP {status}) is not valid JSON: {exc}; "
                    f"it starts with {response.content[:60]!r}",
                    url=shown,
                ) from None
            return Response(status, response.headers, body, str(response.url))
        if status in self.config.retry.retry_statuses:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if (
                retry_after is not None
                and status in (429, 503)
                and retry_after <= self.config.retry.max_retry_after
            ):
                self.budget.pause(retry_after)
            what = f"HTTP {status} {response.reason_phrase}".rstrip()
            if retry_after is not None:
                what += f" (Retry-After {retry_after:.0f}s)"
            raise RetryableFailure(what, url=shown, status=status, retry_after=retry_after)
        if status == 401:
            raise ExtractAuthError(
                f"{shown} answered HTTP 401 Unauthorized"
                + (" even after refreshing the token" if self.auth is not None else "")
                + "; check the extractor's auth settings",
                url=shown,
                status=status,
            )
        raise ExtractHTTPStatusError(
            f"{shown} answered HTTP {status} {response.reason_phrase}: not retryable "
            f"(retried statuses: {sorted(self.config.retry.retry_statuses)})",
            url=shown,
            status=status,
        )


def _verify(setting: bool | str) -> bool | ssl.SSLContext:
    if isinstance(setting, bool):
        return setting
    return ssl.create_default_context(cafile=setting)


def _reason(exc: Exception) -> str:
    # httpx messages can echo the request URL; keep only the first line, without a query.
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text.split("?", 1)[0][:200]


__all__ = ["ExtractClient", "Response", "public_url"]
