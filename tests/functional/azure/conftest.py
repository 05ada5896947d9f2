"""Azurite for the Azure tests: installed into ``.azurite/`` (npm, git-ignored) when missing,
started once per session as a separate process on a free port, stopped at the end.

Without npm or Azurite the tests skip, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from apix_azure.transport.storage_queue import StorageQueueTransport

IN_CI = os.environ.get("CI", "").lower() == "true"
ROOT = Path(__file__).resolve().parents[3]
AZURITE_DIR = ROOT / ".azurite"
AZURITE_PACKAGE = "azurite@3"
NPM_QUIET = ("--no-audit", "--no-fund", "--loglevel=error")
# In memory: --location would conflict with --inMemoryPersistence (Azurite exits at start).
AZURITE_FLAGS = ("--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck", "--silent")
# Azurite's well-known development account (documented, not a secret).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def dev_connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"QueueEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT};"
    )


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def _azurite_queue_bin() -> Path:
    """The project-local ``azurite-queue``, installed with npm when missing."""
    local = AZURITE_DIR / "node_modules" / ".bin" / "azurite-queue"
    if local.exists():
        return local
    npm = shutil.which("npm")
    if npm is None:
        _unavailable("npm is not installed: cannot install Azurite")
    AZURITE_DIR.mkdir(exist_ok=True)
    proc = subprocess.run(
        [npm, "install", "--prefix", str(AZURITE_DIR), AZURITE_PACKAGE, *NPM_QUIET],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0 or not local.exists():
        _unavailable(f"npm install {AZURITE_PACKAGE} failed: {proc.stderr[-2000:]}")
    return local


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> str | None:
    """None once the port accepts connections, else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"azurite-queue exited with code {proc.returncode}"
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return None
        time.sleep(0.1)
    return f"azurite-queue did not listen on port {port} within {timeout} s"


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Connection string of a running Azurite queue service (in memory)."""
    binary = _azurite_queue_bin()
    port = _free_port()
    workdir = tmp_path_factory.mktemp("azurite")  # it writes a debug folder where it runs
    log = (workdir / "azurite.log").open("wb")
    proc = subprocess.Popen(
        [str(binary), "--queueHost", "127.0.0.1", "--queuePort", str(port), *AZURITE_FLAGS],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        problem = _wait_for_port(port, proc, timeout=60)
        if problem is not None:
            log.flush()
            _unavailable(f"{problem}: {(workdir / 'azurite.log').read_text()[-2000:]}")
        yield dev_connection_string(port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def queue_name() -> str:
    """A fresh apix queue name per test (the Azurite instance is shared)."""
    return f"t.{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def transport(azurite: str) -> AsyncIterator[StorageQueueTransport]:
    t = StorageQueueTransport(azurite, visibility_timeout=30)
    yield t
    await t.close()
