"""A partner's order API, local and deterministic, for the partner_sync example.

    python examples/partner_sync/partner_api.py --port 8765     # serve until Ctrl-C

What a real partner API does, on 127.0.0.1 with the standard library only:

- ``POST /oauth/token``: OAuth2 client credentials (form fields ``client_id`` /
  ``client_secret``, or HTTP Basic); a wrong secret is ``401 invalid_client``. Tokens expire
  after ``token_ttl`` seconds; ``POST /admin/revoke-tokens`` expires them all at once.
- ``GET /v1/orders?updated_since=…&page=…&per_page=…``: bearer token required; orders with
  ``updatedAt >= updated_since``, sorted by ``(updatedAt, orderId)``, as
  ``{"data": [...], "meta": {"page", "per_page", "total", "total_pages"}}``.
- a rate limit (token bucket, ``rate_limit`` requests per second): beyond it, ``429`` with
  ``Retry-After``. ``POST /admin/throttle {"requests": N, "retry_after": S}`` answers the next
  N order requests with 429 (a "429 storm").
- ``POST /admin/change {"update": 3, "touch": 2, "add": 2, "broken": 0}``: changes the data
  between runs (``update``: the status moves on; ``touch``: ``updatedAt`` moves, nothing else;
  ``add``: new orders; ``broken``: new orders with a line of quantity 0).
  ``GET /admin/log``: every request with its status and records returned.

The data derives from ``seed``: the same seed gives the same orders, and ``version=N`` applies
N - 1 rounds of ``change()`` at start (the embedded server of ``app.py`` uses it).
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: The partner's clock starts here: orders are placed in the week before it.
EPOCH = datetime(2026, 11, 8, tzinfo=UTC)
STATUSES = ("CONFIRMED", "SHIPPED", "DELIVERED")
CITIES = (("DE", "Berlin", "10115"), ("FR", "Lyon", "69001"), ("NL", "Utrecht", "3511"))
NAMES = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov")


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class LoggedRequest:
    """One request the server answered (secrets left out)."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    records: int = 0
    at: float = field(default_factory=time.time)


