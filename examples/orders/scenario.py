"""Seven orders, one per path through the workflow, and the final state each must reach.

The tests post them through every platform's HTTP trigger (locally through ``App.handle_http``,
API Gateway v2 events into the Lambda handler, ``azure.functions.HttpRequest`` objects into the
Functions app) and check the same final state, order by order.
"""

from __future__ import annotations

from typing import Any


def order(
    order_id: str,
    items: list[tuple[str, int, float]],
    *,
    method: str = "credit_card",
    customer: int = 1001,
    shipping: str = "standard",
) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer": {
            "customer_id": f"cust-{customer}",
            "email": f"buyer{customer}@example.com",
            "name": f"Buyer {customer}",
        },
        "items": [{"product_id": p, "quantity": q, "unit_price": u} for p, q, u in items],
        "shipping_address": {
            "street": "123 Main St",
            "city": "Anytown",
            "state": "CA",
            "postal_code": "12345",
            "country": "US",
        },
        "payment": {"payment_method": method},
        "shipping": shipping,
    }


#: (order, final state, the reason its last transition records)
SCENARIO: list[tuple[dict[str, Any], str, str]] = [
    (order("S-OK-1", [("SKU-1001", 2, 24.90)]), "completed", "processed"),
    (
        order("S-EXPRESS", [("SKU-1005", 1, 21.0)], method="paypal", shipping="express"),
        "completed",
        "processed",
    ),
    # the gateway times out on the first call for this order (and S-LIMIT, S-CREDIT): the
    # retry in the same invocation gets the answer
    (order("S-TIMEOUT-9", [("SKU-1002", 3, 4.50)]), "completed", "processed"),
    (order("S-OUT", [("SKU-1007", 300, 54.0)]), "rejected", "out of stock: SKU-1007 (240 left)"),
    # the seed's own sample product id: not in this shop's catalog
    (order("S-UNKNOWN", [("product-1", 2, 19.99)]), "rejected", "unknown product product-1"),
    (
        order("S-LIMIT", [("SKU-1003", 25, 69.0)]),
        "payment_declined",
        "card limit exceeded (2052.75 > 1500.00)",
    ),
    (
        order("S-CREDIT", [("SKU-1006", 1, 9.90)], method="invoice", customer=1300),
        "payment_declined",
        "credit check failed",
    ),
]

#: order id -> final state
EXPECTED: dict[str, str] = {o["order_id"]: state for o, state, _ in SCENARIO}
