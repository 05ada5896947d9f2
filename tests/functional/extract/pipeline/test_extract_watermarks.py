"""Watermarks in the metadata store (``apix_watermarks``, migration 0006) and the incremental
filter: compare-and-set commits, tenants, lateness, out-of-order records, bounded boundary."""

from __future__ import annotations

import random

import pytest

from apix_core import tenant_context
from apix_core.errors import ConfigurationError
from apix_core.extract.incremental import Incremental, IncrementalError, IncrementalRun
from apix_core.extract.watermarks import (
    InvalidWatermarkError,
    Watermark,
    WatermarkConflictError,
    WatermarkStore,
)
from apix_core.store.database import Database


async def test_a_watermark_round_trips_and_moves_by_compare_and_set(db: Database) -> None:
    # GIVEN no watermark for the pipeline
    store = WatermarkStore(db, "acme")
    empty = await store.load("orders")
    assert empty.version == 0 and empty.last_value is None

    # WHEN two runs that both loaded version 0 commit
    first = await store.commit(empty, last_value="2026-11-30T10:00:00Z", boundary=["h1"])
    with pytest.raises(WatermarkConflictError):
        await store.commit(empty, last_value="2026-11-30T11:00:00Z")

    # THEN the first wins, reads back exactly, and the next commit needs its version
    loaded = await store.load("orders")
    assert loaded == first
    assert (loaded.last_value, loaded.boundary, loaded.version) == (
        "2026-11-30T10:00:00Z",
        ("h1",),
        1,
    )
    second = await store.commit(loaded, last_value=7, boundary=[], position={"pages": 3})
    assert (second.version, second.last_value, second.position) == (2, 7, {"pages": 3})
    with pytest.raises(WatermarkConflictError):
        await store.commit(loaded, last_value=8)


async def test_watermarks_are_per_tenant_pipeline_and_key(db: Database) -> None:
    # GIVEN watermarks of two tenants, two pipelines, two keys
    for tenant in ("acme", "globex"):
        store = WatermarkStore(db, tenant)
        for pipeline in ("orders", "users"):
            for key in ("default", "eu"):
                await store.commit(
                    await store.load(pipeline, key), last_value=f"{tenant}/{pipeline}/{key}"
                )

    # WHEN acme reads and resets its orders
    with tenant_context("acme"):
        acme = WatermarkStore(db)
        listed = [(w.pipeline_id, w.key, w.last_value) for w in await acme.list()]
        removed = await acme.reset("orders")

    # THEN it saw only its own rows, removed only its own, and globex is untouched
    assert listed == [
        ("orders", "default", "acme/orders/default"),
        ("orders", "eu", "acme/orders/eu"),
        ("users", "default", "acme/users/default"),
        ("users", "eu", "acme/users/eu"),
    ]
    assert removed == 2
    assert (await WatermarkStore(db, "acme").load("orders")).version == 0
    assert (await WatermarkStore(db, "globex").load("orders", "eu")).last_value == (
        "globex/orders/eu"
    )


async def test_bad_watermark_names_and_values_are_typed_errors(db: Database) -> None:
    store = WatermarkStore(db, "acme")
    with pytest.raises(InvalidWatermarkError, match="pipeline_id"):
        await store.load("")
    with pytest.raises(InvalidWatermarkError, match="key"):
        await store.load("orders", "x" * 201)
    with pytest.raises(InvalidWatermarkError, match="last_value"):
        await store.commit(Watermark("orders"), last_value=float("nan"))


# -- the incremental filter (no database needed, but fed from stored watermarks) -------------
def _rec(i: int, ts: str, **extra: object) -> dict[str, object]:
    return {"id": i, "updated_at": ts, **extra}


async def test_an_incremental_run_resumes_after_the_stored_value_without_boundary_repeats(
    db: Database,
) -> None:
    # GIVEN a first run that saw two records at the final timestamp
    spec = Incremental("updated_at", initial_value="2026-11-01T00:00:00Z")
    store = WatermarkStore(db, "acme")
    run = spec.start(await store.load("orders"))
    first = run.filter(
        [
            _rec(1, "2026-10-31T23:00:00Z"),  # before initial_value: late
            _rec(2, "2026-11-02T00:00:00Z"),
            _rec(3, "2026-11-03T00:00:00Z"),
            _rec(4, "2026-11-03T00:00:00Z"),
        ]
    )
    last_value, boundary = run.state()
    await store.commit(await store.load("orders"), last_value=last_value, boundary=boundary)

    # WHEN the next run's API (queried with >=) returns the boundary records again, plus news
    run2 = spec.start(await store.load("orders"))
    second = run2.filter(
        [
            _rec(3, "2026-11-03T00:00:00Z"),
            _rec(4, "2026-11-03T00:00:00Z"),
            _rec(5, "2026-11-03T00:00:00Z"),  # same timestamp, a record not seen before
            _rec(6, "2026-11-04T00:00:00+00:00"),
        ]
    )

    # THEN each record is emitted exactly once over both runs
    assert [r["id"] for r in first] == [2, 3, 4]
    assert run.late == 1
    assert [r["id"] for r in second] == [5, 6]
    assert run2.duplicates == 2
    assert run2.last_value == "2026-11-04T00:00:00+00:00"
    assert run2.lower_bound == "2026-11-03T00:00:00Z"


