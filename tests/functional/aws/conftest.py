"""moto_server as a separate process for the SQS tests (one per session), and a transport per
test whose queue prefix is unique, so tests never share queues.

Without moto_server (``moto[server]`` not installed) the tests that need it skip; with
``CI=true`` a server that cannot start fails them instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from apix_aws.transport.sqs import SqsTransport

IN_CI = os.environ.get("CI", "").lower() == "true"
REGION = "us-east-1"
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    # Never read a developer's ~/.aws files.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def _moto_server_command() -> str | None:
    beside = Path(sys.executable).parent / "moto_server"
    if beside.exists():
        return str(beside)
    return shutil.which("moto_server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"moto_server is required under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def aws_credentials() -> Iterator[None]:
    """Dummy credentials for the whole session (moto accepts any)."""
    saved = {k: os.environ.get(k) for k in [*_AWS_ENV, "AWS_PROFILE"]}
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(_AWS_ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def moto_endpoint(aws_credentials: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a moto_server started for this session."""
    command = _moto_server_command()
    if command is None:
        _unavailable("moto_server is not installed (pip install 'moto[server]')")
        raise AssertionError("unreachable")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("moto")
    log_path = workdir / "moto_server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [command, "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                _unavailable(f"moto_server exited with {proc.returncode}: {log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    _unavailable(f"moto_server did not answer on {endpoint} within 30 s")
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def queue_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}-"


@pytest.fixture
async def sqs(moto_endpoint: str, queue_prefix: str) -> AsyncIterator[SqsTransport]:
    """An SqsTransport on moto_server with a prefix of its own (no long polls: moto is slow)."""
    transport = SqsTransport(
        endpoint_url=moto_endpoint,
        region=REGION,
        queue_prefix=queue_prefix,
        receive_wait_seconds=0,
    )
    yield transport
    await transport.close()


# -- Lambda handler tests -------------------------------------------------------------------


class LambdaContext:
    """The shape of the context object AWS passes to a Python handler (the fields apix reads)."""

    def __init__(self, remaining_ms: int = 60_000, function_name: str = "apix-test") -> None:
        self._deadline = time.monotonic() + remaining_ms / 1000
        self.aws_request_id = uuid.uuid4().hex
        self.function_name = function_name

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()


@pytest.fixture
def lambda_apps(tmp_path: Path) -> Iterator[list[object]]:
    """Apps built by a Lambda test, closed on the handler's event loop afterwards."""
    from apix_core.runtime.invoke import run_sync

    apps: list[object] = []
    yield apps
    for app in apps:
        run_sync(app.close())  # type: ignore[attr-defined]
