"""The per-backend selection of `nox -s tests`: under APIX_TEST_BACKEND_SESSION=true the
postgres session collects only the tests marked ``postgres`` and the sqlite session only the
others (deselected, not skipped); without it everything is collected as before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parents[1]
# One unit test file, one file whose tests take the backend fixture, one postgres folder file.
FILES = [
    "tests/unit/test_settings.py",
    "tests/functional/store/test_schedules.py",
    "tests/functional/postgres/test_query_plans.py",
]


def _collect(backend: str, session: bool) -> set[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIX_TEST_BACKEND")}
    env["APIX_TEST_BACKENDS"] = backend
    if session:
        env["APIX_TEST_BACKEND_SESSION"] = "true"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", *FILES],
        cwd=TESTS.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {line.split("::")[0] for line in proc.stdout.splitlines() if "::" in line}


@pytest.mark.slow
def test_each_backend_session_collects_its_share_and_plain_pytest_collects_all() -> None:
    # GIVEN a unit file, a store file on the backend fixture and a postgres folder file
    # WHEN each backend session collects them
    sqlite = _collect("sqlite", session=True)
    postgres = _collect("postgres", session=True)
    everything = _collect("postgres", session=False)

    # THEN the unit tests run in the sqlite session only, the postgres folder in the postgres
    # session only, and the backend-fixture tests in both (once per backend)
    assert sqlite == {FILES[0], FILES[1]}
    assert postgres == {FILES[1], FILES[2]}
    # AND without the session flag nothing is deselected
    assert everything == set(FILES)
