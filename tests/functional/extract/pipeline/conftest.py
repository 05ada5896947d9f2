"""A small paginated JSON API on 127.0.0.1 for the pipeline tests (helper fixtures of this
folder; the extraction engine's own server lives in tests/functional/extract/conftest.py).

``GET /items?page=N&per_page=M[&since=ISO][&region=R]`` answers ``{"data": [...]}`` with the
records of that page (sorted by ``id``; ``since`` keeps records with ``updated_at >= since``;
``region`` is copied into each record); an empty page ends the pagination. ``delay`` slows
every page; ``requests`` counts them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest


@dataclass
class ItemsApi:
    base_url: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    delay: float = 0.0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, start: int, count: int, day: str = "2026-11-28") -> list[dict[str, Any]]:
        """Add ``count`` records with ids from ``start``; ``updated_at`` rises with the id."""
        new = [
            {
                "id": i,
                "updated_at": f"{day}T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}Z",
                "name": f"item {i}",
            }
            for i in range(start, start + count)
        ]
        self.records.extend(new)
        return new

    def page(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        page = int(query.get("page", ["1"])[0])
        per_page = int(query.get("per_page", ["10"])[0])
        since = query.get("since", [None])[0]
        rows = sorted(self.records, key=lambda r: r["id"])
        if since:
            rows = [r for r in rows if r["updated_at"] >= since]
        region = query.get("region", [None])[0]
        if region:
            rows = [{**r, "region": region} for r in rows]
        return rows[(page - 1) * per_page : page * per_page]


@pytest.fixture
def items_api() -> Iterator[ItemsApi]:
    api = ItemsApi()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urlparse(self.path)
            with api.lock:
                api.requests += 1
            if api.delay:
                time.sleep(api.delay)
            body = json.dumps({"data": api.page(parse_qs(url.query))}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that stopped reading (a run cut by its deadline) is expected

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    api.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
