"""Fixtures of the production-backend tests: a migrated Database and a real token endpoint."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from apix_core.store.database import Database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The test's database, migrated to head."""
    database = Database(database_url)
    await database.upgrade()
    yield database
    await database.dispose()


@dataclass
class TokenServer:
    """An OAuth2-style token endpoint on 127.0.0.1 that counts its requests."""

    url: str = ""
    requests: int = 0
    fail_next: int = 0
    fail_status: int = 503
    expires_in: float = 3600.0
    delay: float = 0.2
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    state = TokenServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                state.requests += 1
                n = state.requests
                fail = state.fail_next > 0
                if fail:
                    state.fail_next -= 1
            # A slow endpoint widens the window in which concurrent callers could double-fetch.
            time.sleep(state.delay)
            if fail:
                self.send_response(state.fail_status)
                self.end_headers()
                return
            body = json.dumps(
                {"access_token": f"tok-secret-{n}-plaintext", "expires_in": state.expires_in}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/oauth/token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
