"""examples/partner_sync end to end: ``apix run`` twice against the example's partner API."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from typer.testing import Result

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "partner_sync"
APP = str(EXAMPLE / "app.py")
sys.path.insert(0, str(EXAMPLE))

from partner_api import PartnerApi  # noqa: E402

INITIAL = "2026-01-01T00:00:00Z"


@pytest.fixture
def partner(monkeypatch: pytest.MonkeyPatch, cli_env: dict[str, str]) -> Iterator[PartnerApi]:
    """The example's partner API on a free port, and the app pointed at it."""
    api = PartnerApi(seed=17, orders=120).start()
    monkeypatch.setenv("PARTNER_API_URL", api.url)
    monkeypatch.setenv("APIX_TOKEN_KEY", Fernet.generate_key().decode())
    monkeypatch.delenv("PARTNER_CLIENT_SECRET", raising=False)
    try:
        yield api
    finally:
        api.stop()


def _out() -> Path:
    return Path(os.environ["APIX_HOME"]) / "out" / "partner_sync" / "orders"


def _files() -> dict[Path, dict[str, Any]]:
    return {f: json.loads(f.read_text()) for f in sorted(_out().rglob("*.jsonl"))}


def _order_requests(api: PartnerApi, since: int = 0) -> list[Any]:
    return [r for r in api.log[since:] if r.path == "/v1/orders"]


def _run(apix: Callable[..., Result]) -> Result:
    # A schedule tick's id is its second: a second run in the same second would be a duplicate.
    time.sleep(max(0.0, 1.05 - (time.time() % 1)))
    return apix("run", APP)


def test_second_run_fetches_and_writes_only_the_changes(
    apix: Callable[..., Result], partner: PartnerApi
) -> None:
    # GIVEN a partner with 120 orders, never synced
    orders = {o["orderId"]: o for o in partner.orders()}

    # WHEN the app runs
    first = _run(apix)

    # THEN it asked for everything since the initial watermark, page by page, with a token
    assert first.exit_code == 0, first.output
    assert "121 completed" in first.output and "0 dead-lettered" in first.output
    calls = _order_requests(partner)
    assert [c.query["page"] for c in calls] == ["1", "2", "3"]
    assert {c.query["updated_since"] for c in calls} == {INITIAL}
    assert sum(c.records for c in calls) == 120
    assert [r.status for r in partner.log if r.path == "/oauth/token"] == [200]
    # AND wrote one canonical order per file, in the folder of the order's date
    files = _files()
    assert len(files) == 120
    for path, record in files.items():
        source = orders[record["order_id"]]
        assert path.parent.name == f"date={source['orderDate'][:10]}"
        assert record["status"] == source["status"].lower()
        assert path.read_text().count("\n") == 1
    watermark = max(o["updatedAt"] for o in orders.values())

    # GIVEN the partner changes 3 orders, touches 2 (a new updatedAt, the same content), adds
    # 2, and revokes its tokens
    changed = partner.change(update=3, touch=2, add=2)
    partner.revoke_tokens()
    seen = len(partner.log)

    # WHEN the app runs again
    second = _run(apix)

    # THEN it asked only for orders updated since the watermark (the last updatedAt it saw)
    assert second.exit_code == 0, second.output
    calls = _order_requests(partner, seen)
    assert {c.query["updated_since"] for c in calls} == {watermark}
    returned = sum(c.records for c in calls)
    at_boundary = sum(o["updatedAt"] == watermark for o in orders.values())
    assert returned == 7 + at_boundary  # the changes, and the boundary (dropped by its hash)
    # AND renewed the revoked token once: 401, a new token, the same request again
    assert [r.status for r in partner.log[seen:]][:3] == [401, 200, 200]
    assert [r.path for r in partner.log[seen:]][:2] == ["/v1/orders", "/oauth/token"]
    # AND transformed the 7 orders returned, but wrote only the 5 whose content changed
    assert "8 completed" in second.output, second.output
    new_files = {p: r for p, r in _files().items() if p not in files}
    assert sorted(r["order_id"] for r in new_files.values()) == sorted(
        changed["updated"] + changed["added"]
    )
    latest = {o["orderId"]: o for o in partner.orders()}
    for path, record in new_files.items():
        assert record["status"] == latest[record["order_id"]]["status"].lower()
        assert path.parent.name == f"date={latest[record['order_id']]['orderDate'][:10]}"
    assert {p.parent.name for p, r in new_files.items() if r["order_id"] in changed["added"]} == {
        "date=2026-11-08"
    }

    # WHEN it runs a third time with nothing changed
    seen = len(partner.log)
    third = _run(apix)

    # THEN only the boundary comes back, and nothing is transformed or written
    assert third.exit_code == 0, third.output
    assert "1 completed" in third.output
    assert sum(c.records for c in _order_requests(partner, seen)) >= 1
    assert len(_files()) == 125


