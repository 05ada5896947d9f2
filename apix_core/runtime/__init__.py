"""The local runtime: queue workers, schedules, and the drain-or-forever runner of ``apix run``.

Names load on first use (PEP 562): a function handler needs ``run_sync`` without the runner,
the workers and the store they bring.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "close_runner": "apix_core.runtime.invoke",
    "run_sync": "apix_core.runtime.invoke",
    "loop_factory": "apix_core.runtime.loop",
    "loop_name": "apix_core.runtime.loop",
    "LocalRunner": "apix_core.runtime.runner",
    "RunStats": "apix_core.runtime.runner",
    "QueueWorker": "apix_core.runtime.worker",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'apix_core.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
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
