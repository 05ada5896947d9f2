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
from collections.abc import Coroutine
from typing import Any, TypeVar

from apix_core.runtime.loop import new_runner

T = TypeVar("T")

# Re-entrant so that a nested call from inside a running invocation (same thread) reaches
# asyncio.Runner's "cannot be called from a running event loop" error instead of deadlocking.
_lock = threading.RLock()
_runner: asyncio.Runner | None = None


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on the process's long-lived event loop and return its result.

    The loop is created on the first call (uvloop when installed, see
    :mod:`apix_core.runtime.loop`) and kept until :func:`close_runner` (or interpreter exit), so
    pools opened by one invocation are reused by the next.
    """
    global _runner
    with _lock:
        if asyncio._get_running_loop() is not None:
            raise RuntimeError("run_sync() cannot be called from a running event loop")
        if _runner is None:
            _runner = new_runner(coro)
        # The loop straight, not Runner.run: that installs and restores a SIGINT handler on
        # every call (and uvloop then rebuilds its signal wake-up pipe), several hundred µs a
        # Lambda invocation pays for nothing (benchmarks/bench_aws.py).
        loop = _runner.get_loop()
        task = loop.create_task(coro, context=contextvars.copy_context())
        try:
            return loop.run_until_complete(task)
        except BaseException:
            if not task.done():  # interrupted (KeyboardInterrupt): leave nothing half-run
                task.cancel()
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(task)
            raise


def close_runner() -> None:
    """Close the long-lived loop (cancelling leftover tasks); the next :func:`run_sync` opens a
    new one. Called at interpreter exit; tests and graceful shutdowns may call it earlier."""
    global _runner
    with _lock:
        runner, _runner = _runner, None
        if runner is not None:
            runner.close()


atexit.register(close_runner)

__all__ = ["close_runner", "run_sync"]
