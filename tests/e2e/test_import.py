"""``import apix_core`` stays cold: no cloud SDKs, HTTP clients or OpenTelemetry SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("boto3", "botocore", "azure", "httpx", "opentelemetry.sdk", "uvloop")

PROBE = """
import json, sys
import {module}
heavy = {heavy!r}
loaded = [m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy)]
print(json.dumps(sorted(loaded)))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "module",
    ["apix_core", "apix_core.runtime", "apix_core.transport.local", "apix_core.observability"],
)
def test_import_loads_no_heavy_dependency(module: str) -> None:
    # GIVEN a fresh interpreter without APIX_* settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIX_")}

    # WHEN it imports apix_core (or one of the modules every entry point needs)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )

    # THEN none of the heavy packages were loaded
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow
def test_probe_detects_a_heavy_import() -> None:
    # GIVEN / WHEN the same probe after importing the OpenTelemetry SDK on purpose
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE.format(module="apix_core, opentelemetry.sdk.trace", heavy=HEAVY),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # THEN it is reported, so an empty result above means something
    assert proc.returncode == 0, proc.stderr
    assert "opentelemetry.sdk" in json.loads(proc.stdout.strip().splitlines()[-1])
