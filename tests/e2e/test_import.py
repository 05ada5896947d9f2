"""``import apix_core`` stays cold: no cloud SDKs, HTTP clients or OpenTelemetry SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = (
    "boto3",
    "botocore",
    "azure",
    "httpx",
    "h2",
    "opentelemetry.sdk",
    "uvloop",
    "apix_core.extract",
)

PROBE = """
import json, sys
import {module}
heavy = {heavy!r}
loaded = [m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy)]
print(json.dumps(sorted(loaded)))
"""


def loaded_heavy(module: str, heavy: tuple[str, ...]) -> list[str]:
    """The ``heavy`` modules a fresh interpreter (without APIX_* settings) loads importing
    ``module``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIX_")}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, heavy=heavy)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    loaded: list[str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.slow
@pytest.mark.parametrize(
    "module",
    ["apix_core", "apix_core.runtime", "apix_core.transport.local", "apix_core.observability"],
)
def test_import_loads_no_heavy_dependency(module: str) -> None:
    # GIVEN a fresh interpreter WHEN it imports apix_core (or a module every entry point needs)
    # THEN none of the heavy packages were loaded
    assert loaded_heavy(module, HEAVY) == []


#: What an app module's imports (``from apix_core import App, Message, ProcessorContext``) must
#: not load: the store and SQLAlchemy load when an app starts, the CLI's libraries with the CLI.
APP_IMPORT_BUDGET = (
    *HEAVY,
    "sqlalchemy",
    "alembic",
    "aiosqlite",
    "asyncpg",
    "tenacity",
    "croniter",
    "typer",
    "rich",
    "cryptography",
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "module",
    [
        "apix_core",
        "apix_core; from apix_core import App, Message, ProcessorContext, ProcessingResult",
        "apix_core.processing, apix_core.topology, apix_core.http, apix_core.outputs",
        "apix_aws.transport.sqs, apix_azure.transport.storage_queue",
        "apix_aws; from apix_aws import lambda_handler; import apix_core.runtime",
    ],
)
def test_app_import_path_stays_lean(module: str) -> None:
    # GIVEN a fresh interpreter WHEN it imports what a function's app module imports
    # THEN no store, SQL, retry, cron or CLI library is loaded (a cold start pays for none)
    assert loaded_heavy(module, APP_IMPORT_BUDGET) == []


@pytest.mark.slow
def test_probe_detects_a_heavy_import() -> None:
    # GIVEN / WHEN the same probe after importing the OpenTelemetry SDK on purpose
    # THEN it is reported, so an empty result above means something
    assert "opentelemetry.sdk" in loaded_heavy("apix_core, opentelemetry.sdk.trace", HEAVY)


@pytest.mark.slow
def test_extract_package_imports_httpx_only_when_the_engine_is_used() -> None:
    # GIVEN a fresh interpreter WHEN it imports the extraction package and its configs
    # THEN httpx is not loaded; building the HTTP engine is what loads it
    light = "apix_core.extract; from apix_core.extract import ExtractorConfig, BaseOutput"
    assert loaded_heavy(light, ("httpx", "h2", "tenacity")) == []
