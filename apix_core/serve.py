"""A tiny ASGI application serving an app's HTTP processors (``apix serve``).

Requests go through :meth:`App.handle_http`, exactly as the cloud adapters route them: method,
path, query, headers and body in; the :class:`~apix_core.http.HttpResponse` status, headers and
JSON body out. With ``workers=True`` the app's queue workers (and schedules) run beside it in
the same event loop (:class:`~apix_core.runtime.LocalRunner` in forever mode), started and
stopped by the ASGI lifespan, so one process serves ``POST /orders`` and processes what it
queues. Any ASGI server can run it; ``apix serve`` uses uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from apix_core.app import App
    from apix_core.runtime import LocalRunner

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Largest request body accepted (bytes); a larger one gets 413.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024

_log = logging.getLogger("apix.serve")


class BodyTooLarge(Exception):
    pass


class AppServer:
    """The ASGI callable: ``http`` requests to :meth:`App.handle_http`, ``lifespan`` to the
    app's start and close (and the workers' runner when ``workers`` is on)."""

    def __init__(
        self,
        app: App,
        *,
        workers: bool = True,
        schedules: bool = True,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.workers = workers
        self.schedules = schedules
        self.max_body_bytes = max_body_bytes
        self.runner: LocalRunner | None = None
        self._runner_task: asyncio.Task[Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # -- lifespan -------------------------------------------------------------------------
    async def startup(self) -> None:
        await self.app.start()
        if self.workers and any(self.app.input_queue(s) for s in self.app.specs.values()):
            from apix_core.runtime import LocalRunner

            self.runner = LocalRunner(self.app, forever=True, fire_schedules=self.schedules)
            self._runner_task = asyncio.create_task(self.runner.run(), name="apix:workers")

    async def shutdown(self) -> None:
        if self.runner is not None and self._runner_task is not None:
            self.runner.stop()  # in-flight batches settle before the task ends
            try:
                await self._runner_task
            except Exception:
                _log.exception("queue workers failed")
        await self.app.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- http -----------------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        try:
            body = await self._body(headers, receive)
        except BodyTooLarge:
            await _respond(
                send,
                413,
                {
                    "error": "PAYLOAD_TOO_LARGE",
                    "message": f"request body over {self.max_body_bytes} bytes",
                },
            )
            return
        try:
            response = await self.app.handle_http(
                scope["method"], scope["path"], headers=headers, body=body, query=query
            )
        except Exception:
            _log.exception("request failed", extra={"path": scope["path"]})
            await _respond(send, 500, {"error": "INTERNAL_ERROR", "message": "internal error"})
            return
        await _respond(send, response.status_code, response.body, response.headers)

    async def _body(self, headers: dict[str, str], receive: Receive) -> bytes:
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                break
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not event.get("more_body", False):
                break
        return b"".join(chunks)


async def _respond(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    data = json.dumps(body, separators=(",", ":"), default=str).encode("utf-8")
    out = {k.lower(): v for k, v in (headers or {}).items()}
    out.setdefault("content-type", "application/json")
    out["content-length"] = str(len(data))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out.items()],
        }
    )
    await send({"type": "http.response.body", "body": data})


__all__ = ["DEFAULT_MAX_BODY_BYTES", "AppServer"]
