"""The collector's young-generation threshold while batches are in flight (processing/gc_tuning)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from apix_core.processing.gc_tuning import BATCH_GC_THRESHOLD, batch_gc


@pytest.fixture(autouse=True)
def default_threshold() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


def test_threshold_is_raised_inside_and_restored_after() -> None:
    # WHEN a batch runs
    with batch_gc():
        inside = gc.get_threshold()
    # THEN only the young generation's threshold was raised, and it is back afterwards
    assert inside == (BATCH_GC_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_overlapping_batches_share_one_raise() -> None:
    # GIVEN two batches in flight, the first ending before the second (interleaved tasks)
    first, second = batch_gc(), batch_gc()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    # THEN the threshold stays raised until the last one ends
    assert gc.get_threshold()[0] == BATCH_GC_THRESHOLD
    second.__exit__(None, None, None)
    assert gc.get_threshold() == (700, 10, 10)


def test_restored_after_an_exception() -> None:
    with pytest.raises(RuntimeError), batch_gc():
        raise RuntimeError("processor bug")
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("threshold", [(0, 10, 10), (50_000, 10, 10)])
def test_a_disabled_or_higher_threshold_is_left_alone(threshold: tuple[int, int, int]) -> None:
    # GIVEN an application that tuned the collector itself
    gc.set_threshold(*threshold)
    with batch_gc():
        assert gc.get_threshold() == threshold
    assert gc.get_threshold() == threshold


def test_a_change_made_during_the_batch_is_kept() -> None:
    # GIVEN user code that sets its own threshold while the batch runs
    with batch_gc():
        gc.set_threshold(1000, 5, 5)
    # THEN apix does not overwrite it on the way out
    assert gc.get_threshold() == (1000, 5, 5)
