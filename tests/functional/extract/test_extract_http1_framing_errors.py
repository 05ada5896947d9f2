"""The lean HTTP/1.1 client against a raw server on 127.0.0.1 that answers with broken
framing: each answer is an error, never a truncated body, and a failed answer on a kept-alive
connection is never sent again behind the caller's back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from apix_core.extract.http1 import Http1Pool

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
ANSWERS = {
    "/ok": OK,
    "/bad-gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
    "/negative-length": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}",
    "/negative-chunk": CHUNKED + b"-1\r\n{}\r\n0\r\n\r\n",
    "/chunk-no-crlf": CHUNKED + b"2\r\n{}XX0\r\n\r\n",
}


class RawServer:
    def __init__(self) -> None:
        self.requests: list[str] = []
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                self.requests.append(path)
                writer.write(ANSWERS[path])
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServer]:
    server = RawServer()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    async with listener:
        yield server
        listener.close()


def _pool() -> Http1Pool:
    return Http1Pool(headers={}, timeout=5, connect_timeout=5, max_idle=2)


async def test_an_undecodable_answer_on_a_kept_alive_connection_is_not_sent_again(
    raw_server: RawServer,
) -> None:
    # GIVEN a pool whose connection was kept alive by a good answer
    pool = _pool()
    await pool.request("GET", f"{raw_server.url}/ok", None)
    # WHEN the next answer on it cannot be decoded
    with pytest.raises(ConnectionError, match="undecodable gzip"):
        await pool.request("GET", f"{raw_server.url}/bad-gzip", None)
    await pool.close()
    # THEN the error reaches the caller (whose retry policy decides) and the request went out
    # once: the connection was not returned to the pool as if the server had closed it
    assert raw_server.requests == ["/ok", "/bad-gzip"]


@pytest.mark.parametrize("path", ["/negative-length", "/negative-chunk", "/chunk-no-crlf"])
async def test_broken_framing_is_an_error_not_a_short_body(
    raw_server: RawServer, path: str
) -> None:
    # GIVEN a server whose answer has a negative size or a chunk without its CRLF
    pool = _pool()
    # WHEN it is read  THEN a connection error, never a truncated or shifted body
    with pytest.raises(ConnectionError):
        await pool.request("GET", f"{raw_server.url}{path}", None)
    await pool.close()
