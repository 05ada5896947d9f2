"""Parallel extraction on a loopback API with a real API's latency (issue 16).

The test suite's API server runs in its own process and answers every request after 20 ms.
Contenders, alternated in the same run (ratios are the figures to trust):

* **apix known pages ×16**: ``ParallelExtractor`` strategy ``known_pages``, concurrency 16
  (the page count read from the first page);
* **apix known pages ×16, 15 speculative**: the same with ``speculative_pages: 15``: pages
  2–16 go out with the first page instead of after it (one round trip less of the 11);
* **apix calculated offsets ×16**: strategy ``calculated_offsets`` (a count request, then one
  request per offset), concurrency 16;
* **apix sequential**: ``HttpExtractor`` following the pages one after the other;
* **dlt**: ``rest_api`` source, ``pipeline.extract`` (when dlt is installed: the nox ``bench``
  session installs it). dlt fetches the pages of one endpoint one after the other.

Goals: parallel ≥ 8× apix sequential and ≥ 20× dlt records/s. The floor: 160 pages at 16 in
flight are 10 round trips of 20 ms (11 when the first page must come back before the rest go
out), so parallel cannot take less than 200 ms (80,000 records/s) while dlt needs at least
160 × 20 ms = 3.2 s (5,000 records/s): ≥ 20× dlt is reachable only while dlt spends ≥ 0.8 s
beyond the latency. The test API builds each page body once (as the part-1 benchmark's), so
its JSON encoding, on the client's two cores, is not measured as the client's.

Then a server that answers at most N requests per clock second and 429 + ``Retry-After: 1``
beyond: apix (concurrency 16, ``rate_limit.requests_per_second`` N) must achieve ≥ 0.9 N
requests/s with zero failed records. The same without a configured rate (only the 429s to
go by) is reported for information.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import Result
from bench_extract import _dlt_available, _dlt_rows, api_server

DELAY = 0.02  # seconds per request, server side
PAGES, PER_PAGE = 160, 100
TOTAL = PAGES * PER_PAGE
CONCURRENCY = 16
ROUNDS = 3
LIMIT_RPS = 50
LIMIT_PAGES = 250


def _pages_config(url: str, path: str = "/pages", **params: Any) -> dict[str, Any]:
    return {
        "base_url": url,
        "path": path,
        "params": {"total": TOTAL, "delay": DELAY, **params},
        "data_selector": "data",
        "pagination": {
            "type": "page_number",
            "page_size": PER_PAGE,
            "total_pages_path": "meta.total_pages",
        },
    }


async def apix_known_pages(url: str, speculative: int = 0) -> int:
    from apix_core.extract.parallel import ParallelExtractor

    extractor = ParallelExtractor(
        _pages_config(url),
        {
            "strategy": "known_pages",
            "max_concurrency": CONCURRENCY,
            "speculative_pages": speculative,
        },
    )
    return sum([len(batch) async for batch in extractor.extract_stream()])


async def apix_offsets(url: str) -> int:
    from apix_core.extract.parallel import ParallelExtractor

    config = {
        "base_url": url,
        "path": "/offset",
        "params": {"total": TOTAL, "delay": DELAY},
        "data_selector": "results",
        "pagination": {"type": "offset", "limit": PER_PAGE},
    }
    extractor = ParallelExtractor(
        config,
        {
            "strategy": "calculated_offsets",
            "count_path": "count",
            "count_params": {"limit": 1},
            "max_concurrency": CONCURRENCY,
        },
    )
    return sum([len(batch) async for batch in extractor.extract_stream()])


async def apix_sequential(url: str) -> int:
    from apix_core.extract import HttpExtractor

    return sum([len(batch) async for batch in HttpExtractor(_pages_config(url)).extract_stream()])


def dlt_extract(url: str, workdir: Path) -> int:
    import dlt
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source(
        {
            "client": {
                "base_url": url,
                "paginator": {
                    "type": "page_number",
                    "base_page": 1,
                    "page_param": "page",
                    "total_path": "meta.total_pages",
                },
            },
            "resources": [
                {
                    "name": "items",
                    "endpoint": {
                        "path": "pages",
                        "params": {"total": TOTAL, "delay": DELAY, "per_page": PER_PAGE},
                        "data_selector": "data",
                    },
                }
            ],
        }
    )
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_par_{time.monotonic_ns()}", pipelines_dir=str(workdir / "dlt")
    )
    pipeline.extract(source)
    return _dlt_rows(pipeline)


def _timed(fn: Callable[[], int]) -> float:
    started = time.perf_counter()
    count = fn()
    elapsed = time.perf_counter() - started
    if count != TOTAL:
        raise RuntimeError(f"expected {TOTAL} records, got {count}")
    return count / elapsed


def throughput() -> list[Result]:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    with api_server(1, 1) as url, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        contenders: dict[str, Callable[[], int]] = {
            "apix known pages ×16": lambda: asyncio.run(apix_known_pages(url)),
            "apix known pages ×16, 15 speculative": lambda: asyncio.run(
                apix_known_pages(url, CONCURRENCY - 1)
            ),
            "apix calculated offsets ×16": lambda: asyncio.run(apix_offsets(url)),
            "apix sequential": lambda: asyncio.run(apix_sequential(url)),
        }
        if _dlt_available():
            contenders["dlt rest_api (sequential)"] = lambda: dlt_extract(url, work)
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for fn in contenders.values():  # warm-up: imports, first connections
            fn()
        names = list(contenders)
        for round_ in range(ROUNDS):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                samples[name].append(_timed(contenders[name]))
    median = {name: statistics.median(values) for name, values in samples.items()}
    label = f"extract-parallel {PAGES}×{PER_PAGE}, {DELAY * 1000:.0f} ms/request"
    results = [
        Result(
            f"{label}: {name}",
            median[name],
            "records/s",
            note=f"median of {ROUNDS}, best {max(samples[name]):,.0f}",
        )
        for name in names
    ]
    sequential = median["apix sequential"]
    dlt = median.get("dlt rest_api (sequential)")
    parallel = ("apix known pages ×16", "apix known pages ×16, 15 speculative")
    for name in (*parallel, "apix calculated offsets ×16"):
        results.append(
            Result(f"{name} / apix sequential", median[name] / sequential, "ratio", "≥ 8")
        )
        if dlt:
            results.append(Result(f"{name} / dlt", median[name] / dlt, "ratio", "≥ 20"))
        else:
            results.append(Result(f"{name} / dlt", 0.0, "ratio", "≥ 20", "dlt not installed"))
    return results


async def _limited(url: str, rate: float | None) -> tuple[int, int, float]:
    from apix_core.extract.parallel import ParallelExtractor

    config = {
        "base_url": url,
        "path": "/limited",
        "params": {"rps": LIMIT_RPS, "total": LIMIT_PAGES * 10, "delay": DELAY},
        "data_selector": "data",
        "pagination": {"type": "page_number", "page_size": 10},
        "rate_limit": {"requests_per_second": rate} if rate else {},
        "retry": {"max_attempts": 20},
    }
    extractor = ParallelExtractor(
        config,
        {
            "strategy": "known_pages",
            "total_pages": LIMIT_PAGES,
            "max_concurrency": CONCURRENCY,
            "on_error": "continue",
        },
    )
    records = sum([len(batch) async for batch in extractor.extract_stream()])
    report = extractor.report
    missing = LIMIT_PAGES * 10 - records + sum(1 for _ in report.failed)
    return missing, report.requests, report.completed / report.elapsed


def rate_limited() -> list[Result]:
    results = []
    with api_server(1, 1) as url:
        for name, rate in (("rate set to N", float(LIMIT_RPS)), ("429s only", None)):
            missing, requests, achieved = asyncio.run(_limited(url, rate))
            results.append(
                Result(
                    f"extract-parallel N={LIMIT_RPS}/s, {name}: achieved / N",
                    achieved / LIMIT_RPS,
                    "ratio",
                    "≥ 0.9" if rate else "",
                    f"{achieved:.1f} pages/s, {requests} requests for {LIMIT_PAGES} pages, "
                    f"{missing} records failed",
                )
            )
    return results


def run() -> list[Result]:
    return throughput() + rate_limited()
