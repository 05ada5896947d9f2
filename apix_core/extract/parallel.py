"""Parallel fetching within one endpoint: time windows, known pages, calculated offsets.

:class:`ParallelExtractor` splits an :class:`~apix_core.extract.http.HttpExtractor`'s endpoint
into tasks — one per time window (each paginated), one per page number, or one per offset
after a count request — and runs them under ONE :class:`~apix_core.extract.ratelimit.RequestBudget`:
at most ``max_concurrency`` requests in flight for the whole extraction, one rate, and a
429/503 ``Retry-After`` pauses every task. Requests are retried by the client's policy; a task
that still fails is retried alone (``max_task_attempts``), then ``on_error`` decides: ``fail``
stops the extraction with the task's error, ``continue`` records it in the report and goes on.

Order: with ``ordered`` (the default) results come out in task order — windows in time order,
pages and offsets ascending — whatever order the answers arrive in; at most
``2 × max_concurrency`` tasks run ahead of the one being emitted, which bounds memory. With
``ordered: false`` they come out as they finish. A window's pages are emitted together once
the whole window is fetched (a retried window never yields half its records twice).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from apix_core.extract.base import BaseExtractor, Inputs, Record
from apix_core.extract.client import ExtractClient
from apix_core.extract.config import ParallelConfig, parse_config
from apix_core.extract.exceptions import ExtractConfigError, ExtractError
from apix_core.extract.http import HttpExtractor
from apix_core.extract.paginators import PageRequest, Paginator
from apix_core.extract.ratelimit import RequestBudget
from apix_core.extract.selectors import compile_path
from apix_core.extract.windows import plan_windows

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Task:
    """One unit of parallel work: its position, a label for reports, its first request."""

    index: int
    label: str
    request: PageRequest
    paginate: bool = False  # a window follows the endpoint's pagination inside it


@dataclass(frozen=True)
class TaskResult:
    task: Task
    records: list[Record]
    pages: int
    attempts: int


@dataclass(frozen=True)
class TaskFailure:
    """A task that failed all its attempts (kept when ``on_error`` is ``continue``)."""

    task: Task
    error: BaseException
    attempts: int

    @property
    def reason(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


@dataclass
class ParallelReport:
    """What one parallel extraction did."""

    strategy: str
    tasks: int = 0
    completed: int = 0
    records: int = 0
    pages: int = 0
    task_retries: int = 0
    requests: int = 0
    request_retries: int = 0
    rate_limit_pauses: int = 0
    elapsed: float = 0.0
    failed: list[TaskFailure] = field(default_factory=list)

    @property
    def records_per_second(self) -> float:
        return self.records / self.elapsed if self.elapsed > 0 else 0.0


class ParallelExtractor(BaseExtractor):
    """An HTTP endpoint fetched as parallel tasks under one budget (use ``async with``)."""

    def __init__(
        self,
        extractor: HttpExtractor | Mapping[str, Any],
        parallel: ParallelConfig | Mapping[str, Any],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.extractor = (
            extractor if isinstance(extractor, HttpExtractor) else HttpExtractor(extractor)
        )
        self.parallel = parse_config(ParallelConfig, parallel, where="parallel")
        self._transport = transport or self.extractor._transport
        config = self.extractor.config
        # The one cap of the extraction: the budget's concurrency is the parallel cap.
        self.config = config.model_copy(
            update={
                "rate_limit": config.rate_limit.model_copy(
                    update={"max_concurrent": self.parallel.max_concurrency}
                )
            }
        )
        self._check_pagination()
        self.report = ParallelReport(self.parallel.strategy)

    def _check_pagination(self) -> None:
        kind = self.config.pagination.type
        needed = {"known_pages": "page_number", "calculated_offsets": "offset"}.get(
            self.parallel.strategy
        )
        if needed and kind != needed:
            raise ExtractConfigError(
                f"parallel.strategy {self.parallel.strategy} needs pagination.type {needed!r} "
                f"(the extractor has {kind!r})",
                key="parallel.strategy",
                value=self.parallel.strategy,
            )

    # -- the stream ---------------------------------------------------------------------------
    async def extract_stream(self, inputs: Inputs = None) -> AsyncIterator[list[Record]]:
        async for result in self.iter_results(inputs):
            yield result.records

    async def iter_results(self, inputs: Inputs = None) -> AsyncIterator[TaskResult]:
        """Every task's records, in task order (or finishing order when not ``ordered``)."""
        if isinstance(inputs, list):
            if len(inputs) != 1:
                raise ExtractConfigError(
                    "a parallel extraction splits one endpoint: pass one input, not "
                    f"{len(inputs)} (run one ParallelExtractor per input)",
                    key="inputs",
                    value=len(inputs),
                )
            inputs = inputs[0]
        item: Mapping[str, Any] = inputs or {}
        report = self.report = ParallelReport(self.parallel.strategy)
        started = time.perf_counter()
        client = ExtractClient(
            self.config,
            auth=self.extractor.auth,
            budget=RequestBudget(self.config.rate_limit),
            transport=self._transport,
        )
        running: dict[int, asyncio.Future[TaskResult | TaskFailure]] = {}
        prefetched: Prefetched = {}
        try:
            tasks, prefetched = await self._plan(client, item)
            report.tasks = len(tasks)
            ahead = 2 * self.parallel.max_concurrency
            launched = emitted = 0
            while emitted < len(tasks):
                while launched < len(tasks) and len(running) < ahead:
                    task = tasks[launched]
                    early = prefetched.pop(task.index, None)
                    if isinstance(early, asyncio.Task):
                        running[task.index] = early  # a speculative page, already under way
                    elif early is not None:
                        running[task.index] = asyncio.ensure_future(_done(early))
                    else:
                        running[task.index] = asyncio.create_task(self._run(client, item, task))
                    launched += 1
                if self.parallel.ordered:
                    outcome = await running.pop(emitted)
                else:
                    finished, _ = await asyncio.wait(
                        running.values(), return_when=asyncio.FIRST_COMPLETED
                    )
                    outcome = finished.pop().result()
                    running.pop(outcome.task.index)
                emitted += 1
                if isinstance(outcome, TaskFailure):
                    report.failed.append(outcome)
                    if self.parallel.on_error == "fail":
                        raise outcome.error
                    continue
                report.completed += 1
                report.records += len(outcome.records)
                report.pages += outcome.pages
                yield outcome
        finally:
            for pending in running.values():
                pending.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)
            await _cancel(prefetched)
            report.requests = client.requests
            report.request_retries = client.retrier.retries
            report.rate_limit_pauses = client.budget.pauses
            report.elapsed = time.perf_counter() - started
            await client.close()

    # -- planning -----------------------------------------------------------------------------
    async def _plan(
        self, client: ExtractClient, item: Mapping[str, Any]
    ) -> tuple[list[Task], Prefetched]:
        first = self.extractor.first_request(item)
        strategy = self.parallel.strategy
        if strategy == "time_windows":
            window = self.parallel.window
            assert window is not None  # ParallelConfig requires it
            paginator = Paginator(self.config.pagination)
            return [
                Task(
                    w.index,
                    f"window {w.start.isoformat()}..{w.end.isoformat()}",
                    paginator.first(first.with_params(**w.params(window))),
                    paginate=True,
                )
                for w in plan_windows(window)
            ], {}
        if strategy == "known_pages":
            return await self._plan_pages(client, item, first)
        return await self._plan_offsets(client, first)

    async def _plan_pages(
        self, client: ExtractClient, item: Mapping[str, Any], first: PageRequest
    ) -> tuple[list[Task], Prefetched]:
        pag = self.config.pagination
        size = {pag.page_size_param: pag.page_size} if pag.page_size_param and pag.page_size else {}

        def page(n: int, index: int) -> Task:
            return Task(index, f"page {n}", first.with_params(**{pag.page_param: n}, **size))

        prefetched: dict[int, TaskResult | asyncio.Task[TaskResult | TaskFailure]] = {}
        total = self.parallel.total_pages
        if total is None:
            # The first page is data too: it tells how many pages there are. Speculative pages
            # go out with it (one round trip less); those past the end are not used.
            ahead = min(self.parallel.speculative_pages, self.parallel.max_concurrency - 1)
            for i in range(1, ahead + 1):
                prefetched[i] = asyncio.create_task(
                    self._run(client, item, page(pag.start_page + i, i))
                )
            task = page(pag.start_page, 0)
            try:
                body, records = await self._fetch(client, task.request)
                total = self._total_pages(body, len(records))
            except BaseException:
                await _cancel(prefetched)
                raise
            prefetched[0] = TaskResult(task, records, 1, 1)
            await _cancel({i: t for i, t in prefetched.items() if i >= total})
        tasks = [page(pag.start_page + i, i) for i in range(total)]
        return tasks, {i: t for i, t in prefetched.items() if i < total}

    def _total_pages(self, body: Any, first_size: int) -> int:
        pag = self.config.pagination
        if pag.total_pages_path:
            return _count(body, pag.total_pages_path, "pagination.total_pages_path")
        if pag.total_path:
            total = _count(body, pag.total_path, "pagination.total_path")
            size = pag.page_size or first_size
            return -(-total // size) if size else 0
        raise ExtractConfigError(
            "parallel.total_pages: strategy known_pages needs total_pages, or "
            "pagination.total_pages_path / total_path to read it from the first page",
            key="parallel.total_pages",
        )

    async def _plan_offsets(
        self, client: ExtractClient, first: PageRequest
    ) -> tuple[list[Task], Prefetched]:
        pag = self.config.pagination
        path = self.parallel.count_path or pag.total_path
        if not path:
            raise ExtractConfigError(
                "parallel.count_path: strategy calculated_offsets needs count_path (or "
                "pagination.total_path): where the count request's answer holds the total",
                key="parallel.count_path",
            )
        response = await client.get_json(
            first.url,
            {**first.params, **self.parallel.count_params},
            method=self.config.method,
            json_body=self.config.json_body,
        )
        total = _count(response.body, path, "parallel.count_path")
        offsets = range(pag.start_offset, total, pag.limit)
        return [
            Task(
                i,
                f"offset {o}",
                first.with_params(**{pag.offset_param: o, pag.limit_param: pag.limit}),
            )
            for i, o in enumerate(offsets)
        ], {}

    # -- running one task ---------------------------------------------------------------------
    async def _fetch(self, client: ExtractClient, request: PageRequest) -> tuple[Any, list[Record]]:
        response = await client.get_json(
            request.url, request.params, method=self.config.method, json_body=self.config.json_body
        )
        return response.body, self.extractor._records(response.body, response.url)

    async def _attempt(
        self, client: ExtractClient, item: Mapping[str, Any], task: Task
    ) -> tuple[list[Record], int]:
        if not task.paginate:
            _, single = await self._fetch(client, task.request)
            return single, 1
        records: list[Record] = []
        pages = 0
        # The extractor's own pagination, on this extraction's client (one budget).
        async for page in self.extractor._paginate(client, item, task.index, task.request):
            records.extend(page.records)
            pages += 1
        return records, pages

    async def _run(
        self, client: ExtractClient, item: Mapping[str, Any], task: Task
    ) -> TaskResult | TaskFailure:
        attempts = self.parallel.max_task_attempts
        for attempt in range(1, attempts + 1):
            try:
                records, pages = await self._attempt(client, item, task)
            except ExtractConfigError:
                raise  # a config mistake fails every task alike: no retry, no "continue"
            except ExtractError as exc:
                if attempt == attempts:
                    return TaskFailure(task, exc, attempt)
                self.report.task_retries += 1
                continue
            return TaskResult(task, records, pages, attempt)
        raise AssertionError("unreachable")  # pragma: no cover


#: Tasks done (or under way) before the plan was complete, by task index.
Prefetched = dict[int, "TaskResult | asyncio.Task[TaskResult | TaskFailure]"]


async def _done(result: TaskResult) -> TaskResult:
    return result


async def _cancel(prefetched: Prefetched) -> None:
    pending = [t for t in prefetched.values() if isinstance(t, asyncio.Task)]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def _count(body: Any, path: str, key: str) -> int:
    value = compile_path(path)(body)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ExtractConfigError(
            f"{key}: {path!r} found {value!r} in the response, not a count",
            key=key,
            value=path,
        )
    try:
        count = int(value)
    except ValueError:
        raise ExtractConfigError(
            f"{key}: {path!r} found {value!r} in the response, not a count", key=key, value=path
        ) from None
    return max(0, count)


__all__ = ["ParallelExtractor", "ParallelReport", "Task", "TaskFailure", "TaskResult"]
