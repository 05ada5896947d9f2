"""The seed-004 order service, locally, in one command (``python3 -m nox -s demo`` runs it).

    python examples/orders/demo.py [--orders 60] [--no-feed] [--keep]

On the embedded default (SQLite files under ``$APIX_HOME``, default ``./.apix/demo``, wiped
first unless ``--keep``): posts orders through the HTTP processor with ``App.handle_http``
(as API Gateway or an Azure HTTP trigger would), fires the partner feed once, drives every
queue to empty, then prints the orders per final state (read back through ``GET /orders``),
the messages per queue, the dead letters, the throughput, and the pipeline graph (Mermaid,
also written to ``$APIX_HOME/orders-pipeline.mmd``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import random
import shutil
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TENANT = {"X-Tenant-Id": "demo-shop"}


async def submit(app: Any, module: Any, count: int) -> tuple[Counter[int], bool]:
    """``count`` orders, two invalid bodies, one retried request and one key reused for another
    order, through ``POST /orders``; and whether the retry got the first answer again."""
    statuses: Counter[int] = Counter()
    answers = []
    for i in range(count):
        order = module.sample_order(None, random.Random(f"demo/{i}"))
        headers = {**TENANT, "Idempotency-Key": f"demo-{i}"}
        response = await app.handle_http("POST", "/orders", headers=headers, body=json.dumps(order))
        statuses[response.status_code] += 1
        answers.append(response)
    bad = module.sample_order(None, random.Random("demo/bad"))
    for broken in ({**bad, "items": []}, {**bad, "customer": {"email": "nope"}}):
        response = await app.handle_http("POST", "/orders", headers=TENANT, body=json.dumps(broken))
        statuses[response.status_code] += 1
    retry = module.sample_order(None, random.Random("demo/0"))
    key = {**TENANT, "Idempotency-Key": "demo-0"}
    response = await app.handle_http("POST", "/orders", headers=key, body=json.dumps(retry))
    statuses[response.status_code] += 1
    same = bool(answers) and (response.status_code, response.body) == (
        answers[0].status_code,
        answers[0].body,
    )
    # The key of order 0 sent with another order: refused (422), nothing recorded.
    other = module.sample_order(None, random.Random("demo/other"))
    response = await app.handle_http("POST", "/orders", headers=key, body=json.dumps(other))
    statuses[response.status_code] += 1
    return statuses, same


async def order_states(app: Any) -> Counter[str]:
    """Every order's state, paged through ``GET /orders`` with its cursor."""
    states: Counter[str] = Counter()
    cursor = ""
    while True:
        query = {"limit": "100", **({"cursor": cursor} if cursor else {})}
        page = (await app.handle_http("GET", "/orders", headers=TENANT, query=query)).body
        states.update(o["status"] for o in page["orders"])
        if not page["next_cursor"]:
            return states
        cursor = page["next_cursor"]


async def main(orders: int, feed: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from apix_core.runtime import LocalRunner
    from apix_core.transport.base import DeadLetterAdmin

    console = Console()
    # Each dead letter is listed in the summary: no warning line per failure on the way.
    logging.getLogger("apix").setLevel(logging.ERROR)
    spec = importlib.util.spec_from_file_location("orders_app", HERE / "app.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules["orders_app"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.app
    started = time.perf_counter()
    async with app:
        statuses, same = await submit(app, module, orders)
        stats = await LocalRunner(app, fire_schedules=feed).run()
        elapsed = time.perf_counter() - started
        states = await order_states(app)
        sample = await app.handle_http("GET", "/orders", headers=TENANT, query={"limit": "1"})
        first = sample.body["orders"][0]["order_id"]
        detail = (await app.handle_http("GET", f"/orders/{first}", headers=TENANT)).body
        dead = (
            await app.transport.list_dead_letters(limit=100)
            if isinstance(app.transport, DeadLetterAdmin)
            else []
        )

    console.print(
        "[bold]POST /orders[/]: "
        + ", ".join(f"{n} × {code}" for code, n in sorted(statuses.items()))
        + "  (202 accepted, 400 invalid body with field errors, 422 a key reused for another"
        + " order)"
    )
    console.print(
        "[bold]the retried Idempotency-Key[/]: "
        + ("the first answer again, one order" if same else "[red]another answer[/]")
    )
    table = Table(title="orders per final state", title_justify="left")
    table.add_column("state")
    table.add_column("orders", justify="right")
    for state, n in states.most_common():
        table.add_row(state, str(n))
    console.print(table)

    queues = Table(title="messages per queue", title_justify="left")
    for col in ("queue", "processor", "completed", "retried", "dead-lettered"):
        queues.add_column(col, justify="left" if col in ("queue", "processor") else "right")
    for name, spec in app.specs.items():
        queue = app.input_queue(spec)
        if queue is None or queue not in stats.queues:
            continue
        s = stats.queues[queue]
        queues.add_row(queue, name, str(s.completed), str(s.retried), str(s.dead_lettered))
    console.print(queues)

    with sqlite3.connect(module.db_path()) as shop:
        (timeouts,) = shop.execute("SELECT count(*) FROM gateway_calls WHERE calls > 1").fetchone()
    console.print(f"[bold]payment gateway timeouts[/]: {timeouts} (retried in the same invocation)")
    console.print(f"[bold]dead letters[/]: {len(dead)}")
    for d in dead[:10]:
        reason = d.error_message.split(": ", 1)[-1]  # without the exception's class name
        console.print(f"  {d.queue} · {d.processor} · {d.error_code}: {reason[:100]}")
    processed = stats.completed + stats.dead_lettered
    console.print(
        f"[bold]{processed} messages[/] in {elapsed:.1f}s "
        f"([green]{processed / elapsed:.0f} messages/s[/]), "
        f"{sum(states.values())} orders"
    )
    console.print(
        f"[bold]GET /orders/{first}[/]: status {detail['status']}, total "
        f"{detail['totals']['total']} {detail['totals']['currency']}, history "
        + " → ".join(h["state"] for h in detail["history"])
    )

    graph = app.topology.mermaid()
    path = Path(os.environ["APIX_HOME"]) / "orders-pipeline.mmd"
    path.write_text(graph + "\n", encoding="utf-8")
    console.print(f"\n[bold]pipeline[/] (Mermaid, also in {path}):")
    console.print(graph, markup=False, highlight=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=60, help="orders to post (default 60)")
    parser.add_argument("--no-feed", action="store_true", help="skip the partner-feed tick")
    parser.add_argument("--keep", action="store_true", help="keep $APIX_HOME from a last run")
    args = parser.parse_args()
    home = Path(os.environ.setdefault("APIX_HOME", str(Path(".apix") / "demo")))
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)
    asyncio.run(main(args.orders, not args.no_feed))
