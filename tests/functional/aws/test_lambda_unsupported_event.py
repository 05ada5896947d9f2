"""An event the processor has no trigger for (a deployment mistake): a typed error that says what
to fix, raised so Lambda marks the invocation failed, and logged once without a traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from apix_aws import lambda_handler
from apix_aws.errors import UnsupportedEventError
from apix_core import App, Message

Event = Callable[[str], dict[str, Any]]


@pytest.fixture
def app(tmp_path: Path, lambda_apps: list[object], monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.setenv("APIX_TENANT_ID", "acme")
    a = App(
        "wiring",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}",
        queue_url=f"sqlite+aiosqlite:///{tmp_path / 'queues.db'}",
    )

    @a.processor("orders", route="POST /orders")
    def orders(message: Message) -> None: ...

    @a.processor("nightly", schedule="0 2 * * *")
    def nightly(message: Message) -> None: ...

    @a.processor("ingest", consumes="ingest")
    def ingest(message: Message) -> None: ...

    lambda_apps.append(a)
    return a


@pytest.mark.parametrize(
    ("processor", "fixture", "says"),
    [
        # an HTTP request reaching a queue processor: the route belongs to "orders"
        ("ingest", "aws_apigw_http_v2", ["HTTP event", "'orders'", 'route="POST /orders"']),
        ("ingest", "aws_function_url", ["HTTP event", "'orders'", "consumes 'ingest'"]),
        # a schedule reaching an HTTP processor: "nightly" has the schedule
        ("orders", "aws_eventbridge_scheduled", ["schedule event", "'nightly'", "schedule="]),
        ("orders", "aws_scheduler_event", ["schedule event", "'nightly'"]),
        # a custom EventBridge event or a stream batch reaching a processor that consumes none
        ("nightly", "aws_eventbridge_custom", ["EventBridge event", "'ingest'", "consumes="]),
        ("orders", "aws_kinesis_batch", ["stream batch", "'ingest'", "consumes="]),
        ("nightly", "aws_dynamodb_stream_batch", ["stream batch", "'ingest'"]),
    ],
)
def test_an_event_without_its_trigger_raises_what_to_fix_logged_once(
    app: App,
    load_event: Event,
    lambda_context: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    processor: str,
    fixture: str,
    says: list[str],
) -> None:
    # GIVEN an event source wired to the function of a processor without that trigger
    handler = lambda_handler(app, processor)
    caplog.set_level(logging.DEBUG)
    # WHEN the event arrives
    with pytest.raises(UnsupportedEventError) as caught:
        handler(load_event(fixture), lambda_context)
    # THEN the typed error names the processor and says which function to wire or what to add
    error = caught.value
    assert error.code == "UNSUPPORTED_EVENT"
    assert str(error).startswith(f"processor {processor!r} got ")
    for text in says:
        assert text in str(error), (text, str(error))
    # AND it is logged once, as a structured record, without a traceback
    logged = [r for r in caplog.records if getattr(r, "error_code", None) == "UNSUPPORTED_EVENT"]
    assert len(logged) == 1
    [record] = logged
    assert record.levelno == logging.ERROR
    assert record.getMessage() == str(error)
    assert record.__dict__["processor"] == processor
    assert record.exc_info is None and record.stack_info is None
    assert all(r.exc_info is None for r in caplog.records)
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err


def test_an_event_of_no_known_shape_says_what_the_function_takes(
    app: App, lambda_context: Any
) -> None:
    # GIVEN a bare test invocation, and an event that is not an object
    handler = lambda_handler(app, "ingest")
    # WHEN / THEN each raises the typed error saying what the function takes instead
    for event in ({"order_id": "A-1"}, ["not", "an", "object"]):
        with pytest.raises(UnsupportedEventError) as caught:
            handler(event, lambda_context)  # type: ignore[arg-type]
        assert "consumes 'ingest'" in str(caught.value)
        assert "apix send" in str(caught.value)


def test_a_processor_alone_with_its_trigger_is_told_which_argument_to_add(
    tmp_path: Path, lambda_apps: list[object], load_event: Event, lambda_context: Any
) -> None:
    # GIVEN an app whose only processor consumes a queue
    app = App("alone", database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}")

    @app.processor("ingest", consumes="ingest")
    def ingest(message: Message) -> None: ...

    lambda_apps.append(app)
    # WHEN an HTTP request reaches it
    with pytest.raises(UnsupportedEventError) as caught:
        lambda_handler(app, "ingest")(load_event("aws_apigw_rest_v1"), lambda_context)
    # THEN no other function takes it: the message says which argument to add
    assert "no processor of the app accepts it" in str(caught.value)
    assert "add route=" in str(caught.value)
