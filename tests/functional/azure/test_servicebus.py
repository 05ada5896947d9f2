"""The Service Bus producer up to the SDK boundary: messages built, batches split by size.

No emulator runs here and no broker is faked: nothing in this module sends.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusMessageBatch

from apix_azure.errors import AzureConnectionError, InvalidQueueNameError
from apix_azure.transport.servicebus import (
    PREMIUM_MAX_MESSAGE_BYTES,
    STANDARD_MAX_MESSAGE_BYTES,
    ServiceBusTransport,
    build_message,
    encoded_message_size,
    from_url,
    plan_batches,
    servicebus_queue_name,
)
from apix_core.errors import ConfigurationError, MessageTooLargeError, PermanentError
from apix_core.transport.base import OutgoingMessage

pytestmark = pytest.mark.azure

# Well-formed, pointing nowhere: building a client does not connect.
CONN = (
    "Endpoint=sb://apix-test.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=a2V5"
)


def _out(body: str, n: int = 0, **attributes: str) -> OutgoingMessage:
    return OutgoingMessage(f"msg-{n}", body, attributes={"tenant_id": "acme", **attributes})


def test_build_message_maps_id_properties_session_ttl_and_delay() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    out = OutgoingMessage(
        "01JD-apix-id",
        '{"v": 1}',
        delay_seconds=5,
        attributes={
            "tenant_id": "acme",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "correlation_id": "corr-1",
            "session_id": "order-7",
        },
    )

    m = build_message(out, time_to_live=timedelta(minutes=10), now=now)

    assert isinstance(m, ServiceBusMessage)
    assert (m.message_id, str(m), m.content_type) == (
        "01JD-apix-id",
        '{"v": 1}',
        "application/json",
    )
    assert m.application_properties == {
        "tenant_id": "acme",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "correlation_id": "corr-1",
    }
    assert (m.session_id, m.correlation_id) == ("order-7", "corr-1")
    assert m.time_to_live == timedelta(minutes=10)
    assert m.scheduled_enqueue_time_utc == now + timedelta(seconds=5)

    # without session, delay or TTL none is set
    plain = build_message(_out("{}"))
    assert plain.session_id is None and plain.scheduled_enqueue_time_utc is None
    assert plain.time_to_live is None and plain.application_properties == {"tenant_id": "acme"}

    # an id Service Bus cannot hold is bad input, not a traceback
    with pytest.raises(PermanentError, match="longer than 128"):
        build_message(OutgoingMessage("x" * 129, "{}"))


def test_plan_batches_packs_greedily_within_the_batch_limit() -> None:
    # GIVEN ten messages of about 100 KiB and a 256 KiB batch limit
    messages = [build_message(_out("a" * 100_000, i)) for i in range(10)]
    limit = STANDARD_MAX_MESSAGE_BYTES

    # WHEN they are planned
    groups = plan_batches(messages, max_batch_bytes=limit, max_message_bytes=limit)

    # THEN order is kept, two fit per batch, and each group fits one SDK batch of the limit
    # while adding the next message would not
    assert [m for g in groups for m in g] == messages
    assert [len(g) for g in groups] == [2, 2, 2, 2, 2]
    for i, group in enumerate(groups):
        batch = ServiceBusMessageBatch(max_size_in_bytes=limit)
        for m in group:
            batch.add_message(m)
        assert batch.size_in_bytes <= limit
        if i + 1 < len(groups):
            assert batch.size_in_bytes + encoded_message_size(groups[i + 1][0]) > limit

    # AND many small messages fill few batches
    small = [build_message(_out("x" * 500, i)) for i in range(1000)]
    small_groups = plan_batches(small, max_batch_bytes=limit, max_message_bytes=limit)
    assert sum(map(len, small_groups)) == 1000 and 2 <= len(small_groups) <= 3
    assert plan_batches([], max_batch_bytes=limit, max_message_bytes=limit) == []


def test_message_size_limit_is_exact_and_checked_before_sending() -> None:
    limit = STANDARD_MAX_MESSAGE_BYTES
    # GIVEN a body sized so the encoded message is exactly the limit
    probe = build_message(_out("a" * 200_000))
    overhead = encoded_message_size(probe) - 200_000
    exact = build_message(_out("a" * (limit - overhead)))
    assert encoded_message_size(exact) == limit

    # THEN it passes (a batch of its own), and one more byte (a 2-byte character instead of
    # an ASCII one) is refused with sizes, before anything is split or sent
    assert plan_batches([exact], max_batch_bytes=limit, max_message_bytes=limit) == [[exact]]
    over = build_message(_out("a" * (limit - overhead - 1) + "é"))
    small = build_message(_out("{}"))
    with pytest.raises(MessageTooLargeError) as info:
        plan_batches([small, over], max_batch_bytes=limit, max_message_bytes=limit, destination="q")
    assert (info.value.size, info.value.limit, info.value.destination) == (limit + 1, limit, "q")


def test_premium_large_message_goes_alone_between_batches() -> None:
    # GIVEN Premium limits: 100 MiB messages, 1 MiB batches; a 2 MiB message among small ones
    big = build_message(_out("b" * 2 * 1024 * 1024, 9))
    small = [build_message(_out("{}", i)) for i in range(4)]

    groups = plan_batches(
        [*small[:2], big, *small[2:]],
        max_batch_bytes=1024 * 1024,
        max_message_bytes=PREMIUM_MAX_MESSAGE_BYTES,
    )

    # THEN the big one is a group of its own (sent alone), the small ones stay batched in order
    assert groups == [small[:2], [big], small[2:]]


def test_transport_plans_and_refuses_what_it_cannot_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SB", CONN)
    t = from_url("servicebus://?connection=MY_SB&max_message_bytes=1048576&max_batch_bytes=300000")
    assert t.namespace == "apix-test.servicebus.windows.net"
    assert (t.max_message_bytes("raw.orders"), t.max_batch_bytes) == (1_048_576, 300_000)

    groups = t.plan("raw.orders", [_out("x" * 100_000, i) for i in range(5)])
    assert [len(g) for g in groups] == [2, 2, 1]
    assert [m.message_id for g in groups for m in g] == [f"msg-{i}" for i in range(5)]

    with pytest.raises(InvalidQueueNameError):
        t.plan("/orders", [_out("{}")])
    assert servicebus_queue_name("raw.orders/eu_1") == "raw.orders/eu_1"
    for bad in ("", "a b", "orders/", "x" * 261, "q#1"):
        with pytest.raises(InvalidQueueNameError):
            servicebus_queue_name(bad)


async def test_it_is_a_producer_only() -> None:
    # GIVEN a Service Bus transport WHEN an app's workers or the dlq commands ask for more
    # THEN it is neither a consumer nor an admin, and an app says so in a typed error
    from apix_core import App
    from apix_core.errors import ConfigurationError
    from apix_core.transport.base import Consumer, DeadLetterAdmin, Producer, QueueAdmin

    t = ServiceBusTransport(CONN)
    assert isinstance(t, Producer)
    assert not isinstance(t, Consumer | DeadLetterAdmin | QueueAdmin)
    app = App("sb", transport=t)
    with pytest.raises(ConfigurationError, match="cannot receive"):
        app.consumer()
    await t.close()


def test_connection_errors_are_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AzureWebJobsServiceBus", raising=False)
    monkeypatch.delenv("APIX_AZURE_SERVICEBUS_CONNECTION", raising=False)
    with pytest.raises(AzureConnectionError, match="AzureWebJobsServiceBus"):
        from_url("servicebus://")
    for bad in ("garbage", "Endpoint=sb://x/", "Foo=bar", ""):
        with pytest.raises(AzureConnectionError):
            ServiceBusTransport(bad)
    for url in ("servicebus://ns", "servicebus://?max_message_bytes=big", "servicebus://?x=1"):
        with pytest.raises(ConfigurationError):
            from_url(url, connection_string=CONN)
    with pytest.raises(ConfigurationError):
        ServiceBusTransport(CONN, max_batch_bytes=0)
    monkeypatch.setenv("AzureWebJobsServiceBus", CONN)
    assert from_url("servicebus://").max_batch_bytes == STANDARD_MAX_MESSAGE_BYTES


def test_url_prefix_and_time_to_live(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a customer's transport URL with a queue prefix and a message TTL
    monkeypatch.setenv("AzureWebJobsServiceBus", CONN)
    t = from_url("servicebus://?prefix=cust-a-&time_to_live=600")
    # THEN the built messages carry the TTL and the queue name is prefixed (and checked so)
    [[m]] = t.plan("orders", [_out("{}")])
    assert m.time_to_live == timedelta(minutes=10)
    assert t.prefix == "cust-a-"
    with pytest.raises(MessageTooLargeError, match="servicebus:cust-a-orders"):
        t.plan("orders", [_out("x" * (STANDARD_MAX_MESSAGE_BYTES + 1))])
    with pytest.raises(InvalidQueueNameError):
        t.plan("x" * 255, [_out("{}")])  # fits alone, not after the prefix
    # AND the app setting is the default prefix
    monkeypatch.setenv("APIX_AZURE_QUEUE_PREFIX", "cust-b-")
    assert from_url("servicebus://").prefix == "cust-b-"
    for url in ("servicebus://?time_to_live=0", "servicebus://?time_to_live=soon"):
        with pytest.raises(ConfigurationError, match="time_to_live"):
            from_url(url)
    with pytest.raises(ConfigurationError, match="queue prefix"):
        from_url("servicebus://?prefix=/x")
