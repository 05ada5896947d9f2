"""``HttpExtractor``: paginated JSON APIs over one httpx client per extraction.

``extract_stream(inputs)`` yields each page's records as they arrive. Pages are fetched by a
producer task into a bounded queue (``stream_buffer_pages``): fetching runs ahead of the
consumer by at most that many pages, so memory stays flat however slow the consumer (an output
writing to disk) is — backpressure. Several inputs (a list of mappings) are paginated
concurrently, up to ``batch.max_concurrent_batches`` at once, under one shared budget.

:meth:`HttpExtractor.iter_pages` is the same stream with each page's position
(``request`` that fetched it, ``next_request`` to resume from), for callers that must save
their place (a deadline-bounded invocation).
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from apix_core.extract.auth import build_auth
from apix_core.extract.base import BaseExtractor, ExtractorFactory, Inputs, Record
from apix_core.extract.client import ExtractClient, public_url
from apix_core.extract.config import ExtractorConfig, parse_config
from apix_core.extract.exceptions import ExtractConfigError, MalformedResponseError
from apix_core.extract.paginators import Page, PageRequest, Paginator
from apix_core.extract.ratelimit import RequestBudget
from apix_core.extract.selectors import compile_path, default_records

if TYPE_CHECKING:
    import httpx

    from apix_core.store.database import Database
    from apix_core.tokens import ApiTokenService

_FORMATTER = string.Formatter()


@dataclass(frozen=True)
class FetchedPage:
    """One page of one input: its records and where the extraction stands after it."""

    records: list[Record]
    number: int
    request: PageRequest
    next_request: PageRequest | None
    input_index: int = 0


class _Done:
    __slots__ = ()


_DONE = _Done()


class HttpExtractor(BaseExtractor):
    """Extracts one endpoint; ``inputs`` fill the path and parameter templates."""

    config_model = ExtractorConfig

    def __init__(
        self,
        config: ExtractorConfig | Mapping[str, Any],
        *,
        token_service: ApiTokenService | None = None,
        database: Database | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = parse_config(ExtractorConfig, config, where="extractor")
        self.auth = build_auth(
            self.config.auth,
            token_service=token_service,
            database=database,
            operation=f"extract:{self.config.name or self.config.base_url}",
        )
        self._transport = transport
        self._select = (
            compile_path(self.config.data_selector) if self.config.data_selector else None
        )
        base = self.config.base_url.rstrip("/")
        path = self.config.path.lstrip("/")
        self._url_template = f"{base}/{path}" if path else self.config.base_url
        self._url_fields = _fields(self._url_template, "path")
        self._param_fields = {
            key: _fields(value, f"params.{key}")
            for key, value in self.config.params.items()
            if isinstance(value, str)
        }
        #: The budget and client of the last extraction (observability; tests read them).
        self.last_client: ExtractClient | None = None

    # -- the stream ---------------------------------------------------------------------------
    async def extract_stream(self, inputs: Inputs = None) -> AsyncIterator[list[Record]]:
        async for page in self.iter_pages(inputs):
            yield page.records

    async def iter_pages(
        self, inputs: Inputs = None, *, resume: PageRequest | None = None
    ) -> AsyncIterator[FetchedPage]:
        """Every page of every input, in arrival order; ``resume`` (one input only) starts
        from a saved ``next_request`` instead of the first page."""
        items = _as_list(inputs)
        if resume is not None and len(items) != 1:
            raise ExtractConfigError(
                "resume= continues one pagination: pass a single input", key="resume", value=None
            )
        client = ExtractClient(
            self.config,
            auth=self.auth,
            budget=RequestBudget(self.config.rate_limit),
            transport=self._transport,
        )
        self.last_client = client
        queue: asyncio.Queue[FetchedPage | BaseException | _Done] = asyncio.Queue(
            maxsize=self.config.stream_buffer_pages
        )
        gate = asyncio.Semaphore(self.config.batch.max_concurrent_batches)
        tasks = [
            asyncio.create_task(self._produce(client, gate, queue, item, index, resume))
            for index, item in enumerate(items)
        ]
        remaining = len(tasks)
        try:
            while remaining:
                item = await queue.get()
                if isinstance(item, _Done):
                    remaining -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()

    async def _produce(
        self,
        client: ExtractClient,
        gate: asyncio.Semaphore,
        queue: asyncio.Queue[FetchedPage | BaseException | _Done],
        item: Mapping[str, Any],
        index: int,
        resume: PageRequest | None,
    ) -> None:
        try:
            async with gate:
                async for page in self._paginate(client, item, index, resume):
                    await queue.put(page)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, which raises it
            await queue.put(exc)
            return
        await queue.put(_DONE)

    async def _paginate(
        self,
        client: ExtractClient,
        item: Mapping[str, Any],
        index: int,
        resume: PageRequest | None,
    ) -> AsyncIterator[FetchedPage]:
        paginator = Paginator(self.config.pagination)
        request: PageRequest | None = resume or paginator.first(self.first_request(item))
        number = 0
        method = self.config.method
        body = self.config.json_body
        while request is not None:
            number += 1
            response = await client.get_json(
                request.url, request.params, method=method, json_body=body
            )
            records = self._records(response.body, response.url)
            following = paginator.next(
                request, Page(response.body, response.headers, records, number, response.url)
            )
            yield FetchedPage(records, number, request, following, index)
            request = following

    # -- templates and records ----------------------------------------------------------------
    def first_request(self, item: Mapping[str, Any] | None = None) -> PageRequest:
        """The first page's request for one input (path and parameter templates filled)."""
        values = item or {}
        url = self._url_template
        if self._url_fields:
            url = url.format_map(
                {f: quote(str(_value(values, f, "path", url)), safe="") for f in self._url_fields}
            )
        params: dict[str, Any] = {}
        for key, value in self.config.params.items():
            fields = self._param_fields.get(key)
            if fields:
                if value == "{" + fields[0] + "}" and len(fields) == 1:
                    value = _value(values, fields[0], f"params.{key}", value)  # keep its type
                else:
                    value = value.format_map(
                        {f: _value(values, f, f"params.{key}", value) for f in fields}
                    )
            if value is not None:
                params[key] = value
        return PageRequest(url, params)

    def _records(self, body: Any, url: str) -> list[Record]:
        if self._select is not None:
            found = self._select(body)
        elif body is None or isinstance(body, list | dict):
            found = default_records(body)
        else:
            raise MalformedResponseError(
                f"the response of {public_url(url)} is a JSON {type(body).__name__}, not "
                "records: set data_selector to where the records are",
                url=public_url(url),
            )
        if isinstance(found, list):
            return found
        if found is None:
            return []
        if isinstance(found, dict):
            return [found]
        raise MalformedResponseError(
            f"data_selector {self.config.data_selector!r} found a {type(found).__name__} in the "
            f"response of {public_url(url)}, not a list of records",
            url=public_url(url),
        )


