"""A function_app.py as the worker loads it: a fresh interpreter imports the file and finds one
module-level FunctionApp with the processors' functions."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PIPELINE = """
from apix_core import App, Message, ProcessorContext

app = App("shop", tenant_id="acme")


@app.processor("ingest", consumes="raw.orders")
async def ingest(message: Message, ctx: ProcessorContext) -> None:
    pass


@app.processor("tick", schedule="0 * * * *")
async def tick(message: Message, ctx: ProcessorContext) -> None:
    pass
"""

FUNCTION_APP = """
from apix_azure import function_app
from pipeline import app as pipeline

app = function_app(pipeline)
"""

PROBE = """
import importlib.util, inspect, json, sys
import azure.functions as func
spec = importlib.util.spec_from_file_location("function_app", "function_app.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
apps = [v for v in vars(module).values() if isinstance(v, func.FunctionApp)]
out = {}
for f in apps[0].get_functions():
    out[f.get_function_name()] = {
        "params": list(inspect.signature(f.get_user_function()).parameters),
        "bindings": [b["type"] for b in json.loads(f.get_function_json())["bindings"]],
    }
print(json.dumps({"apps": len(apps), "functions": out}))
"""


@pytest.mark.slow
def test_generated_function_app_module_loads_in_a_fresh_interpreter(tmp_path: Path) -> None:
    # GIVEN a project folder with the user's pipeline and the two-line function_app.py
    (tmp_path / "pipeline.py").write_text(textwrap.dedent(PIPELINE))
    (tmp_path / "function_app.py").write_text(textwrap.dedent(FUNCTION_APP))
    # WHEN a fresh interpreter loads function_app.py as the worker does (by file)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
    )
    # THEN it finds exactly one FunctionApp with one function per processor
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["apps"] == 1
    assert found["functions"] == {
        "ingest": {"params": ["msg"], "bindings": ["queueTrigger"]},
        "tick": {"params": ["timer"], "bindings": ["timerTrigger"]},
    }
