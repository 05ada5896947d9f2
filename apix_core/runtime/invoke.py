"""Run coroutines from synchronous function handlers on one event loop kept for the process.

asyncpg connections belong to the event loop that opened them, so a handler that calls
``asyncio.run()`` per invocation gets a new loop each time and :class:`~apix_core.store.database.
Database` has to rebuild its pool: every warm invocation pays a new connection. :func:`run_sync`
keeps ONE loop alive (a module-level :class:`asyncio.Runner`) across calls, so a warm function
(a module-global ``App`` or ``Database``) reuses its pooled connections::

    app = App("orders")  # module global: kept while the function is warm

    def handler(event, context):  # AWS Lambda, Azure Functions (sync), ...
        return run_sync(handle(app, event))  # handle: your async code

One invocation at a time per process: calls are serialised by a lock (a second thread calling
meanwhile waits for the first to finish), which is how Lambda runs handlers; on Azure Functions
set ``PYTHON_THREADPOOL_THREAD_COUNT=1`` or accept that concurrent invocations of one worker
process queue up. Each call runs in a copy of the caller's ``contextvars`` context, as
``asyncio.run`` does, so context set by one invocation does not leak into the next. Do not call it
from a running event loop (use ``await``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import threading
import types
from asyncio import events, tasks
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

from apix_core.runtime.loop import new_runner

T = TypeVar("T")

# Re-entrant so that a nested call from inside a running invocation (same thread) reaches
# asyncio.Runner's "cannot be called from a running event loop" error instead of deadlocking.
_lock = threading.RLock()
_runner: asyncio.Runner | None = None
#: ``_runner``'s loop while there is one.
_the_loop: asyncio.AbstractEventLoop | None = None
#: Tasks of eager calls that completed without the loop (see _run_eager): each ends at its
#: first step, run when the loop next runs; drained every _MAX_FINISHERS calls at the latest.
_finishers: list[asyncio.Task[Any]] = []
#: A drain is a loop run (tens of µs with uvloop): 128 keeps it under 1 µs a call, and bounds
#: how many invocations a callback an eager step scheduled may wait (benchmarks/bench_aws.py).
_MAX_FINISHERS = 128


def run_sync(coro: Coroutine[Any, Any, T], *, eager: bool = False) -> T:
    """Run ``coro`` to completion on the process's long-lived event loop and return its result.

    The loop is created on the first call (uvloop when installed, see
    :mod:`apix_core.runtime.loop`) and kept until :func:`close_runner` (or interpreter exit), so
    pools opened by one invocation are reused by the next.

    ``eager=True`` runs ``coro`` on the calling thread until it first waits, as Python 3.12's
    eager tasks do, and needs no turn of the loop at all when it never waits (a batch on the
    embedded store, or without persistence: the loop's per-run set-up was about half of a
    warm Lambda batch's cost). A coroutine that waits goes on in its task, on the loop.
    """
    global _runner, _the_loop
    with _lock:
        if asyncio._get_running_loop() is not None:
            raise RuntimeError("run_sync() cannot be called from a running event loop")
        if _runner is None:
            _runner = new_runner(coro)
            _the_loop = _runner.get_loop()
        # The loop straight, not Runner.run: that installs and restores a SIGINT handler on
        # every call (and uvloop then rebuilds its signal wake-up pipe), several hundred µs a
        # Lambda invocation pays for nothing (benchmarks/bench_aws.py). Kept beside the runner:
        # Runner.get_loop() re-checks its state on every call.
        loop = _the_loop
        assert loop is not None
        context = contextvars.copy_context()
        if eager:
            return _run_eager(loop, coro, context)
        task = loop.create_task(coro, context=context)
        return _complete(loop, task)


def _complete(loop: asyncio.AbstractEventLoop, task: asyncio.Task[T]) -> T:
    try:
        return loop.run_until_complete(task)
    except BaseException:
        if not task.done():  # interrupted (KeyboardInterrupt): leave nothing half-run
            task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(task)
        raise


class _Eager:
    """The state a task shares with the eager first step of its coroutine."""

    __slots__ = ("coro", "done", "waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.done = False
        self.waiting_on: Any = None

    async def finish(self) -> Any:
        """The task's coroutine: nothing when the first step completed it, else the rest."""
        if self.done:
            return None
        return await _resume(self.coro, self.waiting_on)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, T], waiting_on: Any) -> Generator[Any, Any, T]:
    """Drive a coroutine suspended on ``waiting_on`` (what it yielded) from inside a task, as
    ``await`` would have: the task waits on what it yields, and sends or throws back."""
    pending = waiting_on
    while True:
        try:
            sent = yield pending
        except BaseException as exc:  # cancellation included: the coroutine decides
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


def _run_eager(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, T],
    context: contextvars.Context,
) -> T:
    """The first step of ``coro`` on this thread, inside its real task (``current_task()``,
    ``asyncio.timeout``, locks... see the task that goes on if it waits) with ``loop`` as the
    running loop; the loop runs only when the coroutine waits."""
    state = _Eager(coro)
    task = loop.create_task(state.finish(), context=context)
    events._set_running_loop(loop)
    tasks._enter_task(loop, task)
    try:
        state.waiting_on = context.run(coro.send, None)
    except StopIteration as stop:
        state.done = True
        result: T = stop.value
    except BaseException:
        state.done = True
        raise
    finally:
        tasks._leave_task(loop, task)
        events._set_running_loop(None)
        if state.done:
            # The task ends at its first step; anything the step scheduled runs with it.
            _finishers.append(task)
            if len(_finishers) >= _MAX_FINISHERS:
                last = _finishers[-1]
                _finishers.clear()
                loop.run_until_complete(last)
    if not state.done:
        rest: T = _complete(loop, task)
        return rest
    return result


def close_runner() -> None:
    """Close the long-lived loop (cancelling leftover tasks); the next :func:`run_sync` opens a
    new one. Called at interpreter exit; tests and graceful shutdowns may call it earlier."""
    global _runner, _the_loop
    with _lock:
        runner, _runner, _the_loop = _runner, None, None
        pending = _finishers[-1] if _finishers else None
        _finishers.clear()
        if runner is not None:
            if pending is not None and not runner.get_loop().is_closed():
                # Eager batches' tasks (and what their first step scheduled, such as a store's
                # clean-up task) have not started yet: run them before the loop closes, or
                # cancelling them would skip their `finally` (connections closed politely).
                with contextlib.suppress(Exception):
                    runner.get_loop().run_until_complete(pending)
            runner.close()


atexit.register(close_runner)

__all__ = ["close_runner", "run_sync"]