class PartnerApi:
    """The partner API server; ``start()`` serves in a daemon thread, ``url`` is its address."""

    def __init__(
        self,
        *,
        seed: int = 17,
        orders: int = 120,
        version: int = 1,
        client_id: str = "apix-demo",
        client_secret: str = "partner-secret",
        token_ttl: float = 3600.0,
        rate_limit: float = 50.0,
        burst: int = 10,
        max_page_size: int = 100,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.token_ttl, self.max_page_size = token_ttl, max_page_size
        self.rate_limit, self.burst = rate_limit, burst
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._clock = EPOCH
        self._orders: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, float] = {}
        self._bucket, self._bucket_at = float(burst), time.monotonic()
        self._storm: tuple[int, int] = (0, 0)
        self.log: list[LoggedRequest] = []
        for _ in range(orders):
            self._add_order(EPOCH - timedelta(minutes=self._rng.randint(60, 7 * 24 * 60)))
        for _ in range(version - 1):
            self.change()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> PartnerApi:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="partner-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> PartnerApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- data -----------------------------------------------------------------------------
    def _tick(self) -> datetime:
        self._clock += timedelta(minutes=1)
        return self._clock

    def _add_order(self, placed: datetime) -> dict[str, Any]:
        rng = self._rng
        number = 100001 + len(self._orders)
        country, city, zip_code = rng.choice(CITIES)
        name = rng.choice(NAMES)
        order_id = f"PO-{number}"
        order: dict[str, Any] = {
            "orderId": order_id,
            "orderDate": _iso(placed),
            "updatedAt": _iso(placed + timedelta(minutes=rng.randint(1, 50))),
            "status": "CONFIRMED",
            "currency": "EUR",
            "buyer": {
                "id": f"C-{rng.randint(1, 40):04d}",
                "email": f"{name.split()[0].lower()}@example.com",
                "name": name,
            },
            "lines": [
                {
                    "sku": f"SKU-{rng.randint(1, 60):04d}",
                    "qty": rng.randint(1, 4),
                    "unitPrice": f"{rng.randint(199, 9999) / 100:.2f}",
                }
                for _ in range(rng.randint(1, 3))
            ],
            "shipTo": {"country": country, "city": city, "postalCode": zip_code},
        }
        self._orders[order_id] = order
        return order

    def change(
        self, *, update: int = 3, touch: int = 2, add: int = 2, broken: int = 0
    ) -> dict[str, list[str]]:
        """Change the data as a partner would between two syncs; returns the ids per kind.

        ``broken`` adds orders the partner should not send (a line of quantity 0)."""
        with self._lock:
            movable = sorted(k for k, o in self._orders.items() if o["status"] != STATUSES[-1])
            updated = self._rng.sample(movable, min(update, len(movable)))
            for order_id in updated:
                order = self._orders[order_id]
                order["status"] = STATUSES[STATUSES.index(order["status"]) + 1]
                order["updatedAt"] = _iso(self._tick())
            rest = sorted(set(self._orders) - set(updated))
            touched = self._rng.sample(rest, min(touch, len(rest)))
            for order_id in touched:  # a new updatedAt, the same content
                self._orders[order_id]["updatedAt"] = _iso(self._tick())
            added = [self._add_order(self._tick())["orderId"] for _ in range(add)]
            bad = [self._add_order(self._tick()) for _ in range(broken)]
            for order in bad:
                order["lines"][0]["qty"] = 0
            ids = [o["orderId"] for o in bad]
            return {"updated": updated, "touched": touched, "added": added, "broken": ids}

    def orders(self) -> list[dict[str, Any]]:
        """Every order as the API returns it (copies)."""
        with self._lock:
            copies: list[dict[str, Any]] = json.loads(json.dumps(list(self._orders.values())))
            return copies

    def throttle(self, requests: int, retry_after: int = 1) -> None:
        """Answer the next ``requests`` order requests with 429 and ``Retry-After``."""
        with self._lock:
            self._storm = (requests, retry_after)

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    # -- requests -------------------------------------------------------------------------
    def _token(self, form: dict[str, str], basic: tuple[str, str] | None) -> tuple[int, Any]:
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if not (
            secrets.compare_digest(client_id, self.client_id)
            and secrets.compare_digest(secret, self.client_secret)
        ):
            return 401, {"error": "invalid_client"}
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_ttl
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl}

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        with self._lock:
            expires = self._tokens.get(header.removeprefix("Bearer "))
        return expires is not None and expires > time.monotonic()

    def _limited(self) -> int | None:
        """Seconds to wait when this request is over the limit, else None (a token taken)."""
        with self._lock:
            left, wait = self._storm
            if left > 0:
                self._storm = (left - 1, wait)
                return wait
            now = time.monotonic()
            self._bucket = min(self.burst, self._bucket + (now - self._bucket_at) * self.rate_limit)
            self._bucket_at = now
            if self._bucket < 1:
                return 1
            self._bucket -= 1
            return None

    def _list(self, query: dict[str, str]) -> tuple[int, Any]:
        try:
            since = query.get("updated_since")
            bound = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
            page = int(query.get("page", "1"))
            per_page = min(int(query.get("per_page", "50")), self.max_page_size)
        except ValueError as exc:
            return 400, {"error": "invalid_request", "detail": str(exc)}
        if page < 1 or per_page < 1:
            return 400, {"error": "invalid_request", "detail": "page and per_page start at 1"}
        with self._lock:
            selected = [
                o
                for o in self._orders.values()
                if bound is None or datetime.fromisoformat(o["updatedAt"]) >= bound
            ]
            selected.sort(key=lambda o: (o["updatedAt"], o["orderId"]))
            rows = json.loads(json.dumps(selected[(page - 1) * per_page : page * per_page]))
        total_pages = max(1, -(-len(selected) // per_page))
        meta = {"page": page, "per_page": per_page, "total": len(selected)}
        return 200, {"data": rows, "meta": {**meta, "total_pages": total_pages}}

    def handle(
        self, method: str, target: str, headers: Any, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """Answer one request: ``(status, JSON body, extra headers)``."""
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path, extra, records = parts.path, {}, 0
        if (method, path) == ("POST", "/oauth/token"):
            form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
            status, answer = self._token(form, _basic(headers.get("Authorization")))
        elif (method, path) == ("GET", "/v1/orders"):
            wait = self._limited()
            if wait is not None:
                status, answer = 429, {"error": "rate_limited"}
                extra["Retry-After"] = str(wait)
            elif not self._authorized(headers.get("Authorization")):
                status, answer = 401, {"error": "invalid_token"}
                extra["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            else:
                status, answer = self._list(query)
                records = len(answer.get("data", ()))
        elif (method, path) == ("POST", "/admin/change"):
            status, answer = 200, self.change(**_ints(body, ("update", "touch", "add", "broken")))
        elif (method, path) == ("POST", "/admin/throttle"):
            self.throttle(**_ints(body, ("requests", "retry_after")))
            status, answer = 200, {"ok": True}
        elif (method, path) == ("POST", "/admin/revoke-tokens"):
            self.revoke_tokens()
            status, answer = 200, {"ok": True}
        elif (method, path) == ("GET", "/admin/log"):
            with self._lock:
                status, answer = 200, [asdict(r) for r in self.log]
        else:
            status, answer = 404, {"error": "not_found"}
        if not path.startswith("/admin/"):
            with self._lock:
                self.log.append(LoggedRequest(method, path, query, status, records))
        return status, answer, extra


def _basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password


def _ints(body: bytes, names: tuple[str, ...]) -> dict[str, int]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        data = {}
    return {k: int(v) for k, v in data.items() if k in names} if isinstance(data, dict) else {}


def _handler_for(api: PartnerApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, answer, extra = api.handle(self.command, self.path, self.headers, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the request log is kept in api.log (without the query's secrets)

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--orders", type=int, default=120)
    parser.add_argument("--version", type=int, default=1, help="apply N-1 rounds of changes")
    args = parser.parse_args(argv)
    api = PartnerApi(
        seed=args.seed, orders=args.orders, version=args.version, host=args.host, port=args.port
    )
    print(f"partner API on {api.url} (client apix-demo / partner-secret); Ctrl-C stops it")
    try:
        api._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        api._server.server_close()


if __name__ == "__main__":
    main()
