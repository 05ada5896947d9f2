"""The local runtime: queue workers, schedules, and the drain-or-forever runner of ``apix run``."""

from apix_core.runtime.invoke import close_runner, run_sync
from apix_core.runtime.loop import loop_factory, loop_name
from apix_core.runtime.runner import LocalRunner, RunStats
from apix_core.runtime.worker import QueueWorker

__all__ = [
    "LocalRunner",
    "QueueWorker",
    "RunStats",
    "close_runner",
    "loop_factory",
    "loop_name",
    "run_sync",
]
