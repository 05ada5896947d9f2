"""Order processing on apix-core: the ServerlessOrch example (seed 004) without AWS.

    apix run examples/orders/app.py        # one import tick, drained, with a summary
    apix graph examples/orders/app.py      # the topology as Mermaid

Pipeline (each arrow is a queue; every stage is exactly-once per order message)::

    import_orders (every 5 min) ─┐
    POST /orders ────────────────┴─> raw-orders -> validate -> valid-orders
      -> check_inventory -> in-stock -> price -> priced -> route_shipping
           ├─> express-orders  -> fulfil_express  ─┐
           └─> standard-orders -> fulfil_standard ─┴─> fulfilled -> notify -> JSONL files

``import_orders`` stands in for a partner's order feed: a deterministic batch of 200 orders per
schedule tick (seeded by the tick time; no network), five of them deliberately invalid so the
dead-letter path shows up in every run.
"""

from __future__ import annotations

import os
import random
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from apix_core import (
    App,
    EntityReference,
    FileOutputHandler,
    Message,
    PermanentError,
    ProcessingResult,
    ProcessorContext,
    ProcessorInterface,
)

app = App("orders", tenant_id="demo-shop")

#: Shipment notices land here, one JSONL file per order (under APIX_HOME, default ./.apix).
OUT_DIR = Path(os.environ.get("APIX_HOME") or ".apix") / "out" / "orders"

BATCH_SIZE = 200
#: Every 40th order of a batch is broken on purpose (5 per batch of 200).
BAD_EVERY = 40
SOURCE = "partner-feed"

CATALOG: dict[str, tuple[str, float, int]] = {
    # product id: (name, unit price, units in stock)
    "SKU-1001": ("Espresso beans 1kg", 24.90, 500),
    "SKU-1002": ("Filter papers x100", 4.50, 2000),
    "SKU-1003": ("Hand grinder", 69.00, 40),
    "SKU-1004": ("Milk jug 600ml", 17.50, 150),
    "SKU-1005": ("Travel mug", 21.00, 300),
    "SKU-1006": ("Descaler", 9.90, 800),
    "SKU-1007": ("Pour-over kettle", 54.00, 25),
    "SKU-1008": ("Scale 0.1g", 32.00, 60),
}
#: Orders above this quantity of one product are back-ordered (not rejected).
MAX_UNITS_PER_LINE = 10


# -- the canonical order ----------------------------------------------------------------------
class Customer(BaseModel):
    customer_id: str = Field(min_length=1)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
    name: str = Field(min_length=1)


class OrderItem(BaseModel):
    product_id: str = Field(pattern=r"^SKU-\d{4}$")
    quantity: int = Field(gt=0)
    unit_price: float = Field(gt=0)


class Address(BaseModel):
    street: str
    city: str
    postal_code: str
    country: str = Field(pattern=r"^[A-Z]{2}$")


class Order(BaseModel):
    order_id: str = Field(min_length=1)
    customer: Customer
    items: list[OrderItem] = Field(min_length=1)
    shipping_address: Address
    shipping: Literal["express", "standard"] = "standard"
    payment_method: Literal["credit_card", "invoice", "paypal"] = "credit_card"


def order_ref(order_id: str, source: str = SOURCE) -> EntityReference:
    return EntityReference(external_id=order_id, canonical_type="order", source=source)


def forward(ctx: ProcessorContext, queue: str, payload: dict[str, Any]) -> None:
    """Send to the next stage, keeping the order's entity reference (for state tracking)."""
    ctx.send(queue, payload, entity=ctx.message.entity)


