"""The extraction tests' API: one real HTTP server on 127.0.0.1 per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from extract_api_server import ApiServer


@pytest.fixture
def api() -> Iterator[ApiServer]:
    server = ApiServer().start()
    try:
        yield server
    finally:
        server.stop()
