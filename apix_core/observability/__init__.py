"""Logs, traces and metrics. Uses the OpenTelemetry *API* only (the SDK is the user's choice)."""

from apix_core.observability.logging import (
    JsonFormatter,
    configure_logging,
    get_logger,
    log_context,
)
from apix_core.observability.operation import operation
from apix_core.observability.tracing import extract_trace_context, inject_trace_context

__all__ = [
    "JsonFormatter",
    "configure_logging",
    "extract_trace_context",
    "get_logger",
    "inject_trace_context",
    "log_context",
    "operation",
]
