"""The ``apix`` command as a real process: the console module, its import cost, a terminal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PIPELINE = """
    import json
    from pathlib import Path

    from apix_core import App, Message, ProcessorContext

    app = App("cli-test", tenant_id="t1")
    OUT = Path(__file__).with_name("seen.jsonl")

    @app.processor("tick", schedule="0 0 1 1 *", produces=["numbers"])
    def tick(message: Message, ctx: ProcessorContext) -> None:
        for i in range(3):
            ctx.send("numbers", {"n": i})

    @app.processor("double", consumes="numbers", produces=["doubled"])
    def double(message: Message) -> dict:
        return {"n": message.payload["n"] * 2}

    @app.processor("sink", consumes="doubled")
    def sink(message: Message) -> None:
        with OUT.open("a") as fh:
            fh.write(json.dumps(message.payload) + "\\n")
"""


def _seen(path: Path) -> list[dict]:
    file = path.with_name("seen.jsonl")
    if not file.exists():
        return []
    return [json.loads(line) for line in file.read_text().splitlines()]


@pytest.mark.slow
def test_console_script_module_and_import_cost(tmp_path: Path, cli_env) -> None:
    # GIVEN a fresh interpreter
    # WHEN apix_core is imported, and the CLI module runs with a bad argument
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, apix_core; print('apix_core.cli' in sys.modules, 'typer' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    failed = subprocess.run(
        [sys.executable, "-m", "apix_core.cli.main", "graph", str(tmp_path / "nope.py")],
        capture_output=True,
        text=True,
    )
    version = subprocess.run(
        [sys.executable, "-m", "apix_core.cli.main", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )

    # THEN importing apix_core does not load the CLI, and errors exit 2 without a traceback
    assert probe.stdout.split() == ["False", "False"]
    assert failed.returncode == 2
    assert "no such file" in failed.stderr and "Traceback" not in failed.stderr
    assert version.stdout.startswith("apix-core ")


@pytest.mark.slow
def test_run_on_a_terminal_shows_the_live_table(write_app, cli_env, tmp_path: Path) -> None:
    # GIVEN an app, and stdout attached to a pseudo-terminal (so rich uses its Live view)
    import os
    import pty

    path = write_app(PIPELINE)
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}

    # WHEN apix run executes in a real process on that terminal
    proc = subprocess.Popen(
        [sys.executable, "-m", "apix_core.cli.main", "run", str(path)],
        stdout=follower,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    rc = proc.wait(timeout=120)
    os.close(leader)
    screen = b"".join(chunks).decode("utf-8", "replace")

    # THEN the run drained, and the live table and the summary were drawn
    assert rc == 0, proc.stderr.read().decode() if proc.stderr else ""
    assert "apix run: cli-test" in screen
    assert "apix.schedule.tick" in screen
    assert "7 completed" in screen
    assert sorted(r["n"] for r in _seen(path)) == [0, 2, 4]
