"""Fixtures shared by several folders of tests/functional (see tests/README.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from apix_core.observability import metrics as apix_metrics

#: ``name → data points`` of every metric apix recorded so far.
MetricPoints = Callable[[], dict[str, list[Any]]]


@pytest.fixture
def metric_points() -> Iterator[MetricPoints]:
    """apix's metrics on a local SDK meter provider with an in-memory reader (OpenTelemetry's
    global one can be set only once per process); ``metric_points()`` reads what it holds."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])

    def points() -> dict[str, list[Any]]:
        data = reader.get_metrics_data()
        assert data is not None
        found: dict[str, list[Any]] = {}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                assert sm.scope.name == "apix_core"
                for metric in sm.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found

    apix_metrics.use_meter_provider(provider)
    yield points
    apix_metrics.use_meter_provider(None)
    provider.shutdown()
