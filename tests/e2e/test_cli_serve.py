"""``apix serve`` as a real process: HTTP over a real socket, workers beside, graceful stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

APP = """
    import json
    from pathlib import Path

    from apix_core import App, Message, ProcessorContext

    app = App("shop", tenant_id="t1")
    OUT = Path(__file__).with_name("orders.jsonl")

    @app.processor("take_order", route="POST /orders", produces=["orders"])
    def take_order(message: Message, ctx: ProcessorContext) -> None:
        ctx.send("orders", {"order": message.payload["order"]})

    @app.processor("record", consumes="orders")
    def record(message: Message) -> None:
        with OUT.open("a") as fh:
            fh.write(json.dumps(message.payload) + "\\n")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(url: str, body: bytes | None = None, method: str = "POST") -> tuple[int, dict]:
    req = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _declare_huge_body(port: int) -> int:
    """POST announcing a 2 MiB body: the answer comes before the body is sent."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("POST", "/orders")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(2 * 1024 * 1024))
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def _wait_ready(port: int, proc: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"apix serve exited: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("apix serve did not start listening")


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serve_routes_http_and_runs_workers(tmp_path: Path, cli_env, stop) -> None:
    # GIVEN an app with a POST route that queues work for a consumer recording to a file
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(APP))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "apix_core.cli.main", "serve", str(app), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **cli_env},
    )
    try:
        _wait_ready(port, proc)
        base = f"http://127.0.0.1:{port}"

        # WHEN an order is posted, an unknown route asked for, and an oversized body sent
        status, body = _request(f"{base}/orders", json.dumps({"order": 42}).encode())
        missing, _ = _request(f"{base}/nope", b"{}")
        huge = _declare_huge_body(port)
        out = tmp_path / "orders.jsonl"
        end = time.monotonic() + 30
        # The record is complete once its line ends (the file may exist a moment before).
        while time.monotonic() < end and not (out.exists() and out.read_text().endswith("\n")):
            time.sleep(0.1)

        # THEN 202, the worker processed the queued message,
        # 404 for the unknown route, 413 for the body over 1 MiB
        assert status == 202, body
        assert json.loads(out.read_text().splitlines()[0]) == {"order": 42}
        assert missing == 404
        assert huge == 413
    finally:
        # WHEN the server is asked to stop
        proc.send_signal(stop)
        rc = proc.wait(timeout=30)
    stderr = proc.stderr.read().decode()  # type: ignore[union-attr]

    # THEN it stops gracefully (exit 0, no traceback)
    assert rc == 0, stderr
    assert "Traceback" not in stderr
