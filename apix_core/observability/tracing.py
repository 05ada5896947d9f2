"""W3C trace context carried in message envelopes, so one trace spans every queue hop.

Imports of ``opentelemetry`` happen on first use, keeping ``import apix_core`` light.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Tracer

INSTRUMENTATION_NAME = "apix_core"


@cache
def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


@cache
def _trace() -> Any:
    """The ``opentelemetry.trace`` module, imported on first use and once (an import statement
    per call cost more than the provider check it serves, once per batch)."""
    from opentelemetry import trace

    return trace


def get_tracer() -> Tracer:
    tracer: Tracer = _trace().get_tracer(INSTRUMENTATION_NAME)
    return tracer


def tracing_enabled() -> bool:
    """False while no SDK tracer provider is installed: spans would be no-ops, so skip them."""
    provider = _trace().get_tracer_provider()
    return type(provider).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider")


def extract_trace_context(carrier: dict[str, str]) -> Context | None:
    """The remote parent context from a message's ``trace_context`` (None if absent)."""
    if not carrier:
        return None
    result: Context = _propagator().extract(carrier)
    return result


def inject_trace_context() -> dict[str, str]:
    """``traceparent``/``tracestate`` of the current span, for an outgoing message."""
    carrier: dict[str, str] = {}
    _propagator().inject(carrier)
    return carrier
