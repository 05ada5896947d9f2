"""Partner sync: the seed-000 pipeline on the extraction engine.

    apix run examples/partner_sync/app.py       # one sync: schedule tick, drained, summary

Timer → ``sync_partner`` (the pipeline of ``pipeline.yaml``: the partner's order list,
paginated, OAuth2, rate limited, only orders updated since the watermark) → one message per
order on ``partner-orders`` → ``transform`` (the partner's order validated, made canonical)
→ one JSONL file per new or changed order under
``$APIX_HOME/out/partner_sync/orders/date=YYYY-MM-DD/`` (the order's date).

Incremental twice over: the watermark (``updatedAt``) means the next run asks only for orders
updated since; the entity's content hash means an order whose ``updatedAt`` moved but whose
canonical content did not is recorded as unchanged and not written again.

Settings (read by ``pipeline.yaml`` as ``${NAME}``): ``PARTNER_API_URL`` (else a local partner
API starts in this process, its data at ``PARTNER_DATA_VERSION``, default 1: run again with 2
to see changes), ``PARTNER_CLIENT_ID``, ``PARTNER_CLIENT_SECRET``. OAuth2 tokens are stored
encrypted with ``APIX_TOKEN_KEY``; when it is not set, the demo keeps a key in
``$APIX_HOME/partner_sync.key``.
"""

from __future__ import annotations

import os
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from apix_core import App, FileOutputHandler, Message, ProcessingResult, ProcessorContext
from apix_core.errors import EntityNotFoundError
from apix_core.extract.pipeline import PipelineManager
from apix_core.extract.processors import register_extract_processors
from apix_core.hashing import content_hash, entity_id_for

HERE = Path(__file__).resolve().parent
HOME = Path(os.environ.get("APIX_HOME") or ".apix")
#: The JSONL output: one folder per order date, one file per new or changed order.
OUT_DIR = HOME / "out" / "partner_sync" / "orders"
TENANT = "demo-shop"


# -- the partner API: configured, or started here -------------------------------------------
def _start_partner_api() -> None:
    """Without PARTNER_API_URL, the example's partner API serves this process (a daemon
    thread), and pipeline.yaml's ``${PARTNER_API_URL}`` points at it."""
    if os.environ.get("PARTNER_API_URL"):
        return
    if str(HERE) not in sys.path:  # `apix run` adds it; `python app.py` or an import may not
        sys.path.insert(0, str(HERE))
    from partner_api import PartnerApi

    version = int(os.environ.get("PARTNER_DATA_VERSION") or 1)
    os.environ["PARTNER_API_URL"] = PartnerApi(version=version).start().url


def _token_key() -> None:
    """Tokens are stored encrypted: a demo without APIX_TOKEN_KEY keeps its key in APIX_HOME."""
    if os.environ.get("APIX_TOKEN_KEY"):
        return
    from cryptography.fernet import Fernet

    path = HOME / "partner_sync.key"
    if not path.exists():
        HOME.mkdir(parents=True, exist_ok=True)
        # Created owner-only: the key never sits on disk readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as key_file:
            key_file.write(Fernet.generate_key())
    os.environ["APIX_TOKEN_KEY"] = path.read_text().strip()


# -- the models: the partner's order, and ours ------------------------------------------------
class PartnerBuyer(BaseModel):
    id: str = Field(min_length=1)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    name: str


class PartnerLine(BaseModel):
    sku: str = Field(min_length=1)
    qty: int = Field(gt=0)
    unitPrice: Decimal = Field(ge=0)  # the partner's field names


class PartnerShipTo(BaseModel):
    country: str = Field(pattern=r"^[A-Z]{2}$")
    city: str
    postalCode: str


class PartnerOrder(BaseModel):
    """An order as the partner API sends it; anything else is dead-lettered (INVALID_PAYLOAD)."""

    model_config = ConfigDict(extra="ignore")

    orderId: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")
    orderDate: datetime
    updatedAt: datetime
    status: Literal["CONFIRMED", "SHIPPED", "DELIVERED", "CANCELLED"]
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    buyer: PartnerBuyer
    lines: list[PartnerLine] = Field(min_length=1)
    shipTo: PartnerShipTo


class OrderItem(BaseModel):
    product_id: str
    quantity: int
    unit_price: Decimal


class CanonicalOrder(BaseModel):
    """Our order: what the JSONL holds, and whose content hash decides "changed"."""

    order_id: str
    order_date: date
    ordered_at: datetime
    status: Literal["confirmed", "shipped", "delivered", "cancelled"]
    customer_id: str
    customer_email: str
    items: list[OrderItem]
    total: Decimal
    currency: str
    ship_to_country: str
    source: str = "partner"


def canonical(order: PartnerOrder) -> CanonicalOrder:
    """The canonical transform. ``updatedAt`` is left out: a touch alone is no change."""
    items = [
        OrderItem(product_id=x.sku, quantity=x.qty, unit_price=x.unitPrice) for x in order.lines
    ]
    return CanonicalOrder(
        order_id=order.orderId,
        order_date=order.orderDate.date(),
        ordered_at=order.orderDate,
        status=order.status.lower(),
        customer_id=order.buyer.id,
        customer_email=order.buyer.email,
        items=items,
        total=sum((x.unit_price * x.quantity for x in items), Decimal("0")),
        currency=order.currency,
        ship_to_country=order.shipTo.country,
    )


# -- the app ----------------------------------------------------------------------------------
app = App("partner_sync", tenant_id=TENANT)
_token_key()
_start_partner_api()
manager = PipelineManager(app=app)
manager.register_pipeline(HERE / "pipeline.yaml")

# The timer: each tick runs the pipeline (continuing in a next invocation if the deadline
# comes first); its queue output sends one message per order, through the outbox.
register_extract_processors(
    app,
    manager,
    "partner_orders",
    name="sync_partner",
    schedule="0 * * * *",
    produces=["partner-orders"],
)


@app.processor("transform", consumes="partner-orders", payload=PartnerOrder)
async def transform(message: Message, ctx: ProcessorContext) -> ProcessingResult | None:
    """One order: made canonical, its metadata recorded; written when its content changed."""
    order = canonical(ctx.payload)  # type: ignore[arg-type]
    data = order.model_dump(mode="json")
    entity_id = entity_id_for(ctx.tenant_id, "order", "partner", order.order_id)
    try:
        previous: str | None = (await ctx.aget_entity(entity_id)).content_hash
    except EntityNotFoundError:
        previous = None
    ctx.persist_entity(order.order_id, "order", "partner", data, state=order.status)
    if previous == content_hash(data):
        ctx.logger.info("order %s unchanged (same content hash): not written", order.order_id)
        return None
    return ProcessingResult.create_success(
        output_handlers=[
            FileOutputHandler(
                destination=str(OUT_DIR / f"date={order.order_date.isoformat()}"),
                payload=data,
                config={"file_pattern": f"{order.order_id}.{{message_id}}.jsonl"},
            )
        ]
    )
