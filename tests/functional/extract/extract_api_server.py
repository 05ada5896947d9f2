"""A small HTTP/1.1 JSON API on 127.0.0.1 for the extraction tests and benchmark.

Plain asyncio (keep-alive, Content-Length bodies), run on its own thread and event loop so any
test loop can call it. Every pagination style, 429 with Retry-After (seconds or HTTP date),
flaky 5xx, slow pages, malformed JSON, a repeating cursor, and an OAuth2 token endpoint that
counts its requests. Every request is logged (``server.log``) with its arrival time.

Run as a script it serves the benchmark's pre-built pages: ``python extract_api_server.py
--pages 200 --records 500`` prints ``PORT <n>`` and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

Handler = Callable[["Request"], "Reply"]
DEFAULT_TOTAL = 95  # records; pages of 10 → 10 pages, the last one short


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float
    raw_target: str
    peer: Any = None  # the client's (host, port): one per connection


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    delay: float = 0.0
    chunked: bool = False  # Transfer-Encoding: chunked instead of Content-Length
    hang_up: bool = False  # close the connection after answering, without saying so


REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    403: "Forbidden",
}


def make_records(start: int, count: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "name": f"item-{i}", "updated_at": f"2026-01-01T00:{i % 60:02d}:00Z"}
        for i in range(start, start + count)
    ]


# Page bodies are built once per (page, size, total), as the part-1 benchmark's pages are:
# the parallel benchmark then measures the client and the 20 ms latency, not this server's
# JSON encoding, which shares the client's two cores (a real API's servers do not).
@functools.lru_cache(maxsize=8192)
def _pages_body(page: int, size: int, total: int) -> bytes:
    start = (page - 1) * size
    pages = -(-total // size)
    body = {
        "data": make_records(start, max(0, min(size, total - start))),
        "meta": {"page": page, "total_pages": pages, "total": total, "has_more": page < pages},
    }
    return json.dumps(body).encode()


@functools.lru_cache(maxsize=8192)
def _offset_body(offset: int, limit: int, total: int) -> bytes:
    body = {"results": make_records(offset, max(0, min(limit, total - offset))), "count": total}
    return json.dumps(body).encode()


class ApiServer:
    """The API; ``url`` once started. Tests read ``log`` and tweak ``tokens_valid``."""

    def __init__(self, bench_pages: int = 0, bench_records: int = 0) -> None:
        self.log: list[Request] = []
        self.hits: Counter[str] = Counter()
        self.token_requests = 0
        self.token_forms: list[dict[str, str]] = []
        self.issued: set[str] = set()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._bench: list[bytes] = []
        if bench_pages:
            self._bench = [
                json.dumps(
                    {
                        "data": make_records(p * bench_records, bench_records),
                        "page": p + 1,
                        "total_pages": bench_pages,
                    }
                ).encode()
                for p in range(bench_pages)
            ]
        self.routes: dict[str, Handler] = {
            "/pages": self.pages,
            "/offset": self.offset,
            "/cursor": self.cursor,
            "/cursor-header": self.cursor_header,
            "/link": self.link,
            "/next-url": self.next_url,
            "/single": self.single,
            "/loop-cursor": self.loop_cursor,
            "/loop-link": self.loop_link,
            "/ratelimited": self.ratelimited,
            "/flaky": self.flaky,
            "/status": self.status,
            "/slow": self.slow,
            "/malformed": self.malformed,
            "/token": self.token,
            "/protected": self.protected,
            "/echo": self.echo,
            "/bench": self.bench,
            "/users": self.users,
            "/drop": self.drop,
            "/scalar": self.scalar,
        }
        self.routes["/framing"] = self.framing
        self.routes.update({"/pp": self.pp, "/events": self.events, "/limited": self.limited})
        self._limit_window = (0, 0)  # (second, requests answered in it) for /limited
        self.limited_rejections: list[float] = []  # arrival times of the refused requests

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.log if r.path == path]

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> ApiServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=256)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            # Handlers still waiting (slow pages, keep-alive reads) end here, on this loop.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="extract-api-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = b""
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                parts = urlsplit(target)
                request = Request(
                    method,
                    parts.path,
                    dict(parse_qsl(parts.query)),
                    headers,
                    body,
                    time.monotonic(),
                    target,
                    writer.get_extra_info("peername"),
                )
                self.log.append(request)
                self.hits[parts.path] += 1
                route = self.routes.get(parts.path) or self.routes.get(
                    "/" + parts.path.strip("/").split("/")[0]
                )
                reply = route(request) if route else Reply(404, {"error": "no such route"})
                if "delay" in request.query and not reply.delay:
                    reply.delay = float(request.query["delay"])
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                if reply.status == -1:  # drop the connection without an answer
                    writer.close()
                    return
                payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                head = [
                    f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Status')}",
                    "Content-Type: application/json",
                ]
                if reply.chunked:
                    head.append("Transfer-Encoding: chunked")
                    third = max(1, len(payload) // 3)
                    pieces = [payload[i : i + third] for i in range(0, len(payload), third)]
                    payload = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
                    payload += b"0\r\nX-Trailer: done\r\n\r\n"
                else:
                    head.append(f"Content-Length: {len(payload)}")
                head += [f"{k}: {v}" for k, v in reply.headers.items()]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
                await writer.drain()
                if headers.get("connection", "").lower() == "close" or reply.hang_up:
                    break
                if reply.headers.get("Connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _total(r: Request) -> int:
        return int(r.query.get("total", DEFAULT_TOTAL))

    # -- pagination styles ---------------------------------------------------------------------
    def pages(self, r: Request) -> Reply:
        page, size, total = (
            int(r.query.get("page", 1)),
            int(r.query.get("per_page", 10)),
            self._total(r),
        )
        return Reply(raw=_pages_body(page, size, total))

    def offset(self, r: Request) -> Reply:
        offset, limit, total = (
            int(r.query.get("offset", 0)),
            int(r.query.get("limit", 10)),
            self._total(r),
        )
        return Reply(raw=_offset_body(offset, limit, total))

    def _cursor_page(self, r: Request) -> tuple[list[dict[str, Any]], str | None]:
        start = int(r.query.get("cursor", "c0")[1:])
        total = self._total(r)
        data = make_records(start, max(0, min(10, total - start)))
        return data, (f"c{start + 10}" if start + 10 < total else None)

    def cursor(self, r: Request) -> Reply:
        data, nxt = self._cursor_page(r)
        return Reply(body={"items": data, "paging": {"next": nxt}})

    def cursor_header(self, r: Request) -> Reply:
        data, nxt = self._cursor_page(r)
        return Reply(body=data, headers={"X-Next-Cursor": nxt} if nxt else {})

    def link(self, r: Request) -> Reply:
        page, total = int(r.query.get("page", 1)), self._total(r)
        pages = -(-total // 10)
        base = f"{self.url}/link?total={total}&page="
        links = [f'<{base}1>; rel="first"']
        if page > 1:
            links.append(f'<{base}{page - 1}>; rel="prev"')
        if page < pages:
            # relation list and a title with a comma inside quotes, as RFC 8288 allows
            links.append(f'<{base}{page + 1}>; title="next, please"; rel="next nofollow"')
        links.append(f"<{base}{pages}>; rel=last")
        return Reply(
            body=make_records((page - 1) * 10, min(10, total - (page - 1) * 10)),
            headers={"Link": ", ".join(links)},
        )

    def next_url(self, r: Request) -> Reply:
        page, total = int(r.query.get("page", 1)), self._total(r)
        pages = -(-total // 10)
        nxt = f"/next-url?total={total}&page={page + 1}" if page < pages else None
        return Reply(
            body={
                "records": make_records((page - 1) * 10, min(10, total - (page - 1) * 10)),
                "links": {"next": nxt},
            }
        )

    def single(self, r: Request) -> Reply:
        return Reply(body=make_records(0, 3))

    def loop_cursor(self, r: Request) -> Reply:
        return Reply(body={"items": make_records(0, 2), "paging": {"next": "same-token"}})

    def loop_link(self, r: Request) -> Reply:
        return Reply(
            body=make_records(0, 2), headers={"Link": f'<{self.url}/loop-link?x=1>; rel="next"'}
        )

    def users(self, r: Request) -> Reply:
        # /users/{id}/repos — request templates
        parts = unquote(r.path).strip("/").split("/")
        return Reply(
            body={"data": [{"user": parts[1], "repo": f"r{i}", "q": r.query} for i in range(2)]}
        )

    # -- failures ------------------------------------------------------------------------------
    def ratelimited(self, r: Request) -> Reply:
        key = r.query.get("key", "")
        self.hits["ratelimited:" + key] += 1
        if self.hits["ratelimited:" + key] <= int(r.query.get("times", 1)):
            wait = int(r.query.get("wait", 1))
            if r.query.get("form") == "date":
                when = datetime.now(UTC) + timedelta(seconds=wait + 1)
                value = format_datetime(when.replace(microsecond=0), usegmt=True)
            else:
                value = str(wait)
            status = int(r.query.get("status", 429))
            return Reply(status, {"error": "slow down"}, {"Retry-After": value})
        return Reply(body={"data": make_records(0, 2)})

    def flaky(self, r: Request) -> Reply:
        key = r.query.get("key", "")
        self.hits["flaky:" + key] += 1
        if self.hits["flaky:" + key] <= int(r.query.get("fail", 2)):
            return Reply(int(r.query.get("status", 503)), {"error": "try again"})
        return Reply(body={"data": make_records(0, 2)})

    def status(self, r: Request) -> Reply:
        return Reply(int(r.path.rsplit("/", 1)[-1]), {"error": "status", "echo": r.raw_target})

    def slow(self, r: Request) -> Reply:
        return Reply(body={"data": make_records(0, 1)}, delay=float(r.query.get("delay", 1)))

    def drop(self, r: Request) -> Reply:
        return Reply(status=-1)

    def scalar(self, r: Request) -> Reply:
        return Reply(body="maintenance")

    def malformed(self, r: Request) -> Reply:
        return Reply(raw=b'{"data": [{"id": 1}, {"id": ')

    # -- auth ----------------------------------------------------------------------------------
    def token(self, r: Request) -> Reply:
        self.token_requests += 1
        form = dict(parse_qsl(r.body.decode()))
        self.token_forms.append(form)
        if form.get("client_secret") != "s3cret-client":
            return Reply(401, {"error": "invalid_client"})
        token = f"tok-{self.token_requests}"
        self.issued.add(token)
        return Reply(body={"access_token": token, "expires_in": 3600, "token_type": "bearer"})

    def protected(self, r: Request) -> Reply:
        auth = r.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.issued:
            return Reply(401, {"error": "invalid_token"})
        return Reply(body={"data": [{"token": auth[7:]}]})

    def echo(self, r: Request) -> Reply:
        return Reply(body={"data": [{"headers": r.headers, "query": r.query}]})

    def bench(self, r: Request) -> Reply:
        page = int(r.query.get("page", 1))
        if 1 <= page <= len(self._bench):
            return Reply(raw=self._bench[page - 1])
        return Reply(body={"data": [], "page": page, "total_pages": len(self._bench)})

    # -- HTTP/1.1 framing (the lean client path) ------------------------------------------------
    def framing(self, r: Request) -> Reply:
        """/pages answered with ``mode``: ``gzip`` or ``deflate`` (Content-Encoding),
        ``chunked``, ``close`` (Connection: close), ``hangup`` (closes without saying so),
        ``redirect`` (302 to the same page with mode=plain), ``cookie`` (page 1 sets a session
        cookie, later pages need it)."""
        mode = r.query.get("mode", "plain")
        reply = self.pages(r)
        assert reply.raw is not None
        if mode in ("gzip", "deflate"):
            import gzip
            import zlib

            packed = gzip.compress(reply.raw) if mode == "gzip" else zlib.compress(reply.raw)
            return Reply(raw=packed, headers={"Content-Encoding": mode})
        if mode == "chunked":
            reply.chunked = True
        elif mode == "close":
            reply.headers["Connection"] = "close"
        elif mode == "hangup":
            reply.hang_up = True
        elif mode == "redirect":
            target = r.raw_target.replace("mode=redirect", "mode=plain")
            return Reply(302, {"moved": True}, {"Location": target})
        elif mode == "cookie":
            if r.query.get("page", "1") == "1":
                reply.headers["Set-Cookie"] = "session=s1; Path=/"
            elif "session=s1" not in r.headers.get("cookie", ""):
                return Reply(401, {"error": "no session"})
        return reply

    # -- parallel fetching (issue 16) ----------------------------------------------------------
    def pp(self, r: Request) -> Reply:
        """/pages whose page ``fail_page`` answers ``status`` (503) its first ``fail_times``."""
        page = r.query.get("page", "1")
        if page == r.query.get("fail_page"):
            self.hits["pp-fail:" + page] += 1
            if self.hits["pp-fail:" + page] <= int(r.query.get("fail_times", 1)):
                return Reply(int(r.query.get("status", 503)), {"error": "page failed"})
        return self.pages(r)

    def events(self, r: Request) -> Reply:
        """One event a minute from 2026-01-01T00:00Z (``total`` of them), filtered to
        ``[start, end)`` and paginated with ``page``/``per_page``; the window starting at
        ``fail_start`` answers 503 its first ``fail_times`` requests."""
        origin = datetime(2026, 1, 1, tzinfo=UTC)
        total = int(r.query.get("total", 240))

        def minute(name: str, default: int) -> int:
            if name not in r.query:
                return default
            moment = datetime.fromisoformat(r.query[name].replace("Z", "+00:00"))
            return int((moment - origin).total_seconds() // 60)

        lo, hi = max(0, minute("start", 0)), min(total, minute("end", total))
        if "fail_start" in r.query and r.query.get("start") == r.query["fail_start"]:
            self.hits["events-fail"] += 1
            if self.hits["events-fail"] <= int(r.query.get("fail_times", 1)):
                return Reply(503, {"error": "window failed"})
        page, size = int(r.query.get("page", 1)), int(r.query.get("per_page", 10))
        first = lo + (page - 1) * size
        data = [
            {"id": i, "at": (origin + timedelta(minutes=i)).isoformat().replace("+00:00", "Z")}
            for i in range(first, min(hi, first + size))
        ]
        return Reply(body={"data": data, "meta": {"total_pages": -(-max(0, hi - lo) // size)}})

    def limited(self, r: Request) -> Reply:
        """Pages (like /pages) with at most ``rps`` answers per clock second; beyond that
        429 with ``Retry-After: 1``."""
        second = int(time.monotonic())
        current, used = self._limit_window
        if second != current:
            current, used = second, 0
        if used >= int(r.query.get("rps", 50)):
            self.limited_rejections.append(r.at)
            return Reply(429, {"error": "rate limited"}, {"Retry-After": "1"})
        self._limit_window = (current, used + 1)
        return self.pages(r)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--records", type=int, default=500)
    args = parser.parse_args()
    server = ApiServer(args.pages, args.records).start()
    print(f"PORT {server.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
