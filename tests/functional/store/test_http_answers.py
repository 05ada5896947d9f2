"""HTTP processors that answer with data: ``HttpResponse`` / ``ProcessingResult.respond``,
``ctx.entities`` reads (tenant-scoped, paged by cursor), field errors of a payload model, and
the same answer through ``apix serve``'s ASGI app."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from apix_core import App, HttpResponse, Message, ProcessingResult, ProcessorContext
from apix_core.serve import AppServer


class Item(BaseModel):
    sku: str = Field(min_length=1)
    qty: int = Field(gt=0)


class NewThing(BaseModel):
    name: str = Field(min_length=1)
    items: list[Item] = Field(min_length=1)


def _reading_app(make_app: Any) -> App:
    app: App = make_app("answers")

    @app.processor("create", route="POST /things", payload=NewThing)
    async def create(message: Message, ctx: ProcessorContext) -> ProcessingResult:
        name = message.payload["name"]
        ctx.persist_entity(name, "thing", "api", message.payload, state="new", size=3)
        return ProcessingResult.respond({"id": name}, 201, headers={"Location": f"/things/{name}"})

    @app.processor("move", route="POST /things/{name}/{state}")
    async def move(message: Message, ctx: ProcessorContext) -> HttpResponse:
        params = message.metadata["http"]["path_params"]
        thing = await ctx.entities.find("thing", "api", params["name"])
        if thing is None:
            return HttpResponse(404, {"error": "NO_THING"})
        ctx.transition(thing.id, params["state"], "moved by test")
        return HttpResponse(200, {"moved": thing.external_id})

    @app.processor("list", route="GET /things")
    async def list_things(message: Message, ctx: ProcessorContext) -> HttpResponse:
        query = message.metadata["http"]["query"]
        page = await ctx.entities.page(
            canonical_type="thing",
            state=query.get("state"),
            limit=int(query.get("limit", "50")),
            cursor=query.get("cursor"),
        )
        return HttpResponse(
            200, {"names": [e.external_id for e in page.items], "next": page.next_cursor}
        )

    @app.processor("one", route="GET /things/{name}")
    async def one(message: Message, ctx: ProcessorContext) -> HttpResponse:
        name = message.metadata["http"]["path_params"]["name"]
        thing = await ctx.entities.find("thing", "api", name)
        if thing is None:
            return HttpResponse(404, {"error": "NO_THING", "message": name})
        assert await ctx.entities.get(thing.id) == thing
        history = await ctx.entities.history(thing.id)
        versions = await ctx.entities.versions(thing.id)
        return HttpResponse(
            200,
            {
                "state": thing.state,
                "size": thing.attributes["size"],
                "history": [[t.from_state, t.to_state, t.reason] for t in history],
                "versions": len(versions),
            },
        )

    @app.processor("array", route="GET /numbers")
    def numbers(message: Message, ctx: ProcessorContext) -> ProcessingResult:
        return ProcessingResult.respond([1, 2, 3])

    return app


ACME = {"X-Tenant-Id": "acme"}


def _body(name: str) -> str:
    return json.dumps({"name": name, "items": [{"sku": "A", "qty": 1}]})


async def test_processor_chooses_status_body_and_headers(make_app: Any) -> None:
    # GIVEN a POST route whose processor answers 201 with a Location header
    app = _reading_app(make_app)

    # WHEN a thing is created, and a list is asked for
    created = await app.handle_http("POST", "/things", headers=ACME, body=_body("t1"))
    listed = await app.handle_http("GET", "/numbers", headers=ACME)

    # THEN the answers are the processor's own, JSON-typed
    assert (created.status_code, created.body) == (201, {"id": "t1"})
    assert created.headers["Location"] == "/things/t1"
    assert created.headers["Content-Type"] == "application/json"
    assert (listed.status_code, listed.body, listed.text()) == (200, [1, 2, 3], "[1,2,3]")


async def test_get_reads_entity_state_and_history_scoped_to_the_tenant(make_app: Any) -> None:
    # GIVEN a thing created by tenant acme and moved to "shipped"
    app = _reading_app(make_app)
    await app.handle_http("POST", "/things", headers=ACME, body=_body("t1"))
    moved = await app.handle_http("POST", "/things/t1/shipped", headers=ACME)
    assert moved.status_code == 200, moved.body

    # WHEN acme reads it, another tenant reads it, and acme reads an unknown one
    mine = await app.handle_http("GET", "/things/t1", headers=ACME)
    theirs = await app.handle_http("GET", "/things/t1", headers={"X-Tenant-Id": "globex"})
    unknown = await app.handle_http("GET", "/things/nope", headers=ACME)

    # THEN acme sees its state, attributes and history; the others get the processor's 404
    assert mine.status_code == 200, mine.body
    assert mine.body == {
        "state": "shipped",
        "size": 3,
        "history": [[None, "new", "created"], ["new", "shipped", "moved by test"]],
        "versions": 1,
    }
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.body == {"error": "NO_THING", "message": "t1"}


async def test_entities_page_by_cursor_newest_first_with_a_state_filter(make_app: Any) -> None:
    # GIVEN five things, two of them moved to "done"
    app = _reading_app(make_app)
    for i in range(5):
        await app.handle_http("POST", "/things", headers=ACME, body=_body(f"t{i}"))
    for name in ("t1", "t3"):
        await app.handle_http("POST", f"/things/{name}/done", headers=ACME)

    # WHEN they are listed two at a time, following the cursor
    pages: list[list[str]] = []
    cursor = None
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await app.handle_http("GET", "/things", headers=ACME, query=query)).body
        pages.append(page["names"])
        cursor = page["next"]
        if cursor is None:
            break
    done = await app.handle_http("GET", "/things", headers=ACME, query={"state": "done"})

    # THEN three pages, newest first, each thing once; the filter keeps the two done ones
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [n for p in pages for n in p] == ["t4", "t3", "t2", "t1", "t0"]
    assert sorted(done.body["names"]) == ["t1", "t3"]


async def test_an_invalid_cursor_is_a_400_not_a_crash(make_app: Any) -> None:
    # GIVEN the listing route
    app = _reading_app(make_app)

    # WHEN it gets a cursor it never issued, and a limit of zero
    bad = await app.handle_http("GET", "/things", headers=ACME, query={"cursor": "bm90LWl0"})
    zero = await app.handle_http("GET", "/things", headers=ACME, query={"limit": "0"})

    # THEN both are typed 400s saying what to pass
    assert bad.status_code == zero.status_code == 400
    assert bad.body["error"] == zero.body["error"] == "INVALID_CURSOR"
    assert "next_cursor" in bad.body["message"]


async def test_payload_model_errors_are_listed_per_field_and_leave_no_record(
    make_app: Any,
) -> None:
    # GIVEN a route with a payload model, and a request key
    app = _reading_app(make_app)
    headers = {**ACME, "Idempotency-Key": "req-1"}

    # WHEN a body with two bad fields is posted, then the fixed body under the same key
    bad = await app.handle_http(
        "POST", "/things", headers=headers, body='{"name": "", "items": [{"sku": "A", "qty": 0}]}'
    )
    fixed = await app.handle_http("POST", "/things", headers=headers, body=_body("t9"))
    again = await app.handle_http("POST", "/things", headers=headers, body=_body("t9"))

    # THEN each field's error is listed (no input values echoed), and the key still works
    assert bad.status_code == 400
    assert bad.body["error"] == "INVALID_PAYLOAD"
    assert [f["field"] for f in bad.body["fields"]] == ["name", "items.0.qty"]
    assert "items.0.qty" in bad.body["message"]
    assert fixed.status_code == 201, fixed.body
    # AND the retried request gets the first answer again (status, body and headers)
    assert (again.status_code, again.body, again.headers) == (201, fixed.body, fixed.headers)


async def test_a_get_route_needs_no_queue(make_app: Any) -> None:
    # GIVEN the app: its GET routes consume and produce nothing
    app = _reading_app(make_app)

    # THEN no queue is attached to them
    assert app.input_queue(app.specs["one"]) is None
    assert app.specs["one"].produces == ()
    response = await app.handle_http("GET", "/things/none", headers=ACME)
    assert response.status_code == 404


async def test_apix_serve_answers_with_the_processor_response(make_app: Any) -> None:
    # GIVEN the ASGI app of `apix serve` (no workers) over the same app
    app = _reading_app(make_app)
    server = AppServer(app, workers=False)
    await server.startup()
    sent: list[dict[str, Any]] = []
    body = _body("t7").encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    # WHEN a POST arrives through ASGI
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/things",
        "query_string": b"",
        "headers": [(b"x-tenant-id", b"acme"), (b"content-length", str(len(body)).encode())],
    }
    try:
        await server(scope, receive, send)
    finally:
        await server.shutdown()

    # THEN the status, the Location header and the body are the processor's
    start, payload = sent
    assert start["status"] == 201
    assert (b"location", b"/things/t7") in start["headers"]
    assert json.loads(payload["body"]) == {"id": "t7"}


def test_http_response_rejects_what_has_no_http_form() -> None:
    # GIVEN / WHEN responses with a bad status or a body that is not a JSON object or array
    # THEN they fail at once with a message saying what to pass
    for status, body, expected in ((99, {}, "100 to 599"), (200, "text", "dict or list")):
        try:
            HttpResponse(status, body)
        except (ValueError, TypeError) as exc:
            assert expected in str(exc)
        else:
            raise AssertionError(f"HttpResponse({status}, {body!r}) was accepted")
