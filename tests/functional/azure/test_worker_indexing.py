"""The generated ``function_app.py`` indexed by the real Python worker's own code.

``azure-functions-runtime`` (the worker's library, Python ≥ 3.13) is the worker package that
installs here: its ``loader.index_function_app`` imports ``function_app.py`` and finds the one
``FunctionApp``, and ``functions.Registry.add_indexed_function`` binds each function's
parameters to its bindings by name and type exactly as at a host's worker-indexing start. The
host passes its generated gRPC module (``protos``) along; only three enum constants of it are
read here (``BindingInfo`` direction ``out`` / ``inout`` and data type ``undefined``) and it
ships with the host, not on PyPI, so they are given with the schema's values. Skipped where the
runtime does not install (Python < 3.13); ``nox -s tests`` installs it on 3.13.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from apix_azure.deploy.generate import DeployOptions, generate

pytest.importorskip("azure_functions_runtime.loader")
# In WORKER: the host's gRPC schema (FunctionRpc.proto, message BindingInfo) has Direction
# in=0, out=1, inout=2 and DataType undefined=0.

PIPELINE = """
from apix_core import App, Message, ProcessorContext

shop = App("shop", tenant_id="acme")


@shop.processor("ingest", consumes="raw.orders")
async def ingest(message: Message, ctx: ProcessorContext) -> None:
    pass


@shop.processor("nightly", schedule="30 2 * * *")
async def nightly(message: Message, ctx: ProcessorContext) -> None:
    pass


@shop.processor("orders-api", route="POST /orders/{order_id}")
async def orders_api(message: Message, ctx: ProcessorContext) -> None:
    pass
"""


# One worker process per app: a fresh interpreter runs the worker's steps and prints what the
# registry holds for each function.
WORKER = """
import json, sys
from types import SimpleNamespace
from azure_functions_runtime.bindings.meta import load_binding_registry
from azure_functions_runtime.functions import Registry
from azure_functions_runtime.loader import index_function_app

load_binding_registry()  # as at worker init
protos = SimpleNamespace(BindingInfo=SimpleNamespace(out=1, inout=2, undefined=0))
registry = Registry()
found = {}
for f in index_function_app(sys.argv[1]):
    i = registry.add_indexed_function(function=f, protos=protos)
    found[i.name] = {
        "is_async": i.is_async,
        "settlement_client_arg": i.settlement_client_arg,
        "deferred": i.deferred_bindings_enabled,
        "is_http": i.is_http_func,
        "has_return": i.has_return,
        "inputs": {k: v.binding_name for k, v in i.input_types.items()},
    }
print(json.dumps(found))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipeline.py").write_text(textwrap.dedent(PIPELINE))
    return tmp_path / "app"


def index(out: Path, **env: str) -> dict[str, Any]:
    """What the worker registers for the generated app in ``out``."""
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(out / "function_app.py")],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **os.environ,
            "PYTHONPATH": f"{out}{os.pathsep}{out.parent}",
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            **env,
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return found


def test_worker_indexes_the_generated_app(project: Path) -> None:
    # GIVEN the project `apix deploy azure` writes
    generate(str(project.parent / "pipeline.py"), project, DeployOptions(module="pipeline"))
    # WHEN the worker indexes function_app.py and registers each function
    infos = index(project)
    # THEN it finds one async function per processor, bound by parameter name
    assert set(infos) == {"ingest", "nightly", "orders_api"}
    assert all(i["is_async"] and i["settlement_client_arg"] is None for i in infos.values())
    assert infos["ingest"]["inputs"] == {"msg": "queueTrigger"}
    assert infos["nightly"]["inputs"] == {"timer": "timerTrigger"}
    api = infos["orders_api"]
    assert api["is_http"] and api["has_return"]
    assert api["inputs"] == {"req": "httpTrigger"}


def test_worker_finds_the_settlement_client_of_apix_settlement(project: Path) -> None:
    pytest.importorskip("azurefunctions.extensions.bindings.servicebus")
    # GIVEN Service Bus triggers settled by apix (SDK-type bindings)
    generate(
        str(project.parent / "pipeline.py"),
        project,
        DeployOptions(module="pipeline", trigger="servicebus"),
    )
    # WHEN the worker indexes it
    settings = {"APIX_AZURE_TRIGGER": "servicebus", "APIX_AZURE_SERVICEBUS_SETTLEMENT": "apix"}
    ingest = index(project, **settings)["ingest"]
    # THEN the unbound parameter is recognised as the settlement client, msg as an SDK type
    assert ingest["settlement_client_arg"] == "message_actions"
    assert ingest["deferred"]
    assert ingest["inputs"] == {"msg": "serviceBusTrigger"}