# -- sources ----------------------------------------------------------------------------------
def sample_orders(tick: str, count: int = BATCH_SIZE) -> list[dict[str, Any]]:
    """The partner feed's orders for one tick: the same tick always gives the same batch."""
    rng = random.Random(tick)
    stamp = datetime.fromisoformat(tick).strftime("%Y%m%d-%H%M%S")
    cities = [
        ("Berlin", "DE", "10115"),
        ("Lyon", "FR", "69001"),
        ("Utrecht", "NL", "3511"),
        ("Porto", "PT", "4000"),
        ("Graz", "AT", "8010"),
    ]
    skus = sorted(CATALOG)
    orders: list[dict[str, Any]] = []
    for i in range(count):
        city, country, postal = rng.choice(cities)
        n = rng.randint(1000, 9999)
        items = [
            {"product_id": sku, "quantity": rng.randint(1, 12), "unit_price": CATALOG[sku][1]}
            for sku in rng.sample(skus, rng.randint(1, 3))
        ]
        order: dict[str, Any] = {
            "order_id": f"PO-{stamp}-{i:03d}",
            "customer": {
                "customer_id": f"cust-{n}",
                "email": f"buyer{n}@example.com",
                "name": f"Buyer {n}",
            },
            "items": items,
            "shipping_address": {
                "street": f"{rng.randint(1, 200)} Main St",
                "city": city,
                "postal_code": postal,
                "country": country,
            },
            "shipping": "express" if rng.random() < 0.3 else "standard",
            "payment_method": rng.choice(["credit_card", "invoice", "paypal"]),
        }
        if i % BAD_EVERY == BAD_EVERY - 1:
            _break(order, i // BAD_EVERY)
        orders.append(order)
    return orders


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


@app.processor(
    "import_orders",
    schedule="*/5 * * * *",
    produces=["raw-orders"],
    is_source_processor=True,
)
def import_orders(message: Message, ctx: ProcessorContext) -> ProcessingResult:
    """Pull the partner's new orders; each becomes an ``order`` entity and a message."""
    tick = message.payload["scheduled_time"]
    orders = sample_orders(tick)
    for order in orders:
        # A source processor: apix records each referenced entity's metadata (hash, version)
        # in the same transaction as the outgoing messages.
        ctx.send("raw-orders", order, entity=order_ref(order["order_id"]))
    ctx.logger.info("imported orders", extra={"count": len(orders), "tick": tick})
    return ProcessingResult.create_success(processing_metadata={"imported": len(orders)})


@app.processor(
    "create_order",
    route="POST /orders",
    produces=["raw-orders"],
    payload=Order,
    is_source_processor=True,
)
def create_order(message: Message, ctx: ProcessorContext) -> ProcessingResult:
    """The API entry point: ``POST /orders`` with an ``X-Tenant-Id`` header."""
    order: Order = ctx.payload  # type: ignore[assignment]
    ctx.send("raw-orders", order.model_dump(mode="json"), entity=order_ref(order.order_id, "api"))
    return ProcessingResult.create_success(processing_metadata={"order_id": order.order_id})


# -- stages -----------------------------------------------------------------------------------
@app.processor(
    "validate",
    consumes="raw-orders",
    produces=["valid-orders"],
    payload=Order,
    success_state="validated",
)
def validate(message: Message, ctx: ProcessorContext) -> None:
    """``payload=Order`` does the checking: an invalid order is dead-lettered (INVALID_PAYLOAD)."""
    order: Order = ctx.payload  # type: ignore[assignment]
    forward(ctx, "valid-orders", order.model_dump(mode="json"))


@app.processor(
    "check_inventory",
    consumes="valid-orders",
    produces=["in-stock"],
    success_state="inventory_checked",
)
def check_inventory(message: Message, ctx: ProcessorContext) -> None:
    order = message.payload
    lines = []
    for item in order["items"]:
        if item["product_id"] not in CATALOG:
            raise PermanentError(f"unknown product {item['product_id']}")
        _, _, stock = CATALOG[item["product_id"]]
        available = min(stock, MAX_UNITS_PER_LINE)
        lines.append({**item, "backordered": max(0, item["quantity"] - available)})
    forward(ctx, "in-stock", {**order, "items": lines})


@app.processor("price", consumes="in-stock", produces=["priced"], success_state="priced")
def price(message: Message, ctx: ProcessorContext) -> None:
    order = message.payload
    subtotal = round(sum(i["quantity"] * i["unit_price"] for i in order["items"]), 2)
    shipping = 14.90 if order["shipping"] == "express" else (0.0 if subtotal >= 100 else 4.90)
    tax = round(subtotal * 0.19, 2)
    pricing = {
        "subtotal": subtotal,
        "shipping": shipping,
        "tax": tax,
        "total": round(subtotal + shipping + tax, 2),
        "currency": "EUR",
    }
    forward(ctx, "priced", {**order, "pricing": pricing})


@app.processor("route_shipping", consumes="priced", produces=["express-orders", "standard-orders"])
async def route_shipping(message: Message, ctx: ProcessorContext) -> None:
    """A gateway: one input, the output queue chosen per message."""
    queue = "express-orders" if message.payload["shipping"] == "express" else "standard-orders"
    forward(ctx, queue, message.payload)


class Fulfil(ProcessorInterface):
    """Class form: one implementation, registered twice with different carriers."""

    def __init__(self, carrier: str, days: int) -> None:
        self.carrier = carrier
        self.days = days

    def validate_message(self, message: Message) -> bool:
        return "pricing" in message.payload

    async def process(self, message: Message, context: ProcessorContext) -> ProcessingResult:
        order = message.payload
        shipment = {
            "order_id": order["order_id"],
            "carrier": self.carrier,
            "delivery_days": self.days,
            "parcels": max(1, sum(i["quantity"] for i in order["items"]) // 6),
            "to": order["shipping_address"],
        }
        forward(context, "fulfilled", {**order, "shipment": shipment})
        return ProcessingResult.create_success()


app.register(
    Fulfil("ExpressAir", 1),
    "fulfil_express",
    consumes="express-orders",
    produces=["fulfilled"],
    success_state="fulfilled",
)
app.register(
    Fulfil("GroundPost", 4),
    "fulfil_standard",
    consumes="standard-orders",
    produces=["fulfilled"],
    success_state="fulfilled",
)


@app.processor("notify", consumes="fulfilled", success_state="completed")
def notify(message: Message, ctx: ProcessorContext) -> ProcessingResult:
    """Terminal stage: a shipment notice per order as a JSONL file (written after commit)."""
    order = message.payload
    notice = {
        "order_id": order["order_id"],
        "customer_id": order["customer"]["customer_id"],
        "carrier": order["shipment"]["carrier"],
        "delivery_days": order["shipment"]["delivery_days"],
        "total": order["pricing"]["total"],
        "backordered_units": sum(i["backordered"] for i in order["items"]),
    }
    return ProcessingResult.create_success(
        output_handlers=[
            FileOutputHandler(
                destination=str(OUT_DIR),
                payload=notice,
                config={"file_pattern": "{date}/{message_id}.jsonl"},
            )
        ]
    )


if __name__ == "__main__":
    import sys

    from apix_core.cli.main import main

    sys.argv = ["apix", "run", __file__, *sys.argv[1:]]
    main()
