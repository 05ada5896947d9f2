"""Fixtures for CLI tests: the real ``apix`` command, in-process, on the test's databases."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from apix_core.cli.main import cli


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, queue_url: str) -> dict[str, str]:
    """Point every command at this test's store and queue databases."""
    env = {"APIX_DATABASE_URL": database_url, "APIX_QUEUE_URL": queue_url}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def apix(cli_env: dict[str, str]) -> Callable[..., Result]:
    """``apix(*args, input=None)`` runs the real command line and returns the CLI Result."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def write_app(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a Python module (dedented source) to ``tmp_path`` and return its path."""

    def write(source: str, name: str = "app.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write
