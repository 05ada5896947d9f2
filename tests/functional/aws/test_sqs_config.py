"""The SQS transport's URL factory, entry point and cold-start import (no server needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from apix_aws.transport.sqs import InvalidQueueNameError, SqsTransport, from_url
from apix_core.errors import ConfigurationError

pytestmark = pytest.mark.aws

PROBE = """
import json, sys
import apix_aws, apix_aws.transport, apix_aws.transport.sqs
t = apix_aws.transport.sqs.from_url("sqs://?region=eu-west-1&prefix=dev-")
t.check_size("q", "x" * 10)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore"))))
"""


def test_importing_the_adapter_imports_no_aws_sdk() -> None:
    # WHEN a fresh interpreter imports apix_aws and builds a transport (no SQS call yet)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    # THEN boto3 and botocore are not loaded
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_from_url_reads_region_endpoint_prefix_and_dlq() -> None:
    t = from_url(
        "sqs://?region=eu-west-1&endpoint=http://127.0.0.1:5000&prefix=dev-&dlq=dead&wait=3"
    )
    assert (t.region, t.endpoint_url, t.queue_prefix) == (
        "eu-west-1",
        "http://127.0.0.1:5000",
        "dev-",
    )
    assert (t.dead_letter_queue, t.receive_wait_seconds) == ("dead", 3)
    assert t.sqs_name("orders.fifo") == "dev-orders.fifo"
    # keyword arguments override the URL
    assert from_url("sqs://?prefix=dev-", queue_prefix="prod-").queue_prefix == "prod-"


def test_from_url_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIX_SQS_ENDPOINT_URL", "http://127.0.0.1:4566")
    for url in ("sqs://", "sqs:///"):
        t = from_url(url)
        assert (t.endpoint_url, t.region, t.queue_prefix) == ("http://127.0.0.1:4566", None, "")
    monkeypatch.delenv("APIX_SQS_ENDPOINT_URL")
    assert from_url("sqs://").endpoint_url is None


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis://x", "not an SQS transport URL"),
        ("sqs://eu-west-1", "query parameters"),
        ("sqs://?regoin=eu-west-1", "unknown SQS transport URL parameter 'regoin'"),
        ("sqs://?prefix=a&prefix=b", "given twice"),
        ("sqs://?wait=soon", "integer"),
        ("sqs://?wait=21", "between 0 and 20"),
    ],
)
def test_from_url_refuses_bad_urls(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        from_url(url)


def test_from_url_refuses_unknown_keyword_arguments() -> None:
    with pytest.raises(ConfigurationError, match="unexpected keyword"):
        from_url("sqs://", visibility=3)


def test_entry_point_names_the_factory() -> None:
    [ep] = [e for e in entry_points(group="apix.transports") if e.name == "sqs"]
    assert ep.load() is from_url


def test_invalid_queue_names_are_refused() -> None:
    t = SqsTransport(region="eu-west-1", queue_prefix="dev-")
    with pytest.raises(InvalidQueueNameError, match="not a valid SQS queue name"):
        t.sqs_name("orders/eu")
    with pytest.raises(InvalidQueueNameError):
        t.sqs_name("x" * 80)
