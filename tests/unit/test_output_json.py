"""Outputs are serialised by one rule (as pydantic would), and a value with no JSON form fails
clearly, naming its path."""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from apix_core.errors import OutputSerializationError, PermanentError
from apix_core.hashing import canonical_json
from apix_core.message import dump_json


class Colour(enum.Enum):
    RED = "red"


class Line(BaseModel):
    sku: str
    at: datetime


@dataclasses.dataclass
class Price:
    amount: Decimal
    day: date


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2024, 5, 1, 12, 0, tzinfo=UTC), "2024-05-01T12:00:00+00:00"),
        (date(2024, 5, 1), "2024-05-01"),
        (time(7, 30), "07:30:00"),
        (Decimal("9.50"), 9.5),
        (Decimal("12"), 12),
        (Decimal("1E+3"), 1000),
        (Decimal("12345678901234567890.123"), "12345678901234567890.123"),
        (Decimal("0.10000000000000000001"), "0.10000000000000000001"),
        (Decimal("NaN"), "NaN"),
        (uuid.UUID(int=7), "00000000-0000-0000-0000-000000000007"),
        (Colour.RED, "red"),
        (Line(sku="A", at=datetime(2024, 1, 1)), {"sku": "A", "at": "2024-01-01T00:00:00"}),
        (Price(Decimal("2.5"), date(2024, 1, 2)), {"amount": 2.5, "day": "2024-01-02"}),
        (b"hello", "hello"),
        ({"b", "a", "c"}, ["a", "b", "c"]),
        (frozenset({3, 1}), [1, 3]),
        (timedelta(hours=1), "PT1H"),
        (Path("/tmp/x"), "/tmp/x"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_non_json_values_are_written_as_pydantic_would(value: Any, expected: Any) -> None:
    # WHEN a payload holding the value is serialised (envelope encoder and content hash)
    text = dump_json({"v": value})

    # THEN it reads back as the documented JSON form
    assert json.loads(text) == {"v": expected}
    assert json.loads(canonical_json({"v": value})) == {"v": expected}


@pytest.mark.parametrize(
    ("value", "path", "reason"),
    [
        ({"payload": {"items": [1, 2, {"price": object()}]}}, "payload.items[2].price", "object"),
        ({"payload": {"tags": {1, "a"}}}, "payload.tags", "cannot be sorted"),
        ({"payload": {"raw": b"\xff\x00"}}, "payload.raw", "not UTF-8"),
        ({"payload": {"p": Price(Decimal(1), object())}}, "payload.p.day", "object"),  # type: ignore[arg-type]
        ([1, [2, object()]], "[1][1]", "object"),
    ],
)
def test_a_value_with_no_json_form_fails_permanently_naming_its_path(
    value: Any, path: str, reason: str
) -> None:
    # WHEN the value is serialised
    with pytest.raises(OutputSerializationError) as caught:
        dump_json(value)

    # THEN a permanent (never retried) error names the path of the culprit
    err = caught.value
    assert isinstance(err, PermanentError) and not err.retryable
    assert err.code == "UNSERIALIZABLE_OUTPUT"
    assert err.path == path
    assert f"at {path} has no JSON form" in str(err) and reason in str(err)


def test_plain_json_is_byte_identical_to_json_dumps() -> None:
    # GIVEN plain JSON data (the hook is never called for it)
    value = {"a": [1, 2.5, None, True, "é", {"z": {}}], "b": "x" * 10}

    # THEN the text is exactly json.dumps's
    assert dump_json(value) == json.dumps(value, separators=(",", ":"))
    assert canonical_json(value) == json.dumps(
        value, separators=(",", ":"), sort_keys=True, ensure_ascii=False
    )
