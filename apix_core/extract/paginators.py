"""Pagination strategies: a tiny interface, one class per style.

A strategy sees the first request and then each page, and answers the next request or ``None``:

* ``first(request)`` → the first request (page 1, offset 0...);
* ``next(request, page)`` → the request of the following page, or ``None`` to stop.

:class:`Paginator` wraps a strategy with the stops every style shares (empty page, total
records, total pages, ``has_more`` false, ``max_pages``) and the loop guard: a next request
identical to one already made (same token, same URL) raises :class:`PaginationLoopError` instead
of looping forever. Nothing here imports httpx; headers are any case-insensitive mapping.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from apix_core.extract.config import PaginationConfig
from apix_core.extract.exceptions import PaginationLoopError
from apix_core.extract.selectors import compile_path


@dataclass(frozen=True)
class PageRequest:
    """A page to fetch: ``url`` (absolute, may carry a query) and extra query ``params``."""

    url: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def with_params(self, **params: Any) -> PageRequest:
        return PageRequest(self.url, {**self.params, **params})

    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.url, tuple(sorted((k, str(v)) for k, v in self.params.items()))


@dataclass(frozen=True)
class Page:
    """One fetched page: its parsed JSON ``body``, response ``headers``, selected ``records``,
    and ``number`` (1 for the first page of this extraction)."""

    body: Any
    headers: Mapping[str, str]
    records: list[Any]
    number: int
    url: str


class PaginationStrategy(ABC):
    """The interface every pagination style implements."""

    def first(self, request: PageRequest) -> PageRequest:
        return request

    @abstractmethod
    def next(self, request: PageRequest, page: Page) -> PageRequest | None:
        """The next page's request, or ``None`` when ``page`` was the last."""


class SinglePage(PaginationStrategy):
    def next(self, request: PageRequest, page: Page) -> PageRequest | None:
        return None


class PageNumber(PaginationStrategy):
    """``?page=N`` (and ``per_page`` when ``page_size`` is set); a short page is the last."""

    def __init__(self, config: PaginationConfig) -> None:
        self.param = config.page_param
        self.start = config.start_page
        self.size_param = config.page_size_param
        self.size = config.page_size

    def first(self, request: PageRequest) -> PageRequest:
        extra: dict[str, Any] = {self.param: self.start}
        if self.size is not None and self.size_param:
            extra[self.size_param] = self.size
        return request.with_params(**extra)

    def next(self, request: PageRequest, page: Page) -> PageRequest | None:
        if self.size is not None and len(page.records) < self.size:
            return None
        return request.with_params(**{self.param: int(request.params[self.param]) + 1})


class OffsetLimit(PaginationStrategy):
    """``?offset=N&limit=L``; a page shorter than ``limit`` is the last."""

    def __init__(self, config: PaginationConfig) -> None:
        self.offset_param = config.offset_param
        self.limit_param = config.limit_param
        self.limit = config.limit
        self.start = config.start_offset

    def first(self, request: PageRequest) -> PageRequest:
        return request.with_params(**{self.offset_param: self.start, self.limit_param: self.limit})

    def next(self, request: PageRequest, page: Page) -> PageRequest | None:
        if len(page.records) < self.limit:
            return None
        offset = int(request.params[self.offset_param]) + len(page.records)
        return request.with_params(**{self.offset_param: offset})


class Cursor(PaginationStrategy):
    """A token from the body (``cursor_path``) or a header (``cursor_header``), sent back as
    ``cursor_param``; no token (or an empty one) ends the extraction."""

    def __init__(self, config: PaginationConfig) -> None:
        self.header = config.cursor_header
        self.path = None if self.header else compile_path(config.cursor_path or "next_cursor")
        self.param = config.cursor_param

    def next(self, request: PageRequest, page: Page) -> PageRequest | None:
        token = page.headers.get(self.header) if self.header else self.path(page.body)  # type: ignore[misc]
        if token is None or token == "" or token is False:
            return None
        return request.with_params(**{self.param: token})


class NextUrl(PaginationStrategy):
    """The next page's URL in the body (``next_url_path``), absolute or relative."""

    def __init__(self, config: PaginationConfig) -> None:
        self.path = compile_path(config.next_url_path)

    def next(self, request: PageRequest, page: Page) -> PageRequest | None:
        url = self.path(page.body)
        if not url or not isinstance(url, str):
            return None
        return PageRequest(urljoin(page.url, url))


