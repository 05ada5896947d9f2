"""The event loop apix creates (``APIX_EVENT_LOOP``): uvloop when installed, asyncio on demand.

The exactly-once path on uvloop, against each backend: test_uvloop_exactly_once.py in
tests/functional/store/.
"""

from __future__ import annotations

import asyncio

import pytest

from apix_core.errors import ConfigurationError
from apix_core.runtime import close_runner, loop_factory, loop_name, run_sync
from apix_core.runtime.loop import run

uvloop = pytest.importorskip("uvloop", reason="uvloop comes with the [postgres] and [dev] extras")


async def _current_loop() -> str:
    return loop_name(asyncio.get_running_loop())


def test_auto_picks_uvloop_and_asyncio_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN no APIX_EVENT_LOOP (auto), then each explicit choice
    # WHEN apix runs a coroutine on a loop of its own
    # THEN auto and uvloop give uvloop, asyncio gives asyncio's loop
    assert run(_current_loop()) == "uvloop"
    assert run(_current_loop(), event_loop="uvloop") == "uvloop"
    assert run(_current_loop(), event_loop="asyncio") == "asyncio"
    assert loop_factory("asyncio") is None
    monkeypatch.setenv("APIX_EVENT_LOOP", "asyncio")
    assert run(_current_loop()) == "asyncio"


def test_run_sync_uses_the_configured_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN run_sync's long-lived loop, created under each setting
    try:
        # WHEN / THEN the default is uvloop
        assert run_sync(_current_loop()) == "uvloop"
        close_runner()
        # AND APIX_EVENT_LOOP=asyncio gives the next runner asyncio's loop
        monkeypatch.setenv("APIX_EVENT_LOOP", "asyncio")
        assert run_sync(_current_loop()) == "asyncio"
    finally:
        close_runner()


@pytest.mark.parametrize("value", ["tornado", ""])
def test_an_unknown_event_loop_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # GIVEN a setting that names no supported loop ("" falls back to the default)
    monkeypatch.setenv("APIX_EVENT_LOOP", value)
    if not value:
        assert run(_current_loop()) == "uvloop"
        return
    # WHEN apix makes a loop / THEN a clear ConfigurationError names the variable
    with pytest.raises(ConfigurationError, match="APIX_EVENT_LOOP='tornado'"):
        run(_current_loop())
