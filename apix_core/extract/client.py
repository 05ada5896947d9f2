"""One HTTP client per extraction under the extraction's budget, retry policy and auth.

A plain page request goes out on the lean HTTP/1.1 keep-alive path of
:mod:`apix_core.extract.http1`; httpx.AsyncClient (HTTP/2 when offered, proxies, auth flows,
redirects, cookies), made on first use, takes every request that path cannot.

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
from apix_core.extract.http1 import Http1Pool, RawResponse, Unsupported
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
        self._connections = max(
            config.rate_limit.max_concurrent, config.batch.max_concurrent_batches
        )
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self.closed = False
        self.requests = 0
        #: The lean HTTP/1.1 path (:mod:`apix_core.extract.http1`) when nothing needs httpx's.
        self.pool: Http1Pool | None = None
        #: A pool given up for httpx (redirects, cookies): requests still in flight on it
        #: finish there, and close() closes it.
        self._retired: Http1Pool | None = None
        self._lean_https = False
        static = _static_auth(auth)
        if (
            transport is None
            and static is not None
            and _plain_headers({**config.headers, **static[0]})
            and not _env_proxies()
        ):
            self._auth_headers, self._auth_params = static
            self.pool = Http1Pool(
                headers=config.headers,
                timeout=config.timeout,
                connect_timeout=config.connect_timeout,
                max_idle=self._connections,
                ssl_context=lambda: _verify_context(config.verify),
            )
            # HTTPS that may negotiate HTTP/2 (ALPN) stays with httpx.
            self._lean_https = not (config.http2 and _http2_available())

    @property
    def http(self) -> httpx.AsyncClient:
        """The httpx client: made on first use (the lean path may never need it)."""
        if self._http is None:
            if self.closed:
                raise RuntimeError("the extraction client is closed")
            config = self.config
            connections = self._connections
            self._http = httpx.AsyncClient(
                headers=config.headers or None,
                timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
                limits=httpx.Limits(
                    max_connections=connections, max_keepalive_connections=connections
                ),
                http2=config.http2 and _http2_available(),
                transport=self._transport,
                verify=_verify(config.verify),
                follow_redirects=True,
            )
        return self._http

    async def close(self) -> None:
        self.closed = True
        for pool in (self.pool, self._retired):
            if pool is not None:
                await pool.close()
        if self._http is not None:
            await self._http.aclose()

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
                pool = self.pool
                # A bodiless GET only: a request the lean path hands to httpx after the server
                # answered (a redirect, a cookie) is sent again, which only a safe method allows;
                # httpx encodes a JSON body (even on a GET).
                if (
                    pool is not None
                    and method == "GET"
                    and json_body is None
                    and (url.startswith("http://") or self._lean_https)
                ):
                    try:
                        raw = await self._lean(pool, url, params)
                    except Unsupported:
                        pass  # httpx takes this request (below)
                    except TimeoutError as exc:
                        raise RetryableFailure(
                            f"timed out ({type(exc).__name__}, timeout {self.config.timeout}s)",
                            url=shown,
                        ) from None
                    except OSError as exc:
                        raise RetryableFailure(
                            f"connection error ({type(exc).__name__}: {_reason(exc)})", url=shown
                        ) from None
                    else:
                        return self._classify_raw(raw, shown)
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

    async def _lean(
        self, pool: Http1Pool, url: str, params: Mapping[str, Any] | None
    ) -> RawResponse:
        """One bodiless GET on the lean HTTP/1.1 path."""
        try:
            raw = await pool.request(
                "GET", url, params, headers=self._auth_headers or None, merge=self._auth_params
            )
        except Unsupported as exc:
            if exc.answered and self.pool is pool:
                # A redirect or a session cookie: this API needs httpx's redirects and cookie
                # jar, for this request and the rest of the extraction.
                self.pool, self._retired = None, pool
            raise
        if _http_log.isEnabledFor(logging.INFO):
            _http_log.info(
                'HTTP Request: GET %s "HTTP/1.1 %d %s"',
                redacted_url(httpx.URL(raw.url)),
                raw.status,
                raw.reason,
            )
        return raw

    def _classify_raw(self, raw: RawResponse, shown: str) -> Response:
        status = raw.status
        if 200 <= status < 300:
            return Response(
                status, httpx.Headers(raw.headers), _parse(raw.content, shown, status), raw.url
            )
        return self._classify_error(status, raw.reason, httpx.Headers(raw.headers), shown)

    def _classify(self, response: httpx.Response, shown: str) -> Response:
        status = response.status_code
        if 200 <= status < 300:
            body = _parse(response.content, shown, status)
            return Response(status, response.headers, body, str(response.url))
        return self._classify_error(status, response.reason_phrase, response.headers, shown)

    def _classify_error(
        self, status: int, reason_phrase: str, headers: httpx.Headers, shown: str
    ) -> Response:
        if status in self.config.retry.retry_statuses:
            retry_after = parse_retry_after(headers.get("retry-after"))
            if (
                retry_after is not None
                and status in (429, 503)
                and retry_after <= self.config.retry.max_retry_after
            ):
                self.budget.pause(retry_after)
            what = f"HTTP {status} {reason_phrase}".rstrip()
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
            f"{shown} answered HTTP {status} {reason_phrase}: not retryable "
            f"(retried statuses: {sorted(self.config.retry.retry_statuses)})",
            url=shown,
            status=status,
        )


def _parse(content: bytes, shown: str, status: int) -> Any:
    try:
        return _loads(content) if content else None
    except _JSONError as exc:
        raise MalformedResponseError(
            f"response of {shown} (HTTP {status}) is not valid JSON: {exc}; "
            f"it starts with {content[:60]!r}",
            url=shown,
        ) from None


def _static_auth(auth: httpx.Auth | None) -> tuple[dict[str, str], dict[str, str]] | None:
    """Headers and query parameters that are all ``auth`` does, or None (an auth flow)."""
    if auth is None:
        return {}, {}
    static = getattr(auth, "static_parts", None)
    return static() if static is not None else None


_FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def _plain_headers(headers: Mapping[str, str]) -> bool:
    """Headers the lean path may write as they are: printable ASCII, none that frames the
    message (httpx validates and places those)."""
    for name, value in headers.items():
        text = f"{name}{value}"
        if not (text.isascii() and text.isprintable()) or name.lower() in _FRAMING:
            return False
    return True


def _env_proxies() -> bool:
    """A proxy in the environment (httpx honours HTTP(S)_PROXY, ALL_PROXY): httpx sends."""
    import os

    return any(
        os.environ.get(name) or os.environ.get(name.lower())
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    )


def _verify_context(setting: bool | str) -> ssl.SSLContext | bool:
    made = _verify(setting)
    if made is True:
        return httpx.create_ssl_context()
    if made is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return made


_http_log = logging.getLogger("apix_core.extract.http1")


def _verify(setting: bool | str) -> bool | ssl.SSLContext:
    if isinstance(setting, bool):
        return setting
    return ssl.create_default_context(cafile=setting)


def _reason(exc: Exception) -> str:
    # httpx messages can echo the request URL; keep only the first line, without a query.
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text.split("?", 1)[0][:200]


__all__ = ["ExtractClient", "Response", "public_url"]
