"""Pure helpers of bad-input handling: JSON depth, storable dead-letter values and bodies."""

from __future__ import annotations

import pytest

from apix_core.constants import MAX_JSON_DEPTH
from apix_core.message import json_too_deep
from apix_core.storable import column_text, restore_body, storable_body
from apix_core.tenancy import is_valid_tenant_id


def test_json_depth_counts_the_top_level_object_as_one() -> None:
    # GIVEN values nested exactly at and one past the limit
    at: dict[str, object] = {}
    node = at
    for _ in range(MAX_JSON_DEPTH - 1):
        node["a"] = {}
        node = node["a"]  # type: ignore[assignment]
    # THEN the limit passes, one more level does not, scalars never do
    assert not json_too_deep(at)
    assert json_too_deep({"x": at})
    assert json_too_deep([[at]])
    assert not json_too_deep("{" * 1000)


@pytest.mark.parametrize(
    "body",
    [b"\x00\x01", b"\xff\xfe{", "text\x00nul", "lone \ud800 surrogate", b"ok \xe2\x82"],
)
def test_bodies_text_cannot_hold_round_trip_through_base64(body: str | bytes) -> None:
    # WHEN a body is made storable
    text, encoded = storable_body(body)
    # THEN it is plain ASCII marked as encoded, and restores to its bytes
    assert encoded and text.isascii() and "\x00" not in text
    restored = restore_body(text, {"apix_body_encoding": "base64"})
    raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
    assert restored == raw


def test_text_bodies_are_kept_as_they_are() -> None:
    assert storable_body('{"a": "é"}') == ('{"a": "é"}', False)
    assert storable_body('{"a": "é"}'.encode()) == ('{"a": "é"}', False)
    # a sender's own attribute on a body that is not base64 leaves it alone
    assert restore_body("{not b64", {"apix_body_encoding": "base64"}) == "{not b64"


@pytest.mark.parametrize("tenant", ["t" * 70, "ac\x00me", "a/b", "-x", "a" * 63 + "\x00"])
def test_invalid_tenants_stay_invalid_once_escaped_and_clipped(tenant: str) -> None:
    # WHEN an invalid tenant is made fit for a 64-character column
    stored = column_text(tenant, 64)
    # THEN it fits, holds no NUL, and can never equal a valid tenant id
    assert len(stored) <= 64 and "\x00" not in stored
    assert not is_valid_tenant_id(stored)
