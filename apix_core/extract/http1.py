"""A lean HTTP/1.1 keep-alive client for the common extraction request.

httpx spends most of a loopback page's client time in its layers (request and URL models,
the connection pool's bookkeeping, h11's event machinery, anyio) rather than on the wire.
For a page request that needs none of what those layers add — no HTTP/2, no proxy, no custom
transport, no auth flow beyond a static header or query key — :class:`Http1Pool` sends the
request bytes itself on an asyncio protocol and parses the answer (status line, headers,
``Content-Length``, chunked or until-close bodies, gzip/deflate). Anything outside that path
is reported as :class:`Unsupported` and :class:`~apix_core.extract.client.ExtractClient`
sends the request through httpx instead: redirects, an unknown content encoding, URLs that
need normalising, ``Set-Cookie``.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote_plus, urlencode, urlsplit

USER_AGENT = "apix-extract"
_SAFE_URL = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%"
)


class Unsupported(Exception):
    """This request (or its answer) needs httpx: send it there. ``answered``: the server
    answered (a redirect, a cookie) — the request went out once already."""

    def __init__(self, reason: str, *, answered: bool = False) -> None:
        super().__init__(reason)
        self.answered = answered


class ConnectTimeout(TimeoutError):
    pass


class ReadTimeout(TimeoutError):
    pass


class RawResponse:
    """Status, reason, headers (lower-case names), decoded body, final URL."""

    __slots__ = ("content", "headers", "reason", "status", "url")

    def __init__(
        self, status: int, reason: str, headers: list[tuple[str, str]], content: bytes, url: str
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content = content
        self.url = url


def encode_params(params: Mapping[str, Any]) -> str:
    """A query string as httpx writes one (``true``/``false``, ``None`` empty, lists repeated)."""
    items: list[tuple[str, str]] = []
    for key, value in params.items():
        if isinstance(value, list | tuple):
            items.extend((key, _primitive(v)) for v in value)
        else:
            items.append((key, _primitive(value)))
    return urlencode(items)


def _primitive(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return ""
    return str(value)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.error: BaseException | None = None
        self.used = False

    # -- protocol callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self._lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def _lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.error = exc
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- reading ------------------------------------------------------------------------------
    async def _more(self) -> bool:
        """Wait for more bytes; False at the end of the stream."""
        if self.closed:
            return False
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None
        return True

    async def read_head(self) -> tuple[bytes, int]:
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buffer[:end])
                del self.buffer[: end + 4]
                return head, end
            if not await self._more():
                raise ConnectionError(
                    "server closed the connection without an answer"
                    + (f" ({self.error})" if self.error else "")
                )

    async def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not await self._more():
                raise ConnectionError("server closed the connection in the middle of a body")
        if len(self.buffer) == size:
            data = bytes(self.buffer)
            self.buffer.clear()
        else:
            data = bytes(self.buffer[:size])
            del self.buffer[:size]
        return data

    async def read_line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return line
            if not await self._more():
                raise ConnectionError("server closed the connection in the middle of a body")

    async def read_to_end(self) -> bytes:
        while await self._more():
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            line = await self.read_line()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                size = -1
            if size < 0:
                raise ConnectionError(f"invalid chunk size {line[:40]!r}")
            if size == 0:
                while await self.read_line():  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            parts.append(await self.read_exactly(size))
            if await self.read_exactly(2) != b"\r\n":  # the CRLF after each chunk
                raise ConnectionError("chunk not followed by CRLF")

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Http1Pool:
    """Keep-alive HTTP/1.1 connections per origin for one extraction."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None,
        timeout: float,
        connect_timeout: float,
        max_idle: int,
        ssl_context: Callable[[], ssl.SSLContext | bool] | None = None,
    ) -> None:
        base = {
            "accept": "*/*",
            "accept-encoding": "gzip, deflate",
            "connection": "keep-alive",
            "user-agent": USER_AGENT,
        }
        base.update({k.lower(): v for k, v in (headers or {}).items()})
        self._headers = base
        self._fixed = "".join(f"{_title(k)}: {v}\r\n" for k, v in base.items())
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_idle = max(1, max_idle)
        self._ssl_context = ssl_context
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()

    async def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()

    async def request(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        merge: Mapping[str, str] | None = None,
    ) -> RawResponse:
        """Send one request; raises :class:`Unsupported` when httpx must take it, a
        ``TimeoutError`` subclass or ``OSError`` (``ConnectionError``) when it failed."""
        if not _SAFE_URL.issuperset(url):
            raise Unsupported("the URL needs normalising")
        parts = urlsplit(url)
        scheme = parts.scheme
        host = parts.hostname
        if host is None or parts.username or parts.password or scheme not in ("http", "https"):
            raise Unsupported("not a plain http(s) URL")
        port = parts.port or (443 if scheme == "https" else 80)
        target = parts.path or "/"
        # As httpx 0.28 sends it: parameters replace the URL's own query; ``merge`` (an auth
        # flow's query key) is merged into what is there.
        query = encode_params(params) if params else parts.query
        if merge:
            query = _merge_query(query, merge)
        if query:
            target += "?" + query
        default_port = port == (443 if scheme == "https" else 80)
        netloc = host if default_port else f"{host}:{port}"
        if ":" in host:  # an IPv6 literal
            netloc = f"[{host}]" if default_port else f"[{host}]:{port}"
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {netloc}\r\n", self._fixed]
        if headers:
            lines.extend(f"{k}: {v}\r\n" for k, v in headers.items())
        if body is not None:
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        data = "".join(lines).encode("latin-1")
        if body:
            data += body
        shown_url = f"{scheme}://{netloc}{target}"
        origin = (scheme, host, port)
        for fresh in (False, True):
            conn = None if fresh else self._take(origin)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(scheme, host, port)
            try:
                return await self._exchange(conn, origin, method, data, shown_url)
            except ConnectionError:
                self._discard(conn)
                # An idle connection the server closed meanwhile: once more on a new one.
                if reused and method == "GET" and not conn.used:
                    continue
                raise
            except BaseException:
                self._discard(conn)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _take(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if (
                not conn.closed
                and not conn.buffer  # bytes nobody asked for: the stream is out of step
                and conn.transport is not None
                and not conn.transport.is_closing()
            ):
                return conn
            self._discard(conn)
        return None

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    async def _connect(self, scheme: str, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if scheme == "https":
            context = self._context()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    _Connection, host, port, ssl=context, server_hostname=host if context else None
                )
        except TimeoutError:
            raise ConnectTimeout(f"connecting to {host}:{port}") from None
        self._open.add(conn)
        return conn

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            made = self._ssl_context() if self._ssl_context is not None else True
            if not isinstance(made, ssl.SSLContext):
                made = ssl.create_default_context()
            made.set_alpn_protocols(["http/1.1"])
            self._ssl = made
        return self._ssl

    async def _exchange(
        self,
        conn: _Connection,
        origin: tuple[str, str, int],
        method: str,
        data: bytes,
        url: str,
    ) -> RawResponse:
        assert conn.transport is not None
        conn.transport.write(data)
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    head, _ = await conn.read_head()
                    conn.used = True
                    status, reason, headers, fields = _parse_head(head)
                    if 100 <= status < 200 and status != 101:
                        continue  # informational: the real answer follows
                    break
                if status == 101:
                    raise Unsupported("protocol switch")
                keep = fields.get("connection", "").lower() != "close" and not head.startswith(
                    b"HTTP/1.0"
                )
                if method == "HEAD" or status in (204, 304):
                    content = b""
                elif "chunked" in fields.get("transfer-encoding", "").lower():
                    content = await conn.read_chunked()
                elif "content-length" in fields:
                    try:
                        length = int(fields["content-length"])
                    except ValueError:
                        length = -1
                    if length < 0:
                        raise ConnectionError("invalid Content-Length")
                    content = await conn.read_exactly(length)
                else:
                    content = await conn.read_to_end()
                    keep = False
        except TimeoutError:
            raise ReadTimeout(f"no complete answer within {self.timeout}s") from None
        # Checked before the connection goes back to the pool: an answer that fails here (the
        # caller discards the connection) must not leave it idle, nor marked unused, which
        # would let request() send the GET again as if the server had closed it.
        encoding = fields.get("content-encoding", "identity").lower().strip()
        if encoding not in ("", "identity"):
            try:
                content = _decode(encoding, content)
            except zlib.error as exc:
                raise ConnectionError(f"undecodable {encoding} body ({exc})") from None
        if "set-cookie" in fields or (300 <= status < 400 and "location" in fields):
            raise Unsupported("cookies or a redirect: httpx follows them", answered=True)
        if keep and not conn.closed and not conn.buffer:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self.max_idle:
                conn.used = False
                idle.append(conn)
            else:
                self._discard(conn)
        else:
            self._discard(conn)
        return RawResponse(status, reason, headers, content, url)


def _parse_head(head: bytes) -> tuple[int, str, list[tuple[str, str]], dict[str, str]]:
    text = head.decode("latin-1")
    status_line, _, rest = text.partition("\r\n")
    try:
        _, code, *reason = status_line.split(" ", 2)
        status = int(code)
    except ValueError:
        raise ConnectionError(f"invalid status line {status_line[:60]!r}") from None
    headers: list[tuple[str, str]] = []
    fields: dict[str, str] = {}
    if rest:
        for line in rest.split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep:
                raise ConnectionError(f"invalid header line {line[:60]!r}")
            name, value = name.strip(), value.strip()
            headers.append((name, value))
            key = name.lower()
            fields[key] = f"{fields[key]}, {value}" if key in fields else value
    return status, reason[0] if reason else "", headers, fields


def _decode(encoding: str, content: bytes) -> bytes:
    for coding in reversed([c.strip() for c in encoding.split(",") if c.strip()]):
        if coding in ("gzip", "x-gzip"):
            content = zlib.decompress(content, 16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            try:
                content = zlib.decompress(content)
            except zlib.error:
                content = zlib.decompress(content, -zlib.MAX_WBITS)
        elif coding != "identity":
            raise Unsupported(f"content encoding {coding!r}")
    return content


def _merge_query(query: str, merge: Mapping[str, str]) -> str:
    kept = [p for p in query.split("&") if p and unquote_plus(p.split("=", 1)[0]) not in merge]
    return "&".join([*kept, encode_params(merge)])


def _title(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


__all__ = ["Http1Pool", "RawResponse", "Unsupported", "encode_params"]
