"""The SQL and file extractors against the plain loops they wrap, alternated in one run.

SQL: 100,000 rows of a SQLite table, apix's keyset pages (5,000 rows each) against one
``SELECT ... ORDER BY id`` fetched whole through SQLAlchemy (no paging: the fastest it gets,
and the memory of the whole table). Files: 200,000 JSONL records in a gzipped file, apix's
pages (5,000) against ``gzip.open`` + ``json.loads`` line by line.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import Result

ROWS = 100_000
LINES = 200_000
ROUNDS = 5


async def _make_table(url: str) -> None:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t (id integer primary key, ts text, name text)"))
        await conn.execute(
            sa.text("INSERT INTO t VALUES (:id, :ts, :name)"),
            [
                {"id": i, "ts": f"2026-11-28T00:00:{i % 60:02d}Z", "name": f"n{i}"}
                for i in range(ROWS)
            ],
        )
    await engine.dispose()


async def _apix_sql(url: str) -> int:
    from apix_core.extract.base import ExtractorFactory

    config = {"url": url, "table": "t", "cursor_column": "id", "batch_size": 5000}
    count = 0
    async with ExtractorFactory.create("sql", config) as extractor:
        async for page in extractor.extract_stream():
            count += len(page)
    return count


async def _raw_sql(url: str) -> int:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT * FROM t ORDER BY id"))).mappings().all()
        count = len([dict(r) for r in rows])
    await engine.dispose()
    return count


async def _apix_file(path: Path) -> int:
    from apix_core.extract.base import ExtractorFactory

    extractor = ExtractorFactory.create("file", {"paths": str(path), "batch_size": 5000})
    count = 0
    async for page in extractor.extract_stream():
        count += len(page)
    return count


def _raw_file(path: Path) -> int:
    count = 0
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            json.loads(line)
            count += 1
    return count


def _rate(fn: Callable[[], int], expected: int) -> float:
    started = time.perf_counter()
    count = fn()
    elapsed = time.perf_counter() - started
    if count != expected:
        raise RuntimeError(f"expected {expected} records, got {count}")
    return count / elapsed


def _compare(contenders: dict[str, Callable[[], int]], expected: int) -> dict[str, float]:
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for fn in contenders.values():
        fn()  # warm-up
    for round_ in range(ROUNDS):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            samples[name].append(_rate(contenders[name], expected))
    return {name: statistics.median(values) for name, values in samples.items()}


def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'src.db'}"
        asyncio.run(_make_table(url))
        sql = _compare(
            {
                "apix sql (keyset pages)": lambda: asyncio.run(_apix_sql(url)),
                "raw SQLAlchemy (one query)": lambda: asyncio.run(_raw_sql(url)),
            },
            ROWS,
        )
        path = Path(tmp) / "big.jsonl.gz"
        path.write_bytes(
            gzip.compress(
                "".join(
                    json.dumps({"id": i, "name": f"n{i}", "ok": True}) + "\n" for i in range(LINES)
                ).encode()
            )
        )
        files = _compare(
            {
                "apix file (pages)": lambda: asyncio.run(_apix_file(path)),
                "raw gzip + json.loads": lambda: _raw_file(path),
            },
            LINES,
        )
    results = [
        Result(f"extract sources: {name}", value, "records/s", note=f"median of {ROUNDS}")
        for name, value in {**sql, **files}.items()
    ]
    results.append(
        Result(
            "extract sources: apix sql / raw SQLAlchemy",
            sql["apix sql (keyset pages)"] / sql["raw SQLAlchemy (one query)"],
            "ratio",
            "≥ 0.7",
        )
    )
    results.append(
        Result(
            "extract sources: apix file / raw gzip+json",
            files["apix file (pages)"] / files["raw gzip + json.loads"],
            "ratio",
            "≥ 0.8",
        )
    )
    return results


if __name__ == "__main__":
    for r in run():
        print(r.row())
