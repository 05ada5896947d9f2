"""A body without ``message_id`` still gets exactly-once: its id is derived, not random."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apix_core import App, Message, OutcomeKind, ProcessorContext
from apix_core.transport.base import ReceivedMessage

ENVELOPE_NO_ID = json.dumps({"apix": 1, "tenant_id": "acme", "payload": {"order": 1}})
FOREIGN = json.dumps({"order": 2})


@pytest.mark.parametrize(
    ("body", "attributes", "transport_id"),
    [
        (ENVELOPE_NO_ID, {}, "sqs-1f2e"),  # an envelope, with a transport message id
        (ENVELOPE_NO_ID, {}, ""),  # an envelope, no transport id: the body's hash
        (FOREIGN, {"tenant_id": "acme"}, "sqs-3a4b"),
        (FOREIGN, {"tenant_id": "acme"}, ""),
    ],
    ids=["envelope-transport-id", "envelope-body-hash", "foreign-transport-id", "foreign-hash"],
)
async def test_the_same_delivery_twice_runs_once(
    make_app: Any, body: str, attributes: dict[str, str], transport_id: str
) -> None:
    # GIVEN a processor that counts its runs
    runs: list[dict[str, Any]] = []
    app: App = make_app("derived-ids")

    @app.processor("count", consumes="in")
    async def count(message: Message, ctx: ProcessorContext) -> None:
        runs.append(message.payload)

    async with app:
        handler = app.handler("count")

        # WHEN the same delivery (no message_id in the body) is processed twice
        outcomes = [
            await handler.handle(
                ReceivedMessage("in", transport_id, body, receive_count=n, attributes=attributes)
            )
            for n in (1, 2)
        ]

    # THEN the first completes and the redelivery is a duplicate
    assert [o.kind for o in outcomes] == [OutcomeKind.COMPLETED, OutcomeKind.DUPLICATE]
    assert len(runs) == 1
    assert outcomes[0].message is not None and outcomes[1].message is not None
    assert outcomes[0].message.message_id == outcomes[1].message.message_id


def test_derived_ids_depend_on_the_tenant_and_the_transport_id() -> None:
    # GIVEN one body seen under two tenants and two transport ids
    def mid(tenant: str, transport_id: str | None, body: str = FOREIGN) -> str:
        return Message.create_from_queue_data(
            body, default_tenant=tenant, transport_message_id=transport_id
        ).message_id

    # THEN the id is stable, and differs per tenant, per transport id and per body
    assert mid("acme", "t-1") == mid("acme", "t-1")
    assert mid("acme", "t-1") != mid("umbrella", "t-1")
    assert mid("acme", "t-1") != mid("acme", "t-2")
    assert mid("acme", None) == mid("acme", None)
    assert mid("acme", None) != mid("acme", None, json.dumps({"order": 3}))
    # an envelope without an id takes its correlation id from the derived id too
    message = Message.create_from_queue_data(ENVELOPE_NO_ID, transport_message_id="t-1")
    assert message.correlation_id == message.message_id
    # an explicit message_id is kept as is
    explicit = json.dumps({"apix": 1, "message_id": "m-1", "tenant_id": "acme", "payload": {}})
    assert Message.create_from_queue_data(explicit).message_id == "m-1"