def test_a_rejected_client_secret_is_a_clear_typed_error(
    apix: Callable[..., Result], partner: PartnerApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the app configured with a secret the partner's token endpoint rejects
    monkeypatch.setenv("PARTNER_CLIENT_SECRET", "wrong-secret")

    # WHEN it runs
    result = _run(apix)

    # THEN the sync is dead-lettered with the token error, no order was asked for or written
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "1 dead-lettered" in result.output
    assert {r.status for r in partner.log if r.path == "/oauth/token"} == {401}
    assert _order_requests(partner) == []
    assert _files() == {}
    dead = apix("dlq", "list")
    assert "TOKEN_REJECTED" in dead.output, dead.output
    shown = apix("dlq", "show", "1")
    assert "401" in shown.output
    assert "wrong-secret" not in shown.output + result.output


def test_a_429_storm_is_waited_out(apix: Callable[..., Result], partner: PartnerApi) -> None:
    # GIVEN a partner that answers the next 3 order requests with 429 and Retry-After: 1
    partner.throttle(3, retry_after=1)

    # WHEN the app runs
    result = _run(apix)

    # THEN each 429 was waited out for its Retry-After, and every order arrived once
    assert result.exit_code == 0, result.output
    assert "0 dead-lettered" in result.output
    calls = _order_requests(partner)
    assert [c.status for c in calls] == [429, 429, 429, 200, 200, 200]
    for before, after in itertools.pairwise(calls[:4]):
        assert after.at - before.at >= 0.95
    assert sum(c.records for c in calls) == 120
    assert len(_files()) == 120


def test_an_order_the_partner_should_not_send_is_dead_lettered_alone(
    apix: Callable[..., Result], partner: PartnerApi
) -> None:
    # GIVEN a partner that also sends one order with a line of quantity 0
    broken = partner.change(update=0, touch=0, add=0, broken=1)["broken"]

    # WHEN the app runs
    result = _run(apix)

    # THEN that order is dead-lettered with the field at fault, and the 120 others are written
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "1 dead-lettered" in result.output
    assert len(_files()) == 120
    dead = apix("dlq", "show", "1")
    assert "INVALID_PAYLOAD" in dead.output
    assert "lines.0.qty" in dead.output
    assert broken[0] in dead.output


def test_the_demo_runs_on_its_own_partner_api(
    apix: Callable[..., Result], monkeypatch: pytest.MonkeyPatch, cli_env: dict[str, str]
) -> None:
    # GIVEN no partner API and no token key configured (setenv first: the app sets both,
    # and monkeypatch then removes them again)
    for name in ("PARTNER_API_URL", "APIX_TOKEN_KEY"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)

    # WHEN the demo runs, then runs again on the partner's next data version
    first = _run(apix)
    monkeypatch.setenv("PARTNER_DATA_VERSION", "2")
    monkeypatch.delenv("PARTNER_API_URL")  # set by the first run; a new `apix run` is a new process
    second = _run(apix)

    # THEN the first run wrote every order, the second only the 5 new or changed ones
    assert first.exit_code == 0, first.output
    assert "121 completed" in first.output
    assert second.exit_code == 0, second.output
    assert "8 completed" in second.output
    assert len(_files()) == 125
    # AND the demo's token key is kept in APIX_HOME, readable by its owner only
    key = Path(os.environ["APIX_HOME"]) / "partner_sync.key"
    assert key.stat().st_mode & 0o777 == 0o600


def test_the_partner_api_starts_standalone(tmp_path: Path) -> None:
    # GIVEN the partner API started as its own process on a free port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-u", str(EXAMPLE / "partner_api.py"), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert f"127.0.0.1:{port}" in proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"

        # WHEN a client gets a token and lists the orders
        token = httpx.post(
            f"{url}/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "apix-demo",
                "client_secret": "partner-secret",
            },
        ).json()["access_token"]
        page = httpx.get(
            f"{url}/v1/orders",
            params={"per_page": 50},
            headers={"Authorization": f"Bearer {token}"},
        )
        anonymous = httpx.get(f"{url}/v1/orders")

        # THEN it answers like the partner: a page of orders with a token, 401 without
        assert page.status_code == 200
        assert len(page.json()["data"]) == 50
        assert page.json()["meta"] == {"page": 1, "per_page": 50, "total": 120, "total_pages": 3}
        assert anonymous.status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)
