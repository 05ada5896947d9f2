"""moto_server as a separate process for the SQS tests (one per session), and a transport per
test whose queue prefix is unique, so tests never share queues.

Without moto_server (``moto[server]`` not installed) the tests that need it skip; with
``CI=true`` a server that cannot start fails them instead.
"""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture
def sqs_queue_url(moto_endpoint: str, queue_prefix: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point apps and ``apix`` at this test's queues on moto_server (``APIX_QUEUE_URL``, no
    long polls); returns the ``sqs://`` URL."""
    url = f"sqs://?prefix={queue_prefix}&region={REGION}&wait=0"
    monkeypatch.setenv("APIX_SQS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("APIX_QUEUE_URL", url)
    return url


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


def sqs_record(message: dict[str, Any], arn: str) -> dict[str, Any]:
    """One record of an SQS event, as Lambda builds it from a message ``receive_message``
    returned (``AttributeNames=["All"]``, ``MessageAttributeNames=["All"]``)."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {
            k: {
                "stringValue": v["StringValue"],
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": v["DataType"],
            }
            for k, v in message.get("MessageAttributes", {}).items()
            if "StringValue" in v
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": REGION,
    }


def deliver(
    client: Any,
    url: str,
    handler: Callable[[dict[str, Any], Any], dict[str, Any]],
    context: Any,
    *,
    twice: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What Lambda's SQS event source mapping does once: receive a batch from the queue at
    ``url``, invoke ``handler``, delete every record not in ``batchItemFailures``. ``twice``:
    the same event is delivered first once more (at-least-once). Returns the response and the
    messages of the batch (none: no invocation)."""
    arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    got = client.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
        VisibilityTimeout=30,
    ).get("Messages", [])
    if not got:
        return {"batchItemFailures": []}, []
    event = {"Records": [sqs_record(m, arn) for m in got]}
    if twice:
        handler(copy.deepcopy(event), context)
    response = handler(event, context)
    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    for m in got:
        if m["MessageId"] not in failed:
            client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return response, got
