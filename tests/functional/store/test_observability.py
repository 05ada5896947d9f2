"""Traces across queue hops, ``@operation`` spans/metrics/logs, JSON log fields, redaction."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from apix_core import App, Message, ProcessorContext, configure_logging, get_logger, operation
from apix_core.runtime import LocalRunner


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader | None


@pytest.fixture(scope="session")
def _telemetry_session() -> Telemetry:
    """Install SDK providers once: OpenTelemetry's global providers can be set only once."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        # Someone else installed an SDK provider first in this process: listen to it.
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    reader: InMemoryMetricReader | None = InMemoryMetricReader()
    if isinstance(metrics.get_meter_provider(), MeterProvider):
        reader = None  # an SDK meter provider cannot take a new reader after creation
    else:
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return Telemetry(exporter, reader)


@pytest.fixture
def telemetry(_telemetry_session: Telemetry) -> Telemetry:
    _telemetry_session.spans.clear()
    return _telemetry_session


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """JSON logs of the ``apix`` logger into a buffer; the logger is restored afterwards."""
    logger = logging.getLogger("apix")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    stream = io.StringIO()
    configure_logging(level="DEBUG", fmt="json", stream=stream)
    yield stream
    for h in list(logger.handlers):
        logger.removeHandler(h)
    for h in saved[2]:
        logger.addHandler(h)
    logger.setLevel(saved[0])
    logger.propagate = saved[1]


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def _process_spans(exporter: InMemorySpanExporter, correlation_id: str) -> dict[str, ReadableSpan]:
    out = {}
    for span in exporter.get_finished_spans():
        attrs = span.attributes or {}
        if attrs.get("messaging.message.conversation_id") == correlation_id:
            out[span.name] = span
    return out


def _points(reader: InMemoryMetricReader, name: str, operation_name: str) -> list[Any]:
    data = reader.get_metrics_data()
    points = []
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    points.extend(
                        p
                        for p in metric.data.data_points
                        if dict(p.attributes or {}).get("operation") == operation_name
                    )
    return points


async def test_one_trace_spans_three_queue_hops(make_app: Any, telemetry: Telemetry) -> None:
    # GIVEN a three-stage pipeline, each stage consuming the previous one's queue
    app: App = make_app("traced", tenant_id="acme")
    received_context: dict[str, dict[str, str]] = {}

    @app.processor("first", consumes="q1", produces=["q2"])
    async def first(message: Message, ctx: ProcessorContext) -> dict[str, Any]:
        return {"n": message.payload["n"]}

    @app.processor("second", consumes="q2", produces=["q3"])
    def second(message: Message, ctx: ProcessorContext) -> dict[str, Any]:
        received_context[f"second {message.correlation_id}"] = message.trace_context
        return message.payload

    @app.processor("third", consumes="q3")
    async def third(message: Message, ctx: ProcessorContext) -> None:
        received_context[f"third {message.correlation_id}"] = message.trace_context

    await app.start()
    first_id = await app.send("q1", {"n": 1}, tenant_id="acme")
    other_id = await app.send("q1", {"n": 2}, tenant_id="acme")

    # WHEN the pipeline drains
    await LocalRunner(app).run()

    # THEN the three "process" spans of one message share a trace and form a chain
    spans = _process_spans(telemetry.spans, first_id)
    s1, s2, s3 = spans["process first"], spans["process second"], spans["process third"]
    assert s1.context.trace_id == s2.context.trace_id == s3.context.trace_id
    assert s2.parent is not None and s2.parent.span_id == s1.context.span_id
    assert s3.parent is not None and s3.parent.span_id == s2.context.span_id
    assert s2.parent.is_remote and s1.kind is trace.SpanKind.CONSUMER
    assert (s1.attributes or {})["apix.tenant_id"] == "acme"
    # the link travels in the envelope as a W3C traceparent
    traceparent = received_context[f"third {first_id}"]["traceparent"]
    assert traceparent.startswith(f"00-{s1.context.trace_id:032x}-{s2.context.span_id:016x}-")
    assert f"{s1.context.span_id:016x}" in received_context[f"second {first_id}"]["traceparent"]
    # another input message is another trace
    other = _process_spans(telemetry.spans, other_id)
    assert len(other) == 3
    assert other["process first"].context.trace_id != s1.context.trace_id


