"""The order service of seed 004 ("ServerlessOrch") on apix-core: one module, every platform.

    python examples/orders/demo.py         # submit orders over HTTP, drive them, summary + graph
    apix run examples/orders/app.py        # one partner-feed tick, drained, with a summary
    apix serve examples/orders/app.py      # the HTTP API on 127.0.0.1:8000, workers beside it
    apix graph examples/orders/app.py      # the topology as Mermaid

Pipeline (each arrow is a queue; every stage is exactly-once per order message)::

    POST /orders ─────────────┐
    import_orders (*/5 min) ──┴─> raw-orders -> validate -> valid-orders -> reserve_stock
      -> reserved -> charge_payment -> paid -> fulfil -> fulfilled -> notify   (completed)
    GET /orders, GET /orders/{orderId}: read the orders' metadata and state history

The framework keeps only metadata (states, versions, content hashes, a few attributes); the
stock, reservations, payments and shipments live in the example's own SQLite database
(``ORDERS_DB``, default ``$APIX_HOME/orders.db``). Out of stock and payment declines are
business outcomes: terminal states with a reason. Broken data and technical failures go to
the dead-letter queue.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from apix_core import (
    App,
    EntityReference,
    FileOutputHandler,
    HttpResponse,
    Message,
    ProcessingResult,
    ProcessorContext,
    TransientError,
)
from apix_core.processor import BackoffPolicy

app = App("orders", tenant_id="demo-shop")


def home() -> Path:
    """Where apix keeps its files (``APIX_HOME``, default ./.apix); read at call time."""
    return Path(os.environ.get("APIX_HOME") or ".apix")


#: Every order entity has this (canonical type, source); the order id is its external id.
ORDER, SOURCE = "order", "order-service"

FEED_SIZE = 200
#: Every 40th order of a feed batch is broken on purpose (5 per batch of 200).
BAD_EVERY = 40

CATALOG: dict[str, tuple[str, float, int]] = {
    # product id: (name, unit price, units in stock at start)
    "SKU-1001": ("Espresso beans 1kg", 24.90, 900),
    "SKU-1002": ("Filter papers x100", 4.50, 2000),
    "SKU-1003": ("Hand grinder", 69.00, 260),
    "SKU-1004": ("Milk jug 600ml", 17.50, 800),
    "SKU-1005": ("Travel mug", 21.00, 900),
    "SKU-1006": ("Descaler", 9.90, 900),
    "SKU-1007": ("Pour-over kettle", 54.00, 240),
    "SKU-1008": ("Scale 0.1g", 32.00, 700),
}
#: The simulated gateway declines card payments above this total ...
CARD_LIMIT = 1500.0
#: ... and invoices for customers whose number is a multiple of 13 (failed credit check).
CREDIT_CHECK_EVERY = 13
#: One order in TIMEOUT_EVERY (by its id's hash) sees a gateway timeout on the first call.
TIMEOUT_EVERY = 8


# -- the order of seed 004 ---------------------------------------------------------------------
class Customer(BaseModel):
    customer_id: str = Field(min_length=1, max_length=64)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
    name: str = Field(min_length=1, max_length=200)


class OrderItem(BaseModel):
    product_id: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0, le=1000)
    unit_price: float = Field(gt=0)


class Address(BaseModel):
    street: str = Field(min_length=1)
    city: str = Field(min_length=1)
    state: str | None = None
    postal_code: str = Field(min_length=1)
    country: str = Field(pattern=r"^[A-Z]{2}$")


class Payment(BaseModel):
    payment_method: str = Field(pattern=r"^(credit_card|invoice|paypal)$")


class NewOrder(BaseModel):
    """The body of ``POST /orders``, as seed 004 shows it (``order_id`` optional)."""

    order_id: str | None = Field(default=None, min_length=1, max_length=64)
    customer: Customer
    items: list[OrderItem] = Field(min_length=1, max_length=100)
    shipping_address: Address
    payment: Payment
    shipping: str = Field(default="standard", pattern=r"^(express|standard)$")


class Order(NewOrder):
    order_id: str = Field(min_length=1, max_length=64)


def order_ref(order_id: str) -> EntityReference:
    return EntityReference(external_id=order_id, canonical_type=ORDER, source=SOURCE)


def totals(order: dict[str, Any]) -> dict[str, Any]:
    subtotal = round(sum(i["quantity"] * i["unit_price"] for i in order["items"]), 2)
    shipping = 14.90 if order.get("shipping") == "express" else (0.0 if subtotal >= 100 else 4.90)
    tax = round(subtotal * 0.19, 2)
    total = round(subtotal + shipping + tax, 2)
    return {"subtotal": subtotal, "shipping": shipping, "tax": tax, "total": total}


def receive(ctx: ProcessorContext, order: dict[str, Any], channel: str) -> None:
    """Record a new order (state ``received``, its totals as attributes) and queue it."""
    ctx.persist_entity(
        order["order_id"],
        ORDER,
        SOURCE,
        order,
        state="received",
        channel=channel,
        currency="EUR",
        **totals(order),
    )
    ctx.send("raw-orders", order, entity=order_ref(order["order_id"]))


def forward(ctx: ProcessorContext, queue: str, payload: dict[str, Any]) -> None:
    """Send to the next stage with the order's entity reference (its states follow it)."""
    ctx.send(queue, payload, entity=ctx.message.entity)


