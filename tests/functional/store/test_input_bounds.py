"""Bounded input on every entry point: JSON depth and size, and typed errors only.

``App.handle_http`` answers (never raises) for a 10,000-deep body and a lone-surrogate
``Idempotency-Key``; ``App.send`` raises ``PermanentError`` subclasses for an invalid tenant,
an overlong or NUL-bearing message id and a too-deep payload, on both databases.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from apix_core import App, Message
from apix_core.constants import MAX_JSON_DEPTH
from apix_core.errors import (
    InvalidMessageIdError,
    InvalidTenantError,
    JsonTooDeepError,
    PayloadValidationError,
    PermanentError,
)

TENANT = {"X-Tenant-Id": "acme"}


def _deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _http_app(make_app: Any, seen: list[Message]) -> App:
    app: App = make_app("bounds")

    @app.processor("create", route="POST /orders")
    async def create(message: Message) -> None:
        seen.append(message)

    return app


async def test_http_answers_400_for_a_10000_deep_body_and_a_lone_surrogate_key(
    make_app: Any,
) -> None:
    # GIVEN an HTTP route
    seen: list[Message] = []
    app = _http_app(make_app, seen)

    # WHEN requests carry a 10,000-deep body, a 65-deep body, or a lone-surrogate key
    deep = await app.handle_http("POST", "/orders", headers=TENANT, body=_deep(10_000))
    over = await app.handle_http(
        "POST", "/orders", headers=TENANT, body=_deep(MAX_JSON_DEPTH + 1).encode()
    )
    surrogate = await app.handle_http(
        "POST", "/orders", headers={**TENANT, "Idempotency-Key": "k-\ud800"}, body="{}"
    )
    control = await app.handle_http(
        "POST", "/orders", headers={**TENANT, "Idempotency-Key": "k\x00"}, body="{}"
    )

    # THEN each gets a 400 with a JSON error body, and no processor ran
    for response, code in (
        (deep, "JSON_TOO_DEEP"),
        (over, "JSON_TOO_DEEP"),
        (surrogate, "INVALID_MESSAGE_ID"),
        (control, "INVALID_MESSAGE_ID"),
    ):
        assert response.status_code == 400, response.body
        assert json.loads(response.text())["error"] == code
    assert seen == []
    # AND a body at the limit still goes through
    ok = await app.handle_http("POST", "/orders", headers=TENANT, body=_deep(MAX_JSON_DEPTH))
    assert ok.status_code == 200, ok.body
    assert len(seen) == 1


async def test_http_refuses_an_oversize_body_with_413(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a lowered input limit (the default is 16 MiB)
    import apix_core.message as message_module

    monkeypatch.setattr(message_module, "MAX_INPUT_BYTES", 1000)
    seen: list[Message] = []
    app = _http_app(make_app, seen)
    # WHEN a larger body arrives
    response = await app.handle_http(
        "POST", "/orders", headers=TENANT, body=json.dumps({"pad": "x" * 2000})
    )
    # THEN it is refused before parsing
    assert response.status_code == 413 and response.body["error"] == "INPUT_TOO_LARGE"
    assert seen == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"tenant_id": "a/b"}, InvalidTenantError),
        ({"tenant_id": "t" * 70}, InvalidTenantError),
        ({"message_id": "m" * 300}, InvalidMessageIdError),
        ({"message_id": "nul\x00id"}, InvalidMessageIdError),
        ({"message_id": "\ud800"}, InvalidMessageIdError),
        ({"payload": json.loads(_deep(MAX_JSON_DEPTH + 5))}, JsonTooDeepError),
        ({"payload": "not a dict"}, PayloadValidationError),
        ({"metadata": json.loads(_deep(MAX_JSON_DEPTH + 5))}, JsonTooDeepError),
    ],
)
async def test_send_raises_typed_permanent_errors(
    make_app: Any, kwargs: dict[str, Any], error: type[PermanentError]
) -> None:
    # GIVEN an app on either database
    app: App = make_app("send-bounds", tenant_id="acme")

    @app.processor("work", consumes="in")
    async def work(message: Message) -> None:
        return None

    await app.start()
    args: dict[str, Any] = {"payload": {"n": 1}, **kwargs}
    payload = args.pop("payload")

    # WHEN send gets a bad value
    with pytest.raises(error) as info:
        await app.send("in", payload, **args)

    # THEN it is apix's typed, permanent error with a clear message; nothing was queued
    assert isinstance(info.value, PermanentError)
    assert str(info.value)
    assert (await app.transport.depth("in")).total == 0  # type: ignore[union-attr]


async def test_send_of_a_10000_deep_payload_raises_json_too_deep(make_app: Any) -> None:
    # GIVEN a payload nested 10,000 levels (built iteratively: no recursion to build it)
    app: App = make_app("send-deep", tenant_id="acme")
    payload: dict[str, Any] = {}
    node = payload
    for _ in range(10_000):
        node["a"] = {}
        node = node["a"]
    # WHEN it is sent THEN a typed error, not a RecursionError
    with pytest.raises(JsonTooDeepError):
        await app.send("in", payload)