async def test_failed_processing_marks_its_span_as_error(
    make_app: Any, telemetry: Telemetry
) -> None:
    # GIVEN a processor that always fails
    app: App = make_app("traced", tenant_id="acme")

    @app.processor("broken", consumes="in")
    async def broken(message: Message, ctx: ProcessorContext) -> None:
        raise ValueError("cannot parse the order date")

    await app.start()
    message = Message(tenant_id="acme", payload={}, attempt=app.settings.max_attempts)

    # WHEN it handles a message on its last attempt
    await app.handler("broken").handle(message)

    # THEN its span has status ERROR and the error code
    span = _process_spans(telemetry.spans, message.correlation_id)["process broken"]
    assert span.status.status_code is trace.StatusCode.ERROR
    assert (span.attributes or {})["apix.error_code"] == "UNEXPECTED_ERROR"


async def test_operation_emits_span_metrics_and_logs(
    telemetry: Telemetry, log_stream: io.StringIO
) -> None:
    # GIVEN a sync and an async operation (unique names: metrics are cumulative per process)
    name = f"fetch-orders-{uuid.uuid4().hex[:8]}"

    @operation(name)
    def fetch(fail: bool) -> int:
        if fail:
            raise ConnectionError("upstream down")
        return 3

    @operation(name)
    async def afetch() -> int:
        return 4

    # WHEN called twice successfully and once failing
    assert fetch(False) == 3
    assert await afetch() == 4
    with pytest.raises(ConnectionError):
        fetch(True)

    # THEN there is a span per call, the failing one with status ERROR and the exception
    spans = [s for s in telemetry.spans.get_finished_spans() if s.name == name]
    assert len(spans) == 3
    assert [s.status.status_code for s in spans].count(trace.StatusCode.ERROR) == 1
    failed = next(s for s in spans if s.status.status_code is trace.StatusCode.ERROR)
    assert any(e.name == "exception" for e in failed.events)

    # AND metrics: a duration histogram and success/failure counters per operation
    if telemetry.metrics is None:
        pytest.skip("another SDK meter provider was installed first in this process")
    durations = _points(telemetry.metrics, "apix.operation.duration", name)
    assert sum(p.count for p in durations) == 3 and all(p.sum >= 0 for p in durations)
    assert sum(p.value for p in _points(telemetry.metrics, "apix.operation.success", name)) == 2
    failures = _points(telemetry.metrics, "apix.operation.failure", name)
    assert sum(p.value for p in failures) == 1
    assert dict(failures[0].attributes)["error_type"] == "ConnectionError"

    # AND a log line per call with the operation and its duration
    lines = [entry for entry in _lines(log_stream) if entry.get("operation") == name]
    assert [entry["message"] for entry in lines].count("operation succeeded") == 2
    assert [entry["message"] for entry in lines].count("operation failed") == 1
    assert all(isinstance(entry["duration_ms"], float | int) for entry in lines)


