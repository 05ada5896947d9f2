"""Extraction outputs: JSONL (gzip, record-date partitions, batching, flat memory), queue
(record-derived message ids: a re-run adds no downstream work), entity (hash, versions,
duplicates)."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from apix_core import App, Message, ProcessorContext, tenant_context
from apix_core.extract.base import OutputFactory
from apix_core.extract.exceptions import ExtractConfigError
from apix_core.extract.outputs import (
    EntityOutput,
    JsonlOutput,
    PartitionError,
    QueueOutput,
    RecordKeyError,
)
from apix_core.runtime.runner import LocalRunner
from apix_core.store.database import Database
from apix_core.store.repositories import EntityRepository


def _orders(n: int, start: int = 0) -> list[dict[str, Any]]:
    days = ["2026-11-27T23:59:59Z", "2026-11-28T00:00:00+00:00", "2026-11-29T12:00:00Z"]
    return [{"id": i, "created": days[i % 3], "total": i * 1.5} for i in range(start, start + n)]


async def test_jsonl_partitions_by_the_records_date_and_gzips(tmp_path: Path) -> None:
    # GIVEN a gzip JSONL output partitioned by each order's own `created` date
    output = OutputFactory.create(
        "jsonl",
        {"path": str(tmp_path), "partition_by": "created", "compression": "gzip"},
    )
    assert isinstance(output, JsonlOutput)

    # WHEN 30 orders of three days are written
    result = await output.write(_orders(30))

    # THEN each day's folder holds that day's orders, in complete gzip files
    by_day = {}
    for path in tmp_path.rglob("*.jsonl.gz"):
        rows = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
        by_day[path.parent.name] = sorted(r["id"] for r in rows)
    assert by_day == {
        "date=2026-11-27": list(range(0, 30, 3)),
        "date=2026-11-28": list(range(1, 30, 3)),
        "date=2026-11-29": list(range(2, 30, 3)),
    }
    assert result.records_written == 30 and len(result.locations) == 3
    assert not list(tmp_path.rglob(".apix-*"))


async def test_jsonl_refuses_a_record_without_its_partition_date(tmp_path: Path) -> None:
    output = JsonlOutput({"path": str(tmp_path), "partition_by": "created"})
    with pytest.raises(PartitionError, match="partition_by='created'"):
        await output.write([{"id": 1, "created": "yesterday"}])
    kept = JsonlOutput(
        {"path": str(tmp_path), "partition_by": "created", "on_missing_partition": "unknown"}
    )
    await kept.write([{"id": 1}])
    assert [p.parent.name for p in tmp_path.rglob("*.jsonl")] == ["date=unknown"]
    with pytest.raises(ExtractConfigError, match=r"output\.compression"):
        JsonlOutput({"path": str(tmp_path), "compression": "zip"})


async def test_a_rerun_of_a_batch_rewrites_the_same_file_instead_of_adding_one(
    tmp_path: Path,
) -> None:
    # GIVEN a batch written by a run, and the same run (same id and position) repeating it
    for _ in range(2):
        out = JsonlOutput({"path": str(tmp_path)}, run_id="run-1", seq=4)
        await out.write(_orders(10))

    # THEN there is one file, named by run and sequence, with the batch once
    files = list(tmp_path.glob("*.jsonl"))
    assert [f.name for f in files] == ["part-run-1-000004.jsonl"]
    assert len(files[0].read_text().splitlines()) == 10


async def test_output_batches_flush_at_size_bytes_and_interval(tmp_path: Path) -> None:
    # GIVEN outputs flushing at 25 records, or at 2,000 bytes
    by_count = JsonlOutput({"path": str(tmp_path / "a"), "batch": {"batch_size": 25}})
    by_bytes = JsonlOutput(
        {"path": str(tmp_path / "b"), "batch": {"batch_size": 10_000, "max_batch_bytes": 2_000}}
    )

    async def pages(n: int, size: int) -> AsyncIterator[list[dict[str, Any]]]:
        for p in range(n):
            yield _orders(size, p * size)

    # WHEN 100 records arrive in pages of 10
    a = await by_count.write_stream(pages(10, 10))
    b = await by_bytes.write_stream(pages(10, 10))

    # THEN the first wrote 4 files of 25 (pages split at the limit); the second flushed each
    # time 2 KB was reached (a file exceeds it by less than the page that reached it)
    assert (a.records_written, a.batches_written) == (100, 4)
    sizes = [len(p.read_text().splitlines()) for p in sorted((tmp_path / "a").glob("*.jsonl"))]
    assert sizes == [25, 25, 25, 25]
    assert b.records_written == 100 and b.batches_written > 1
    page_bytes = max(len(json.dumps(r)) + 1 for r in _orders(100)) * 10
    files_b = list((tmp_path / "b").glob("*.jsonl"))
    assert all(p.stat().st_size < 2_000 + page_bytes for p in files_b)
    assert all(p.stat().st_size >= 2_000 for p in sorted(files_b)[:-1])

    # AND a stalled stream still flushes what it holds after flush_interval
    timed = JsonlOutput({"path": str(tmp_path / "c"), "batch": {"flush_interval": 0.05}})

    async def stalls() -> AsyncIterator[list[dict[str, Any]]]:
        yield _orders(3)
        await asyncio.sleep(0.5)
        assert len(list((tmp_path / "c").glob("*.jsonl"))) == 1  # written while we slept
        yield _orders(2, 3)

    c = await timed.write_stream(stalls())
    assert (c.records_written, c.batches_written) == (5, 2)


async def test_write_stream_holds_memory_flat(tmp_path: Path) -> None:
    # GIVEN a stream of 200,000 records of ~150 bytes (~30 MB of JSON) in pages of 1,000
    async def pages() -> AsyncIterator[list[dict[str, Any]]]:
        for p in range(200):
            yield [
                {"id": i, "created": "2026-11-28T10:00:00Z", "text": "x" * 100}
                for i in range(p * 1000, p * 1000 + 1000)
            ]
            await asyncio.sleep(0)

    output = JsonlOutput({"path": str(tmp_path), "fsync": False, "batch": {"batch_size": 5_000}})

    # WHEN it is written, measuring the peak of Python allocations
    tracemalloc.start()
    try:
        result = await output.write_stream(pages())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # THEN everything was written while the peak stayed a small fraction of the data
    assert result.records_written == 200_000
    total = sum(p.stat().st_size for p in tmp_path.glob("*.jsonl"))
    assert total > 25_000_000
    assert peak < 8_000_000, f"peak {peak:,} bytes for {total:,} bytes written"


async def test_queue_output_rerun_does_not_duplicate_downstream_work(
    database_url: str, queue_url: str
) -> None:
    # GIVEN an app whose processor consumes the extracted orders
    app = App("shop", tenant_id="acme", database_url=database_url, queue_url=queue_url)
    seen: list[int] = []

    @app.processor("bill", consumes="orders")
    async def bill(message: Message, ctx: ProcessorContext) -> None:
        seen.append(message.payload["id"])

    async with app:
        # WHEN an extraction sends 50 orders, then a re-run sends them again, one changed
        first = QueueOutput({"queue": "orders", "key": "id"}, app=app, pipeline_id="orders")
        await first.write(_orders(50))
        changed = _orders(50)
        changed[7] = {**changed[7], "total": 999}
        again = QueueOutput({"queue": "orders", "key": "id"}, app=app, pipeline_id="orders")
        await again.write(changed)
        await LocalRunner(app, fire_schedules=False).run()

    # THEN each order was billed once, plus the changed one's new version
    assert sorted(seen) == sorted([*range(50), 7])
    ids = [first.message_id(r, "acme") for r in _orders(3)]
    assert ids == [first.message_id(r, "acme") for r in _orders(3)] and len(set(ids)) == 3


async def test_queue_output_needs_a_key_on_every_record(database_url: str) -> None:
    app = App("shop", tenant_id="acme", database_url=database_url)
    output = QueueOutput({"queue": "orders", "key": "order.id"}, app=app)
    with pytest.raises(RecordKeyError, match=r"order\.id"):
        await output.write([{"id": 1}])


async def test_entity_output_records_hashes_versions_and_duplicates(db: Database) -> None:
    # GIVEN an entity output for orders keyed by id
    def output() -> EntityOutput:
        return EntityOutput(
            {"canonical_type": "order", "source": "shop-api", "attributes": ["total"]},
            database=db,
            pipeline_id="orders",
        )

    with tenant_context("acme"):
        # WHEN 20 orders are written, then again with 5 changed
        await output().write(_orders(20))
        changed = [{**r, "total": -1} if r["id"] < 5 else r for r in _orders(20)]
        second = output()
        result = await second.write(changed)
        repo = EntityRepository(db)
        found = await repo.find("order", "shop-api", "3")
        same = await repo.find("order", "shop-api", "12")
        count = await repo.count()

    # THEN 20 entities exist, 5 with a second version, 15 detected as duplicates
    assert count == 20
    assert found is not None and found.version == 2 and found.attributes == {"total": -1}
    assert same is not None and same.version == 1
    assert (second.versions, second.duplicates, second.created) == (5, 15, 0)
    assert result.details == {"created": 0, "new_versions": 5, "duplicates": 15}


def test_outputs_are_registered_by_name() -> None:
    assert {"entity", "jsonl", "queue"} <= set(OutputFactory.names())
    start = time.perf_counter()
    assert OutputFactory.get("jsonl") is JsonlOutput
    assert time.perf_counter() - start < 1
