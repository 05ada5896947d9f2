"""Importing apix_azure and its transports loads no Azure SDK; the entry points resolve."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from apix_azure.transport import servicebus, storage_queue

PROBE = """
import json, sys
import {module}
print(json.dumps(sorted(m for m in sys.modules if m == "azure" or m.startswith("azure."))))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "module",
    [
        "apix_azure",
        "apix_azure.transport.storage_queue",
        "apix_azure.transport.servicebus",
        "apix_azure, azure.storage.queue",  # the probe itself: it must see an SDK import
    ],
)
def test_import_loads_no_azure_sdk(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (loaded != []) == ("azure.storage" in module), loaded


def test_transport_entry_points_are_registered() -> None:
    found = {ep.name: ep for ep in entry_points(group="apix.transports")}
    assert found["azure-queue"].load() is storage_queue.from_url
    assert found["servicebus"].load() is servicebus.from_url


def test_the_matrix_gets_the_azure_functions_major_of_its_python() -> None:
    # nox runs the Azure tests on 3.11 (azure-functions 1.x) and 3.13 (2.x needs Python 3.13)
    import azure.functions

    major = azure.functions.__version__.split(".")[0]
    assert major == ("2" if sys.version_info >= (3, 13) else "1")