def test_out_of_order_records_within_a_run_are_all_kept() -> None:
    # GIVEN a stored watermark at 100 and pages arriving newest first
    run = Incremental("seq").start(Watermark("p", last_value=100, version=1))

    # WHEN the batches go through in reverse order
    kept = run.filter([{"seq": 130}, {"seq": 120}]) + run.filter([{"seq": 110}, {"seq": 101}])

    # THEN every record newer than the watermark is kept, and the maximum is 130
    assert [r["seq"] for r in kept] == [130, 120, 110, 101]
    assert run.state() == (130, run.state()[1]) and len(run.state()[1]) == 1


def test_max_lateness_keeps_records_inside_the_window_and_counts_older_ones_late() -> None:
    spec = Incremental("ts", max_lateness="1h")
    run = spec.start(Watermark("p", last_value="2026-11-30T12:00:00Z", version=1))
    kept = run.filter(
        [
            {"ts": "2026-11-30T11:30:00Z"},  # 30 min late: inside the window
            {"ts": "2026-11-30T10:59:59Z"},  # older than watermark - 1h: late
            {"ts": "2026-11-30T12:00:01Z"},
        ]
    )
    assert [r["ts"] for r in kept] == ["2026-11-30T11:30:00Z", "2026-11-30T12:00:01Z"]
    assert run.late == 1
    assert run.is_late("2026-11-30T10:00:00Z") and not run.is_late("2026-11-30T11:00:00Z")
    assert run.lower_bound == "2026-11-30T12:00:00Z"  # lateness accepts, lookback re-reads
    looking_back = Incremental("ts", lookback="2h").start(
        Watermark("p", last_value="2026-11-30T12:00:00Z", version=1)
    )
    assert looking_back.lower_bound == "2026-11-30T10:00:00+00:00"
    assert looking_back.is_late("2026-11-30T09:59:59Z")


def test_end_value_bounds_a_backfill() -> None:
    run = Incremental("n", initial_value=10, end_value=20).start(Watermark("p"))
    kept = run.filter([{"n": 5}, {"n": 10}, {"n": 19}, {"n": 20}, {"n": 25}])
    assert [r["n"] for r in kept] == [10, 19]
    assert run.past_end == 2 and run.late == 1


def test_bad_cursors_are_typed_errors_naming_the_field() -> None:
    run = Incremental("meta.updated").start(Watermark("p", last_value=5, version=1))
    with pytest.raises(IncrementalError, match=r"no cursor 'meta.updated'"):
        run.filter([{"meta": {}}])
    with pytest.raises(IncrementalError, match="mixed types"):
        run.filter([{"meta": {"updated": "abc"}}])
    kept = Incremental("x", on_missing="include").start(Watermark("p")).filter([{"y": 1}])
    assert kept == [{"y": 1}]
    with pytest.raises(ConfigurationError, match="on_missing"):
        Incremental("x", on_missing="skip")
    with pytest.raises(ConfigurationError, match="max_lateness"):
        Incremental("x", max_lateness="soon")


def test_boundary_state_stays_small_over_100k_records() -> None:
    # GIVEN 100,000 records, 5 per timestamp, shuffled within each page of 1,000 (out of order)
    rng = random.Random(15)
    records = [{"id": i, "ts": 1_700_000_000 + i // 5} for i in range(100_000)]
    run = Incremental("ts").start(Watermark("p"))
    peak = 0

    # WHEN they stream through the filter page by page
    emitted = 0
    for start in range(0, len(records), 1_000):
        page = records[start : start + 1_000]
        rng.shuffle(page)
        emitted += len(run.filter(page))
        peak = max(peak, len(run.state()[1]))

    # THEN every record passed once and the boundary never held more than one timestamp's
    # records (dlt keeps a hash per record here)
    assert emitted == 100_000
    assert peak <= 5 and run.peak_boundary <= 5
    last_value, boundary = run.state()
    assert last_value == 1_700_000_000 + 99_999 // 5 and len(boundary) == 5

    # AND a resumed run from that state re-emits nothing of the last page
    again = IncrementalRun(
        Incremental("ts"),
        Watermark("p", last_value=last_value, boundary=tuple(boundary), version=1),
    )
    assert again.filter(records[-1_000:]) == []


def test_a_snapshot_restores_the_same_run() -> None:
    spec = Incremental("n")
    run = spec.start(Watermark("p", last_value=10, version=1))
    run.filter([{"n": 15}, {"n": 12}])
    restored = IncrementalRun.restore(spec, run.snapshot(), "p")
    # Judged against the run's start (10), not its running maximum (15): 11 is still new.
    assert [r["n"] for r in restored.filter([{"n": 11}, {"n": 9}, {"n": 15}])] == [11]
    assert restored.state() == run.state()
    assert restored.duplicates == 1 and restored.late == 1
