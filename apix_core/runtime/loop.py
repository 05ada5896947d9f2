"""The event loop apix runs its own coroutines on: uvloop when installed, else asyncio's.

Each database round trip costs a turn of the event loop. On the 2-core test machine asyncio's
pure-Python selector loop spent about 45 µs of CPU per asyncpg round trip, uvloop about 20 µs
(``benchmarks/bench_postgres.py`` compares both). ``APIX_EVENT_LOOP`` picks: ``auto`` (the
default: uvloop if it can be imported, which the ``[postgres]`` extra installs on Linux and
macOS), ``uvloop`` (required: a :class:`~apix_core.exceptions.ConfigurationError` if missing) or
``asyncio``. It applies where apix creates the loop: :func:`~apix_core.runtime.run_sync`, the CLI
(``apix run``, ``apix worker``...) and :func:`run`. A loop you create yourself (pytest,
``asyncio.run``, the Azure Functions worker's) is yours: apix runs on any.

uvloop is imported when the first loop is made, never by ``import apix_core`` (cold start).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from apix_core.constants import DEFAULT_EVENT_LOOP, EVENT_LOOP_ENV
from apix_core.errors import ConfigurationError

T = TypeVar("T")

EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of new event loops for ``choice`` (default: ``APIX_EVENT_LOOP``); None means
    asyncio's default loop."""
    raw = choice if choice is not None else os.environ.get(EVENT_LOOP_ENV) or DEFAULT_EVENT_LOOP
    name = raw.strip().lower()
    if name not in EVENT_LOOPS:
        raise ConfigurationError(f"{EVENT_LOOP_ENV}={raw!r}: use one of {', '.join(EVENT_LOOPS)}")
    if name == "asyncio" or (name == "auto" and sys.platform == "win32"):
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise ConfigurationError(
                f"{EVENT_LOOP_ENV}=uvloop but uvloop is not installed "
                "(pip install 'apix-core[postgres]' or pip install uvloop)"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``"uvloop"`` or ``"asyncio"``: which kind ``loop`` is (for logs and benchmarks)."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def new_runner(coro: Coroutine[Any, Any, Any], event_loop: str | None = None) -> asyncio.Runner:
    """An ``asyncio.Runner`` on the selected loop, for ``coro``; a bad setting closes ``coro``
    (never awaited: no "coroutine was never awaited" warning) before it raises."""
    try:
        return asyncio.Runner(loop_factory=loop_factory(event_loop))
    except BaseException:
        coro.close()
        raise


def run(coro: Coroutine[Any, Any, T], *, event_loop: str | None = None) -> T:
    """``asyncio.run(coro)`` on the loop ``APIX_EVENT_LOOP`` (or ``event_loop``) selects."""
    with new_runner(coro, event_loop) as runner:
        return runner.run(coro)


__all__ = ["EVENT_LOOPS", "loop_factory", "loop_name", "new_runner", "run"]