def end(ctx: ProcessorContext, state: str, reason: str) -> None:
    """A terminal business outcome: the order stops here, with a reason in its history."""
    entity = ctx.message.entity
    if entity is not None and entity.id:
        ctx.transition(entity.id, state, reason)


# -- the HTTP API -------------------------------------------------------------------------------
@app.processor("create_order", route="POST /orders", produces=["raw-orders"], payload=NewOrder)
def create_order(message: Message, ctx: ProcessorContext) -> ProcessingResult:
    """202 with the order id. A body that fails ``NewOrder`` gets 400 with each field's error
    (before anything is recorded); the same ``Idempotency-Key`` is the same order, and its
    retry gets this answer again (apix keeps it with the idempotency record)."""
    order = ctx.payload.model_dump(mode="json")  # type: ignore[union-attr]
    order["order_id"] = order["order_id"] or f"ORD-{message.message_id}"
    receive(ctx, order, "api")
    return ProcessingResult.respond({"order_id": order["order_id"], "status": "received"}, 202)


def _summary(entity: Any) -> dict[str, Any]:
    a = entity.attributes
    return {
        "order_id": entity.external_id,
        "status": entity.state,
        "total": a.get("total"),
        "currency": a.get("currency"),
        "channel": a.get("channel"),
        "created_at": entity.created_at.isoformat(),
        "updated_at": entity.updated_at.isoformat(),
    }


@app.processor("list_orders", route="GET /orders")
async def list_orders(message: Message, ctx: ProcessorContext) -> HttpResponse:
    """``?status=completed&limit=20&cursor=...``: newest first; ``next_cursor`` pages on."""
    query = message.metadata["http"]["query"]
    limit = query.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= 100:
        return HttpResponse(400, {"error": "INVALID_LIMIT", "message": "limit: 1 to 100"})
    page = await ctx.entities.page(
        canonical_type=ORDER,
        state=query.get("status") or None,
        limit=int(limit),
        cursor=query.get("cursor") or None,
    )
    return HttpResponse(
        200, {"orders": [_summary(e) for e in page.items], "next_cursor": page.next_cursor}
    )


@app.processor("get_order", route="GET /orders/{orderId}")
async def get_order(message: Message, ctx: ProcessorContext) -> HttpResponse:
    """Status, totals and history (the entity's state transitions); 404 for an unknown id,
    and for another tenant's order (reads are scoped to the caller's tenant)."""
    order_id = message.metadata["http"]["path_params"]["orderId"]
    entity = await ctx.entities.find(ORDER, SOURCE, order_id)
    if entity is None:
        return HttpResponse(404, {"error": "ORDER_NOT_FOUND", "message": f"no order {order_id}"})
    history = [
        {
            "state": t.to_state,
            "from": t.from_state,
            "reason": t.reason,
            "by": t.processor,
            "at": t.created_at.isoformat(),
        }
        for t in await ctx.entities.history(entity.id)
    ]
    a = entity.attributes
    money = {k: a.get(k) for k in ("subtotal", "shipping", "tax", "total", "currency")}
    return HttpResponse(200, {**_summary(entity), "totals": money, "history": history})


