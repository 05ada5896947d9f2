"""``apix_core.serve.AppServer`` driven through the ASGI interface directly."""

from __future__ import annotations

import json
from typing import Any

from apix_core import App, Message
from apix_core.serve import AppServer


async def _call(server: AppServer, chunks: list[bytes], headers: list[tuple[bytes, bytes]]):
    events = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return events.pop(0)

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/echo",
        "query_string": b"x=1",
        "headers": headers,
    }
    await server(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


async def test_streamed_body_over_the_bound_is_413_and_small_ones_are_served(
    database_url: str, queue_url: str
) -> None:
    # GIVEN a server with a 100-byte bound over an app with an HTTP processor
    app = App("asgi", database_url=database_url, queue_url=queue_url, auto_migrate=True)

    seen: list[tuple[dict, dict]] = []

    @app.processor("echo", route="POST /echo")
    def echo(message: Message) -> None:
        seen.append((message.payload, message.metadata["http"]["query"]))

    server = AppServer(app, workers=False, max_body_bytes=100)
    tenant = [(b"x-tenant-id", b"t1")]
    try:
        # WHEN a body arrives in chunks past the bound (no Content-Length), then a small one
        big_status, big = await _call(server, [b'{"a": "' + b"x" * 60, b"y" * 60 + b'"}'], tenant)
        ok_status, ok = await _call(server, [b'{"a": ', b"1}"], tenant)
    finally:
        await app.close()

    # THEN the first is refused with 413, the second reaches the processor with its query
    assert big_status == 413 and big["error"] == "PAYLOAD_TOO_LARGE"
    assert ok_status in (200, 202), ok
    assert seen == [({"a": 1}, {"x": "1"})]
