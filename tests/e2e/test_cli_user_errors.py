"""User errors of the real ``apix`` process: one line on stderr, exit 2, no traceback; and
an interrupted run says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

APIX = [sys.executable, "-m", "apix_core.cli.main"]


def _apix(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*APIX, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.slow
def test_postgres_url_without_asyncpg_says_which_extra(tmp_path: Path) -> None:
    # GIVEN a PostgreSQL URL, and an interpreter where asyncpg cannot be imported
    code = (
        "import sys; sys.modules['asyncpg'] = None; "
        "from apix_core.cli.main import main; sys.argv = ['apix', 'entities', 'list']; main()"
    )
    env = {
        "APIX_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
        "APIX_TENANT_ID": "t1",
    }

    # WHEN a command opens the store
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )

    # THEN one line tells how to install the extra
    assert "pip install 'apix-core[postgres]'" in _one_line_error(result)


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [["entities", "list", "-t", "t1"], ["send", "q", "{}", "-t", "t1"], ["db", "upgrade"]],
)
def test_postgres_database_that_does_not_exist(pg_server: str, command: list[str]) -> None:
    # GIVEN a DSN naming a database that does not exist on the local server
    name = f"apix_missing_{uuid.uuid4().hex[:8]}"
    env = {"APIX_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}"}

    # WHEN a command opens it
    line = _one_line_error(_apix(*command, env=env))

    # THEN the error names the database and how to create it
    assert f'database "{name}" does not exist' in line
    assert f"createdb -h 127.0.0.1 -p 5432 -U postgres {name}" in line


@pytest.mark.slow
def test_postgres_role_that_does_not_exist(pg_server: str) -> None:
    # GIVEN a DSN naming a role that does not exist
    role = f"apix_nobody_{uuid.uuid4().hex[:8]}"
    env = {"APIX_DATABASE_URL": f"postgresql://{role}@127.0.0.1:5432/test"}

    # WHEN a command connects
    line = _one_line_error(_apix("dlq", "list", env=env))

    # THEN the error names the role and how to create it
    assert f'role "{role}" does not exist' in line
    assert "createuser" in line


@pytest.mark.slow
def test_ctrl_c_says_interrupted(tmp_path: Path, cli_env) -> None:
    # GIVEN an app running forever
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            """
            from apix_core import App, Message

            app = App("idle", tenant_id="t1")

            @app.processor("sink", consumes="inbox")
            def sink(message: Message) -> None: ...
            """
        )
    )
    proc = subprocess.Popen(
        [*APIX, "run", str(app), "--forever"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **cli_env},
    )
    # (once it says its workers are up: a signal before that would hit the interpreter start)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert "running; Ctrl-C or SIGTERM stops it" in first, first

    # WHEN it gets Ctrl-C
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)

    # THEN it stops gracefully and says it was interrupted, not "drained"
    assert proc.returncode == 0, err
    assert "interrupted (0 message(s) still queued)" in out
    assert "drained" not in out