ExtractorFactory.register("http")(HttpExtractor)


def _fields(template: Any, key: str) -> list[str]:
    if not isinstance(template, str) or "{" not in template:
        return []
    try:
        return [name for _, name, _, _ in _FORMATTER.parse(template) if name]
    except ValueError as exc:
        raise ExtractConfigError(
            f"{key}: invalid template {template!r} ({exc}); placeholders look like {{user_id}}",
            key=key,
            value=template,
        ) from None


def _value(values: Mapping[str, Any], name: str, key: str, template: str) -> Any:
    try:
        return values[name]
    except KeyError:
        known = ", ".join(sorted(values)) or "none"
        raise ExtractConfigError(
            f"{key}: template {template!r} needs input {name!r}, which the inputs do not have "
            f"(inputs: {known})",
            key=key,
            value=template,
        ) from None


def _as_list(inputs: Inputs) -> list[Mapping[str, Any]]:
    if inputs is None:
        return [{}]
    if isinstance(inputs, Mapping):
        return [inputs]
    if isinstance(inputs, list) and all(isinstance(i, Mapping) for i in inputs):
        return inputs or []
    raise ExtractConfigError(
        f"inputs must be a mapping or a list of mappings, not {type(inputs).__name__}",
        key="inputs",
        value=type(inputs).__name__,
    )


__all__ = ["FetchedPage", "HttpExtractor"]
