"""``run_sync(coro, eager=True)``: the first step runs on the calling thread inside the
coroutine's real task; a coroutine that never waits needs no turn of the loop, one that waits
goes on in that same task (timeouts, cancellation and context behave as under ``run_sync``)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from apix_core.runtime.invoke import _MAX_FINISHERS, close_runner, run_sync

_var: contextvars.ContextVar[str] = contextvars.ContextVar("eager_test", default="unset")


@pytest.fixture(autouse=True)
def _fresh_runner() -> object:
    close_runner()
    yield None
    close_runner()


def test_a_coroutine_that_never_waits_completes_inside_its_task() -> None:
    # GIVEN a coroutine that reads its task, its loop and a context variable, and never waits
    async def work() -> tuple[bool, bool, str]:
        task = asyncio.current_task()
        _var.set("inside")
        return task is not None, asyncio.get_running_loop() is not None, _var.get()

    # WHEN it runs eagerly
    result = run_sync(work(), eager=True)

    # THEN it ran in a task, on a running loop, and its context did not leak out
    assert result == (True, True, "inside")
    assert _var.get() == "unset"
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # no loop is left marked as running


def test_a_coroutine_that_waits_goes_on_in_the_same_task() -> None:
    # GIVEN a coroutine that waits twice (a timer, then a future another task resolves)
    async def work() -> tuple[int, bool]:
        first = asyncio.current_task()
        await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        loop.call_soon(future.set_result, 42)
        value = await future
        return value, asyncio.current_task() is first

    # WHEN it runs eagerly / THEN the result arrives, from one task all along
    assert run_sync(work(), eager=True) == (42, True)


def test_a_timeout_entered_before_the_first_wait_still_fires() -> None:
    # GIVEN a coroutine that enters asyncio.timeout during its eager step, then waits too long
    async def work() -> str:
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(5)
        except TimeoutError:
            return "timed out"
        return "slept"

    # WHEN it runs eagerly / THEN the timeout cancelled the right task (the one running it)
    assert run_sync(work(), eager=True) == "timed out"


@pytest.mark.parametrize("waits", [False, True])
def test_errors_propagate_and_the_next_call_works(waits: bool) -> None:
    # GIVEN a coroutine that fails, before or after waiting
    async def fail() -> None:
        if waits:
            await asyncio.sleep(0)
        raise ValueError("boom")

    # WHEN it runs eagerly / THEN its error reaches the caller, and the loop serves the next
    with pytest.raises(ValueError, match="boom"):
        run_sync(fail(), eager=True)
    assert run_sync(asyncio.sleep(0, result="next"), eager=True) == "next"


def test_tasks_started_by_eager_calls_run_when_the_loop_next_runs() -> None:
    # GIVEN eager calls that never wait but start background tasks
    done: list[int] = []

    async def start(n: int) -> None:
        async def background() -> None:
            done.append(n)

        asyncio.get_running_loop().create_task(background())

    calls = _MAX_FINISHERS + 8  # more than the finishers kept between loop runs
    for n in range(calls):
        run_sync(start(n), eager=True)

    # WHEN the loop runs again (any call that waits) / THEN every background task ran
    run_sync(asyncio.sleep(0))
    assert sorted(done) == list(range(calls))


def test_tasks_started_by_eager_calls_run_before_the_loop_closes() -> None:
    # GIVEN an eager call that never waits but starts a task whose clean-up is in `finally`
    # (as a store's idle-connection janitor is)
    cleaned: list[str] = []

    async def janitor() -> None:
        try:
            cleaned.append("started")
        finally:
            cleaned.append("finally")

    async def batch() -> None:
        asyncio.get_running_loop().create_task(janitor())

    run_sync(batch(), eager=True)
    assert cleaned == []  # not yet: the loop has not turned
    # WHEN the loop is closed (interpreter exit, graceful shutdown)
    close_runner()
    # THEN the task ran, clean-up included, instead of being cancelled before it started
    assert cleaned == ["started", "finally"]
