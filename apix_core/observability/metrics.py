"""apix's own processing metrics: messages by outcome and batch duration, one call per batch.

:func:`record_batch` is called once per processed batch (``ProcessorHandler.handle_batch``, the
path of every trigger: local worker, Lambda, Azure Functions, HTTP). Two outputs, each off until
configured, so an unconfigured function pays one dictionary lookup per batch:

- **OpenTelemetry metrics API** (meter ``apix_core``): used when a meter provider is installed
  (an SDK's, globally or through :func:`use_meter_provider`). While nothing has imported
  ``opentelemetry.metrics`` (and ``OTEL_PYTHON_METER_PROVIDER`` is unset) no provider can exist,
  so the API is not even imported. Instruments are created on first use:

  - counter ``apix.messages`` (unit ``{message}``), attributes ``processor``, ``queue``,
    ``outcome`` (``completed``, ``duplicate``, ``retry``, ``dead_letter``);
  - histogram ``apix.batch.duration`` (unit ``ms``), attributes ``processor``, ``queue``.

- **CloudWatch Embedded Metric Format** (``APIX_METRICS=emf``): one JSON line per batch on
  stdout, namespace ``APIX_METRICS_NAMESPACE`` (default ``apix``), dimensions ``Processor`` and
  ``Queue``, metrics ``Completed``, ``Duplicates``, ``Retried``, ``DeadLettered`` (Count),
  ``BatchDuration`` and ``MessageDuration`` (the batch's duration over its messages;
  Milliseconds). CloudWatch Logs turns the line into metrics; no SDK and no API call.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from apix_core.constants import (
    DEFAULT_METRICS_NAMESPACE,
    METRICS_ENV,
    METRICS_NAMESPACE_ENV,
)
from apix_core.observability.tracing import INSTRUMENTATION_NAME

MESSAGES = "apix.messages"
BATCH_DURATION = "apix.batch.duration"

#: Outcome kind → EMF metric name.
EMF_METRICS = {
    "completed": "Completed",
    "duplicate": "Duplicates",
    "retry": "Retried",
    "dead_letter": "DeadLettered",
}

_log = logging.getLogger("apix.metrics")


class _Kind(Protocol):
    @property
    def value(self) -> str: ...


class _Outcome(Protocol):
    @property
    def kind(self) -> _Kind: ...


T = TypeVar("T", bound=_Outcome)


class _Instruments:
    def __init__(self, provider: Any) -> None:
        meter = provider.get_meter(INSTRUMENTATION_NAME)
        self.provider = provider
        self.messages = meter.create_counter(
            MESSAGES, unit="{message}", description="Messages processed by apix, by outcome"
        )
        self.duration = meter.create_histogram(
            BATCH_DURATION, unit="ms", description="Duration of a processed batch"
        )
        # Attribute dicts per (processor, queue[, outcome]): built once, not per batch.
        self.attrs: dict[tuple[str, str], tuple[dict[str, str], dict[str, dict[str, str]]]] = {}

    def record(self, processor: str, queue: str, counts: dict[str, int], ms: float) -> None:
        found = self.attrs.get((processor, queue))
        if found is None:
            base = {"processor": processor, "queue": queue}
            by_kind = {kind: {**base, "outcome": kind} for kind in EMF_METRICS}
            found = self.attrs[(processor, queue)] = (base, by_kind)
        base, by_kind = found
        for kind, n in counts.items():
            self.messages.add(n, by_kind.get(kind) or {**base, "outcome": kind})
        self.duration.record(ms, base)


_explicit_provider: Any = None
_instruments: _Instruments | None = None
_emf_config: tuple[tuple[str | None, str | None], str | None] = ((None, None), None)


def use_meter_provider(provider: Any) -> None:
    """Record apix's metrics with ``provider`` instead of the global one (None: the global).

    For a process that keeps its SDK provider local rather than calling
    ``opentelemetry.metrics.set_meter_provider``."""
    global _explicit_provider, _instruments
    _explicit_provider = provider
    _instruments = None


def _meter_provider(otel_env: bool) -> Any:
    """The SDK meter provider to record with, or None (no SDK: skip the work entirely).
    ``otel_env``: ``OTEL_PYTHON_METER_PROVIDER`` is set (the API then loads that provider)."""
    if _explicit_provider is not None:
        return _explicit_provider
    if not otel_env and "opentelemetry.metrics" not in sys.modules:
        return None  # nothing installed a provider: do not pay the API's import
    from opentelemetry import metrics

    provider = metrics.get_meter_provider()
    if type(provider).__name__ in ("_ProxyMeterProvider", "NoOpMeterProvider"):
        return None
    return provider


def _emf_namespace() -> str | None:
    """The EMF namespace when ``APIX_METRICS=emf``, else None (parsed once per setting)."""
    global _emf_config
    mode_raw = os.environ.get(METRICS_ENV)
    if mode_raw is None:
        return None  # the common case: off, one lookup
    raw = (mode_raw, os.environ.get(METRICS_NAMESPACE_ENV))
    if raw == _emf_config[0]:
        return _emf_config[1]
    mode = (raw[0] or "").strip().lower()
    namespace: str | None = None
    if mode == "emf":
        namespace = (raw[1] or "").strip() or DEFAULT_METRICS_NAMESPACE
    elif mode not in ("", "off", "none"):
        _log.warning(
            "unknown %s value %r: no metrics are written; write 'emf' (CloudWatch Embedded "
            "Metric Format) or leave it unset",
            METRICS_ENV,
            raw[0],
        )
    _emf_config = (raw, namespace)
    return namespace


def record_batch(processor: str, queue: str, outcomes: list[T], started: float) -> list[T]:
    """Record one batch's outcome counts and duration (``started``: ``time.perf_counter()``
    when it began); returns ``outcomes`` so the call site stays one expression. Never raises:
    metrics must not fail a batch whose work is committed. Reads the settings each call: a
    handler keeps a :class:`BatchRecorder` instead."""
    return BatchRecorder().record(processor, queue, outcomes, started)


class BatchRecorder:
    """:func:`record_batch` with the deployment's settings (``APIX_METRICS``, the OpenTelemetry
    provider variable) read once, when a handler is made: ``os.environ`` costs µs a batch."""

    __slots__ = ("_namespace", "_otel_env")

    def __init__(self) -> None:
        self._namespace = _emf_namespace()
        self._otel_env = bool(os.environ.get("OTEL_PYTHON_METER_PROVIDER"))

    def record(self, processor: str, queue: str, outcomes: list[T], started: float) -> list[T]:
        """See :func:`record_batch`."""
        if not outcomes:
            return outcomes
        namespace = self._namespace
        provider = _meter_provider(self._otel_env)
        if namespace is None and provider is None:
            return outcomes
        try:
            ms = (time.perf_counter() - started) * 1000
            counts = outcome_counts(outcomes)
            if provider is not None:
                global _instruments
                if _instruments is None or _instruments.provider is not provider:
                    _instruments = _Instruments(provider)
                _instruments.record(processor, queue, counts, ms)
            if namespace is not None:
                write_emf(namespace, processor, queue, counts, ms, len(outcomes))
        except Exception:
            _log.warning("could not record the batch's metrics", exc_info=True)
        return outcomes


def emf_document(
    namespace: str,
    processor: str,
    queue: str,
    counts: dict[str, int],
    duration_ms: float,
    messages: int,
    *,
    timestamp_ms: int | None = None,
) -> dict[str, Any]:
    """One batch as a CloudWatch Embedded Metric Format document (every outcome, zeros too, so
    sums and alarms see the batch)."""
    metrics: list[dict[str, str]] = [{"Name": n, "Unit": "Count"} for n in EMF_METRICS.values()]
    metrics.append({"Name": "BatchDuration", "Unit": "Milliseconds"})
    doc: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [["Processor", "Queue"]],
                    "Metrics": metrics,
                }
            ],
        },
        "Processor": processor,
        "Queue": queue,
    }
    for kind, name in EMF_METRICS.items():
        doc[name] = counts.get(kind, 0)
    doc["BatchDuration"] = round(duration_ms, 3)
    if messages:
        metrics.append({"Name": "MessageDuration", "Unit": "Milliseconds"})
        doc["MessageDuration"] = round(duration_ms / messages, 3)
    return doc


def write_emf(
    namespace: str,
    processor: str,
    queue: str,
    counts: dict[str, int],
    duration_ms: float,
    messages: int,
) -> None:
    """Write one EMF line to stdout (the Lambda runtime sends it to CloudWatch Logs)."""
    doc = emf_document(namespace, processor, queue, counts, duration_ms, messages)
    sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def outcome_counts(outcomes: Sequence[_Outcome]) -> dict[str, int]:
    """Outcomes counted by kind value (``completed``, ``duplicate``, ``retry``, ``dead_letter``)."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        kind = outcome.kind.value
        counts[kind] = counts.get(kind, 0) + 1
    return counts
