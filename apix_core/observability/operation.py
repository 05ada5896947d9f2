"""``@operation("name")``: a span, a duration histogram, success/failure counters and log lines."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from functools import cache
from typing import Any, ParamSpec, TypeVar, cast

from apix_core.observability.logging import get_logger, log_context
from apix_core.observability.tracing import INSTRUMENTATION_NAME, get_tracer

P = ParamSpec("P")
R = TypeVar("R")

_log = get_logger("apix.operation")


class _Instruments:
    def __init__(self) -> None:
        from opentelemetry import metrics

        meter = metrics.get_meter(INSTRUMENTATION_NAME)
        self.duration = meter.create_histogram(
            "apix.operation.duration", unit="ms", description="Duration of apix operations"
        )
        self.success = meter.create_counter(
            "apix.operation.success", description="Operations that returned"
        )
        self.failure = meter.create_counter(
            "apix.operation.failure", description="Operations that raised"
        )


@cache
def instruments() -> _Instruments:
    return _Instruments()


def _record(name: str, start: float, error: BaseException | None) -> None:
    duration_ms = (time.perf_counter() - start) * 1000
    attrs = {"operation": name}
    ins = instruments()
    ins.duration.record(duration_ms, attrs)
    if error is None:
        ins.success.add(1, attrs)
        _log.info("operation succeeded", extra={"duration_ms": round(duration_ms, 3)})
    else:
        ins.failure.add(1, {**attrs, "error_type": type(error).__name__})
        _log.warning(
            "operation failed",
            extra={"duration_ms": round(duration_ms, 3), "error_type": type(error).__name__},
        )


def operation(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Instrument a sync or async function as the operation ``name``."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with (
                    log_context(operation=name),
                    get_tracer().start_as_current_span(
                        name, record_exception=False, set_status_on_exception=False
                    ) as span,
                ):
                    start = time.perf_counter()
                    try:
                        result = await func(*args, **kwargs)
                    except BaseException as exc:
                        span.record_exception(exc)
                        _set_error(span, exc)
                        _record(name, start, exc)
                        raise
                    _record(name, start, None)
                    return result

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(func)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with (
                log_context(operation=name),
                get_tracer().start_as_current_span(
                    name, record_exception=False, set_status_on_exception=False
                ) as span,
            ):
                start = time.perf_counter()
                try:
                    result = func(*args, **kwargs)
                except BaseException as exc:
                    span.record_exception(exc)
                    _set_error(span, exc)
                    _record(name, start, exc)
                    raise
                _record(name, start, None)
                return result

        return sync_wrapper

    return decorate


def _set_error(span: Any, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, str(exc)))