# -- the partner feed ---------------------------------------------------------------------------
def sample_orders(tick: str, count: int = FEED_SIZE) -> list[dict[str, Any]]:
    """The partner feed's orders for one tick: the same tick always gives the same batch."""
    stamp = datetime.fromisoformat(tick).strftime("%Y%m%d-%H%M%S")
    orders = [
        sample_order(f"PO-{stamp}-{i:03d}", random.Random(f"{tick}/{i}")) for i in range(count)
    ]
    for i in range(BAD_EVERY - 1, count, BAD_EVERY):
        _break(orders[i], i // BAD_EVERY)
    return orders


def sample_order(order_id: str | None, rng: random.Random) -> dict[str, Any]:
    city, country, postal = rng.choice(
        [("Berlin", "DE", "10115"), ("Lyon", "FR", "69001"), ("Graz", "AT", "8010")]
    )
    n = rng.randint(1000, 9999)
    order: dict[str, Any] = {
        "customer": {
            "customer_id": f"cust-{n}",
            "email": f"buyer{n}@example.com",
            "name": f"Buyer {n}",
        },
        "items": [
            {"product_id": sku, "quantity": rng.randint(1, 8), "unit_price": CATALOG[sku][1]}
            for sku in rng.sample(sorted(CATALOG), rng.randint(1, 3))
        ],
        "shipping_address": {
            "street": f"{n % 200 + 1} Main St",
            "city": city,
            "postal_code": postal,
            "country": country,
        },
        "payment": {"payment_method": rng.choice(["credit_card", "invoice", "paypal"])},
        "shipping": "express" if rng.random() < 0.3 else "standard",
    }
    return order if order_id is None else {"order_id": order_id, **order}


def _break(order: dict[str, Any], kind: int) -> None:
    """The kinds of bad data partner feeds really send."""
    match kind % 5:
        case 0:
            order["items"][0]["quantity"] = 0
        case 1:
            order["customer"]["email"] = "not-an-email"
        case 2:
            order["items"] = []
        case 3:
            order["shipping_address"]["country"] = "Germany"
        case _:
            del order["customer"]


@app.processor("import_orders", schedule="*/5 * * * *", produces=["raw-orders"])
def import_orders(message: Message, ctx: ProcessorContext) -> ProcessingResult:
    """Pull the partner's new orders; each becomes an ``order`` entity and a message."""
    orders = sample_orders(message.payload["scheduled_time"])
    for order in orders:
        receive(ctx, order, "partner-feed")
    return ProcessingResult.create_success(processing_metadata={"imported": len(orders)})


# -- the example's own database: stock, reservations, payments, shipments ------------------------
SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (product_id TEXT PRIMARY KEY, on_hand INT, reserved INT);
CREATE TABLE IF NOT EXISTS reservations (order_id TEXT PRIMARY KEY, ok INT, reason TEXT);
CREATE TABLE IF NOT EXISTS reserved_lines (order_id TEXT, product_id TEXT, quantity INT,
                                           PRIMARY KEY (order_id, product_id));
CREATE TABLE IF NOT EXISTS gateway_calls (order_id TEXT PRIMARY KEY, calls INT);
CREATE TABLE IF NOT EXISTS payments (order_id TEXT PRIMARY KEY, approved INT, reason TEXT);
CREATE TABLE IF NOT EXISTS shipments (order_id TEXT PRIMARY KEY, carrier TEXT, parcels INT);
"""


def db_path() -> Path:
    return Path(os.environ.get("ORDERS_DB") or home() / "orders.db")


@contextmanager
def shop_db() -> Iterator[sqlite3.Connection]:
    """One write transaction on the shop's database (each step is idempotent per order id, so
    a redelivered message finds its earlier decision instead of deciding twice)."""
    path = db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.executescript(SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT OR IGNORE INTO stock VALUES (?, ?, 0)",
            [(sku, units) for sku, (_, _, units) in CATALOG.items()],
        )
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()


def reserve(order: dict[str, Any]) -> str | None:
    """Reserve every line, or none; None when reserved, else why not."""
    with shop_db() as db:
        done = db.execute(
            "SELECT ok, reason FROM reservations WHERE order_id = ?", (order["order_id"],)
        ).fetchone()
        if done is not None:
            return None if done[0] else str(done[1])
        reason = None
        for item in order["items"]:
            row = db.execute(
                "SELECT on_hand - reserved FROM stock WHERE product_id = ?", (item["product_id"],)
            ).fetchone()
            if row is None:
                reason = f"unknown product {item['product_id']}"
            elif row[0] < item["quantity"]:
                reason = f"out of stock: {item['product_id']} ({row[0]} left)"
            if reason:
                break
        db.execute(
            "INSERT INTO reservations VALUES (?, ?, ?)", (order["order_id"], reason is None, reason)
        )
        if reason is None:
            for item in order["items"]:
                db.execute(
                    "INSERT INTO reserved_lines VALUES (?, ?, ?)",
                    (order["order_id"], item["product_id"], item["quantity"]),
                )
                db.execute(
                    "UPDATE stock SET reserved = reserved + ? WHERE product_id = ?",
                    (item["quantity"], item["product_id"]),
                )
        return reason


def release(db: sqlite3.Connection, order_id: str, *, shipped: bool) -> None:
    """Give the reservation back (declined), or take it out of stock (shipped)."""
    lines = db.execute(
        "DELETE FROM reserved_lines WHERE order_id = ? RETURNING product_id, quantity", (order_id,)
    ).fetchall()
    for product_id, quantity in lines:
        db.execute(
            "UPDATE stock SET reserved = reserved - ?, on_hand = on_hand - ? WHERE product_id = ?",
            (quantity, quantity if shipped else 0, product_id),
        )


def gateway_charge(order: dict[str, Any], amount: float) -> str | None:
    """The simulated payment gateway: None when approved, else the decline reason.

    Deterministic: card payments over ``CARD_LIMIT`` and invoices of every 13th customer are
    declined; one order in ``TIMEOUT_EVERY`` times out on its first call (TransientError, so
    apix retries it in the same invocation). A charge is idempotent per order id."""
    order_id = order["order_id"]
    with shop_db() as db:
        done = db.execute(
            "SELECT approved, reason FROM payments WHERE order_id = ?", (order_id,)
        ).fetchone()
        if done is not None:
            return None if done[0] else str(done[1])
        calls = db.execute(
            "INSERT INTO gateway_calls VALUES (?, 1) ON CONFLICT (order_id) DO UPDATE "
            "SET calls = calls + 1 RETURNING calls",
            (order_id,),
        ).fetchone()[0]
    if calls == 1 and int(hashlib.sha256(order_id.encode()).hexdigest(), 16) % TIMEOUT_EVERY == 0:
        raise TransientError(f"payment gateway timed out for {order_id}")
    method = order["payment"]["payment_method"]
    number = int("".join(c for c in order["customer"]["customer_id"] if c.isdigit()) or 0)
    reason = None
    if method == "credit_card" and amount > CARD_LIMIT:
        reason = f"card limit exceeded ({amount:.2f} > {CARD_LIMIT:.2f})"
    elif method == "invoice" and number % CREDIT_CHECK_EVERY == 0:
        reason = "credit check failed"
    with shop_db() as db:
        db.execute(
            "INSERT OR IGNORE INTO payments VALUES (?, ?, ?)", (order_id, reason is None, reason)
        )
        if reason is not None:
            release(db, order_id, shipped=False)
    return reason


# -- the workflow -------------------------------------------------------------------------------
@app.processor(
    "validate",
    consumes="raw-orders",
    produces=["valid-orders"],
    payload=Order,
    success_state="validated",
)
def validate(message: Message, ctx: ProcessorContext) -> None:
    """``payload=Order`` checks it: broken partner data is dead-lettered (INVALID_PAYLOAD)."""
    forward(ctx, "valid-orders", message.payload)


@app.processor("reserve_stock", consumes="valid-orders", produces=["reserved"])
def reserve_stock(message: Message, ctx: ProcessorContext) -> None:
    """Inventory service: reserve every line, or end the order as ``rejected``."""
    reason = reserve(message.payload)
    if reason is not None:
        return end(ctx, "rejected", reason)
    forward(ctx, "reserved", message.payload)
    end(ctx, "reserved", "stock reserved")


@app.processor(
    "charge_payment",
    consumes="reserved",
    produces=["paid"],
    max_attempts=3,
    backoff=BackoffPolicy(initial_seconds=0.01, max_seconds=0.05, redelivery_seconds=0.2),
)
def charge_payment(message: Message, ctx: ProcessorContext) -> None:
    """Payment service: approved, or ``payment_declined`` (the reservation is given back)."""
    reason = gateway_charge(message.payload, totals(message.payload)["total"])
    if reason is not None:
        return end(ctx, "payment_declined", reason)
    forward(ctx, "paid", message.payload)
    end(ctx, "paid", "payment approved")


@app.processor("fulfil", consumes="paid", produces=["fulfilled"], success_state="fulfilled")
def fulfil(message: Message, ctx: ProcessorContext) -> None:
    """Fulfilment: take the reserved units out of stock and prepare the shipment."""
    order = message.payload
    carrier = "ExpressAir" if order["shipping"] == "express" else "GroundPost"
    parcels = max(1, sum(i["quantity"] for i in order["items"]) // 6)
    with shop_db() as db:
        if db.execute(
            "INSERT OR IGNORE INTO shipments VALUES (?, ?, ?)",
            (order["order_id"], carrier, parcels),
        ).rowcount:
            release(db, order["order_id"], shipped=True)
    forward(ctx, "fulfilled", {**order, "shipment": {"carrier": carrier, "parcels": parcels}})


@app.processor("notify", consumes="fulfilled", success_state="completed")
def notify(message: Message, ctx: ProcessorContext) -> ProcessingResult:
    """Notification service: the customer's shipment notice (a JSONL file, written after
    commit); the order is then ``completed``."""
    order = message.payload
    notice = {
        "order_id": order["order_id"],
        "to": order["customer"]["email"],
        "carrier": order["shipment"]["carrier"],
        "total": totals(order)["total"],
    }
    file = FileOutputHandler(
        destination=str(home() / "out" / "orders"),
        payload=notice,
        config={"file_pattern": "{date}/{message_id}.jsonl"},
    )
    return ProcessingResult.create_success(output_handlers=[file])


if __name__ == "__main__":
    import sys

    from apix_core.cli.main import main

    sys.argv = ["apix", "run", __file__, *sys.argv[1:]]
    main()
