"""Pure helpers of apix_azure.functions: schedule ticks and App Service principals."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from apix_azure.functions import tenant_from_principal, tick_time


def at(h: int, m: int, s: int = 0, us: int = 0) -> datetime:
    return datetime(2026, 3, 4, h, m, s, us, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "tick"),
    [
        (at(12, 5), at(12, 5)),  # on time
        (at(12, 5, 0, 400_000), at(12, 5)),  # a little late
        (at(12, 7, 33), at(12, 5)),  # past due
        (at(12, 4, 59, 700_000), at(12, 5)),  # the host fired a little early
        (at(12, 4, 58), at(12, 0)),  # not a tick of its own: the last one
    ],
)
def test_tick_time_is_the_schedule_tick_of_an_invocation(now: datetime, tick: datetime) -> None:
    # GIVEN a 5-minute schedule WHEN an invocation happens at `now` THEN it belongs to `tick`
    assert tick_time("*/5 * * * *", now) == tick


def test_tick_time_with_seconds_field() -> None:
    # GIVEN a 6-field NCRONTAB schedule every 30 s THEN ticks land on :00 and :30
    assert tick_time("*/30 * * * * *", at(1, 2, 44)) == at(1, 2, 30)


def principal(doc: object) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


def test_tenant_from_principal_reads_the_named_claim() -> None:
    # GIVEN a principal with several claims THEN the named one is the tenant
    header = principal({"claims": [{"typ": "oid", "val": "u"}, {"typ": "tid", "val": "acme"}]})
    assert tenant_from_principal(header, "tid") == "acme"
    assert tenant_from_principal(header, "missing") is None


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "***not base64***",
        base64.b64encode(b"\xff\xfe").decode(),
        base64.b64encode(b"not json").decode(),
        principal([1, 2]),
        principal({"claims": "tid"}),
        principal({"claims": [{"typ": "tid", "val": 5}], "x": 1}),
        principal({"claims": [None, "tid"]}),
    ],
)
def test_tenant_from_principal_never_raises_on_garbage(header: str | None) -> None:
    assert tenant_from_principal(header, "tid") is None