async def test_processor_log_lines_carry_context_fields(
    make_app: Any, telemetry: Telemetry, log_stream: io.StringIO
) -> None:
    # GIVEN a processor that logs and calls an instrumented operation
    app: App = make_app("logged", tenant_id="acme")
    op_name = f"lookup-{uuid.uuid4().hex[:8]}"

    @operation(op_name)
    async def lookup(order_id: int) -> dict[str, Any]:
        get_logger("apix.test").info("looked up order", extra={"order_id": order_id})
        return {"order_id": order_id}

    @app.processor("orders", consumes="orders")
    async def orders(message: Message, ctx: ProcessorContext) -> None:
        ctx.logger.info("handling order")
        await lookup(message.payload["id"])

    await app.start()
    message = Message(
        message_id="m-42", correlation_id="corr-7", tenant_id="acme", payload={"id": 42}
    )

    # WHEN it handles a message
    await app.handler("orders").handle(message)

    # THEN every line written while processing carries tenant, correlation and message id
    lines = [e for e in _lines(log_stream) if e.get("message_id") == "m-42"]
    assert {e["message"] for e in lines} >= {
        "handling order",
        "looked up order",
        "operation succeeded",
        "message processed",
    }
    for entry in lines:
        assert entry["tenant_id"] == "acme"
        assert entry["correlation_id"] == "corr-7"
        assert entry["processor"] == "orders"
        assert entry["level"] and entry["timestamp"] and entry["logger"].startswith("apix")
    op_line = next(e for e in lines if e["message"] == "operation succeeded")
    assert op_line["operation"] == op_name and op_line["duration_ms"] >= 0
    inner = next(e for e in lines if e["message"] == "looked up order")
    assert inner["operation"] == op_name and inner["order_id"] == 42
    done = next(e for e in lines if e["message"] == "message processed")
    assert done["duration_ms"] >= 0
    # the operation's span is a child of the processor's span
    spans = {s.name: s for s in telemetry.spans.get_finished_spans()}
    assert spans[op_name].parent is not None
    assert spans[op_name].parent.span_id == spans["process orders"].context.span_id


SECRETS = (
    "hunter2-PW-secret",
    "sk_live_APIKEY_51H8",
    "xyzBEARERtoken0123456789",
    "AT_urlToken_98765",
    "CS_clientsecret_55",
    "PW_in_args_777",
    "KEY_in_args_888",
    "JSON_pw_999",
    "EXC_token_4242",
    "CTX_apikey_1111",
)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_never_reach_the_log(fmt: str, log_stream: io.StringIO) -> None:
    # GIVEN the apix logger writing in this format
    stream = io.StringIO()
    configure_logging(level="DEBUG", fmt=fmt, stream=stream)
    log = get_logger("apix.test")
    from apix_core.observability import log_context

    # WHEN secrets are logged every way a connector author might
    with log_context(api_key="CTX_apikey_1111"):
        log.info(
            "calling %s",
            "https://api.example.com/v1/orders?page=2&access_token=AT_urlToken_98765",
            extra={
                "request": {
                    "password": "hunter2-PW-secret",
                    "api_key": "sk_live_APIKEY_51H8",
                    "headers": {"Authorization": "Bearer xyzBEARERtoken0123456789"},
                },
                "client_secret": "CS_clientsecret_55",
            },
        )
    log.info("sent header Authorization: Bearer xyzBEARERtoken0123456789")
    log.info("credentials %s", {"password": "PW_in_args_777", "api_key": "KEY_in_args_888"})
    log.info("request body %s", json.dumps({"user": "ada", "password": "JSON_pw_999"}))
    try:
        raise PermissionError("refused token=EXC_token_4242")
    except PermissionError:
        log.exception("login failed")

    # THEN no secret value appears, while the surrounding information does
    out = stream.getvalue()
    leaked = [s for s in SECRETS if s in out]
    assert leaked == []
    assert "https://api.example.com/v1/orders?page=2&access_token=" in out
    assert "ada" in out and "login failed" in out and "PermissionError" in out
    assert out.count("\n") >= 5


def test_text_format_keeps_extra_fields(log_stream: io.StringIO) -> None:
    # GIVEN the human-readable format
    stream = io.StringIO()
    configure_logging(level="INFO", fmt="text", stream=stream)
    from apix_core.observability import log_context

    # WHEN a line carries context fields and extra= fields
    with log_context(tenant_id="acme"):
        get_logger("apix.test").info("fetched page", extra={"page": 3, "rows": 250})

    # THEN both appear after the message
    line = stream.getvalue().strip()
    assert "fetched page" in line
    assert "tenant_id=acme" in line and "page=3" in line and "rows=250" in line