class LinkHeader(PaginationStrategy):
    """RFC 8288 ``Link`` header: the target of the link whose ``rel`` includes ``next``."""

    def next(self, request: PageRequest, page: Page) -> PageRequest | None:
        url = next_link(page.headers.get("link") or page.headers.get("Link") or "")
        return PageRequest(urljoin(page.url, url)) if url else None


_LINK = re.compile(r'<([^>]*)>((?:\s*;\s*[^;,"=\s]+(?:\s*=\s*(?:"(?:[^"\\]|\\.)*"|[^;,\s]*))?)*)')
_LINK_PARAM = re.compile(r';\s*([^;,"=\s]+)(?:\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;,\s]*)))?')


def next_link(header: str, rel: str = "next") -> str | None:
    """The target of the first link with relation ``rel`` in a ``Link`` header value."""
    for match in _LINK.finditer(header):
        for name, quoted, bare in _LINK_PARAM.findall(match.group(2)):
            if name.lower() == "rel":
                value = quoted if quoted else bare
                if rel in value.lower().split():
                    return match.group(1).strip()
    return None


_STRATEGIES: dict[str, type[PaginationStrategy]] = {
    "single_page": SinglePage,
    "page_number": PageNumber,
    "offset": OffsetLimit,
    "cursor": Cursor,
    "next_url": NextUrl,
    "link_header": LinkHeader,
}


def make_strategy(config: PaginationConfig) -> PaginationStrategy:
    cls = _STRATEGIES[config.type]
    return cls() if cls in (SinglePage, LinkHeader) else cls(config)  # type: ignore[call-arg]


class Paginator:
    """One pagination run: a strategy plus the shared stops and the loop guard."""

    def __init__(self, config: PaginationConfig, strategy: PaginationStrategy | None = None):
        self.config = config
        self.strategy = strategy or make_strategy(config)
        self._total = compile_path(config.total_path) if config.total_path else None
        self._pages = compile_path(config.total_pages_path) if config.total_pages_path else None
        self._more = compile_path(config.has_more_path) if config.has_more_path else None
        self._seen: set[int] = set()
        self.pages = 0
        self.records = 0

    def first(self, request: PageRequest) -> PageRequest:
        first = self.strategy.first(request)
        self._seen.add(hash(first.key()))
        return first

    def next(self, request: PageRequest, page: Page) -> PageRequest | None:
        """The next request, ``None`` to stop; raises on a repeated token or URL."""
        self.pages += 1
        self.records += len(page.records)
        if self._stop(page):
            return None
        following = self.strategy.next(request, page)
        if following is None:
            return None
        key = hash(following.key())
        if key in self._seen:
            raise PaginationLoopError(
                f"pagination loop: page {page.number} of {_path(page.url)} points back to a "
                f"page already fetched ({_describe(following, self.config)} again); the API "
                "repeats its cursor or next link — stopping instead of looping forever",
                url=_path(following.url),
                token=_token(following, self.config),
            )
        self._seen.add(key)
        return following

    def _stop(self, page: Page) -> bool:
        config = self.config
        if config.max_pages is not None and self.pages >= config.max_pages:
            return True
        if config.stop_on_empty and not page.records:
            return True
        if self._more is not None and not self._more(page.body):
            return True
        if self._total is not None:
            total = _as_int(self._total(page.body))
            if total is not None and self.records >= total:
                return True
        if self._pages is not None:
            pages = _as_int(self._pages(page.body))
            if pages is not None and self.pages >= pages:
                return True
        return False


def _as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _path(url: str) -> str:
    # The query may carry an API key: errors show scheme, host and path only.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _token(request: PageRequest, config: PaginationConfig) -> str:
    if config.type == "cursor":
        return str(request.params.get(config.cursor_param, ""))[:200]
    return ""


def _describe(request: PageRequest, config: PaginationConfig) -> str:
    if config.type == "cursor":
        return f"{config.cursor_param}={str(request.params.get(config.cursor_param))[:80]!r}"
    if config.type in ("link_header", "next_url"):
        return f"next URL {_path(request.url)}"
    return ", ".join(f"{k}={str(v)[:80]!r}" for k, v in request.params.items())


__all__ = [
    "Cursor",
    "LinkHeader",
    "NextUrl",
    "OffsetLimit",
    "Page",
    "PageNumber",
    "PageRequest",
    "PaginationStrategy",
    "Paginator",
    "SinglePage",
    "make_strategy",
    "next_link",
]
