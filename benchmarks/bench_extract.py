"""Extraction throughput and memory on a loopback paginated API (issue 15).

A separate process serves 200 pages × 500 records (page bodies built once, HTTP/1.1
keep-alive; the test suite's API server). Contenders, alternated in the same run:

* **apix → JSONL**: ``HttpExtractor.extract_stream`` (page-number pagination, stop at
  ``total_pages``) into a JSONL file. The JSONL writer here is a minimal one (orjson, one
  ``write`` per page); the extraction engine's own JSONL output is measured separately when
  it exists.
* **raw loop**: ``httpx.AsyncClient`` + ``orjson`` sequential loop — the ceiling; measured
  twice: writing the same JSONL, and fetch + parse only.
* **dlt**: ``rest_api`` source, ``pipeline.extract`` (only when dlt is installed: the nox
  ``bench`` session installs it).

Goals: apix ≥ 3× dlt records/s and ≥ 0.8× the raw loop. Then 1,000,000 records (2,000 pages)
streamed to JSONL in a child process whose peak RSS (``VmHWM``) must stay ≤ 150 MB.
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import Result

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "functional" / "extract" / "extract_api_server.py"
PAGES, PER_PAGE = 200, 500
ROUNDS = 5
RSS_PAGES = 2000  # × 500 = 1,000,000 records
RSS_GOAL_MB = 150


@contextmanager
def api_server(pages: int, per_page: int) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--pages", str(pages), "--records", str(per_page)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"API server did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        proc.wait(10)


def apix_config(url: str) -> dict[str, Any]:
    return {
        "base_url": url,
        "path": "/bench",
        "data_selector": "data",
        "pagination": {"type": "page_number", "total_pages_path": "total_pages"},
    }


async def apix_to_jsonl(url: str, path: Path) -> int:
    import orjson

    from apix_core.extract import HttpExtractor

    count = 0
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    with path.open("wb") as out:
        async for batch in HttpExtractor(apix_config(url)).extract_stream():
            out.write(b"".join([dumps(r, option=newline) for r in batch]))
            count += len(batch)
    return count


async def raw_loop(url: str, path: Path | None) -> int:
    import httpx
    import orjson

    count, page = 0, 1
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    out = path.open("wb") if path is not None else None
    try:
        async with httpx.AsyncClient() as client:
            while True:
                response = await client.get(f"{url}/bench", params={"page": page})
                response.raise_for_status()
                body = orjson.loads(response.content)
                records = body["data"]
                if out is not None:
                    out.write(b"".join([dumps(r, option=newline) for r in records]))
                count += len(records)
                if page >= body["total_pages"]:
                    return count
                page += 1
    finally:
        if out is not None:
            out.close()


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
                    "total_path": "total_pages",
                },
            },
            "resources": [
                {"name": "items", "endpoint": {"path": "bench", "data_selector": "data"}}
            ],
        }
    )
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{time.monotonic_ns()}", pipelines_dir=str(workdir / "dlt")
    )
    pipeline.extract(source)
    return _dlt_rows(pipeline)


def _dlt_rows(pipeline: Any) -> int:
    """Rows dlt extracted (from its extract metrics), so a short run cannot pass as a fast one."""
    info = pipeline.last_trace.last_extract_info
    total = 0
    for load_metrics in info.metrics.values():
        for metrics in load_metrics:
            # Job files are named "<table>.<id>.<format>"; dlt adds its own state table.
            total += sum(
                m.items_count
                for name, m in metrics["job_metrics"].items()
                if name.startswith("items.")
            )
    return total


def _dlt_available() -> bool:
    try:
        import dlt  # noqa: F401
        from dlt.sources.rest_api import rest_api_source  # noqa: F401
    except ImportError:
        return False
    return True


def _timed(fn: Callable[[], int]) -> float:
    started = time.perf_counter()
    count = fn()
    elapsed = time.perf_counter() - started
    if count != PAGES * PER_PAGE:
        raise RuntimeError(f"expected {PAGES * PER_PAGE} records, got {count}")
    return count / elapsed


def throughput() -> list[Result]:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    with api_server(PAGES, PER_PAGE) as url, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        contenders: dict[str, Callable[[], int]] = {
            "apix → JSONL": lambda: asyncio.run(apix_to_jsonl(url, work / "apix.jsonl")),
            "raw httpx+orjson → JSONL": lambda: asyncio.run(raw_loop(url, work / "raw.jsonl")),
            "raw httpx+orjson, no write": lambda: asyncio.run(raw_loop(url, None)),
        }
        if _dlt_available():
            contenders["dlt rest_api pipeline.extract"] = lambda: dlt_extract(url, work)
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for fn in contenders.values():  # warm-up: imports, first connections
            fn()
        names = list(contenders)
        for round_ in range(ROUNDS):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                samples[name].append(_timed(contenders[name]))
    median = {name: statistics.median(values) for name, values in samples.items()}
    results = [
        Result(
            f"extract {PAGES}×{PER_PAGE}: {name}",
            median[name],
            "records/s",
            note=f"median of {ROUNDS}, best {max(samples[name]):,.0f}",
        )
        for name in names
    ]
    apix = median["apix → JSONL"]
    results.append(
        Result(
            "extract: apix / raw loop (both → JSONL)",
            apix / median["raw httpx+orjson → JSONL"],
            "ratio",
            "≥ 0.8",
        )
    )
    results.append(
        Result(
            "extract: apix → JSONL / raw loop (no write)",
            apix / median["raw httpx+orjson, no write"],
            "ratio",
            "≥ 0.8",
        )
    )
    if "dlt rest_api pipeline.extract" in median:
        results.append(
            Result(
                "extract: apix / dlt",
                apix / median["dlt rest_api pipeline.extract"],
                "ratio",
                "≥ 3",
            )
        )
    else:
        results.append(Result("extract: apix / dlt", 0.0, "ratio", "≥ 3", "dlt not installed"))
    return results


def peak_rss_kb() -> int:
    """This process's peak RSS in kB: ``VmHWM`` where Linux has it. ``ru_maxrss`` would do
    elsewhere, but on Linux it keeps the high-water mark of the parent's image the child was
    forked from (measured: a 90 MB parent made a 52 MB extraction read as 91 MB)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss() -> list[Result]:
    with api_server(RSS_PAGES, PER_PAGE) as url, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "million.jsonl"
        started = time.perf_counter()
        child = subprocess.run(
            [sys.executable, __file__, "--stream", url, str(out)],
            capture_output=True,
            text=True,
            check=True,
        )
        elapsed = time.perf_counter() - started
        count, rss_kb = (int(v) for v in child.stdout.split()[:2])
        size = out.stat().st_size
    rss_mb = rss_kb / 1024
    return [
        Result(
            f"extract {count:,} records streamed to JSONL: peak RSS",
            rss_mb,
            "MB",
            f"≤ {RSS_GOAL_MB}",
            f"{elapsed:.1f}s, {size / 1e6:,.0f} MB written",
        )
    ]


def run() -> list[Result]:
    return throughput() + peak_rss()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--stream"]:
        # This process only: the server is another process, so it is not counted.
        count = asyncio.run(apix_to_jsonl(sys.argv[2], Path(sys.argv[3])))
        print(count, peak_rss_kb())
    else:
        for r in run():
            print(r.row())
