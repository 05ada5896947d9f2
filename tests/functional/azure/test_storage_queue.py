"""The Storage Queue transport against a real Azurite process."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from apix_azure.errors import AzureConnectionError, InvalidQueueNameError
from apix_azure.transport.storage_queue import (
    StorageQueueTransport,
    azure_queue_name,
    encode_text,
    from_url,
)
from apix_core.errors import (
    ConfigurationError,
    DeadLetterNotFoundError,
    MessageTooLargeError,
)
from apix_core.transport.base import DeadLetterInfo, OutgoingMessage

pytestmark = pytest.mark.azure


def _msg(body: str, n: int = 0) -> OutgoingMessage:
    return OutgoingMessage(f"m{n}", body, attributes={"tenant_id": "acme"})


@pytest.fixture
async def raw() -> AsyncIterator[list[QueueClient]]:
    """Plain SDK clients made by the test (no encode/decode policy unless given), closed after."""
    clients: list[QueueClient] = []
    yield clients
    for c in clients:
        await c.close()


def _raw_client(raw: list[QueueClient], azurite: str, name: str, **kw: Any) -> QueueClient:
    client = QueueClient.from_connection_string(azurite, name, **kw)
    raw.append(client)
    return client


async def test_send_receive_ack(transport: StorageQueueTransport, queue_name: str) -> None:
    # GIVEN three messages sent in one batch
    bodies = ['{"n": 1}', '{"n": 2}', '{"n": "drei ✓"}']
    await transport.send_batch(queue_name, [_msg(b, i) for i, b in enumerate(bodies)])

    # WHEN they are received
    got = await transport.receive(queue_name, max_messages=10)

    # THEN each arrives once, decoded, on its first delivery, with a Storage id and pop receipt
    assert sorted(m.body for m in got) == sorted(bodies)
    assert all(m.receive_count == 1 and m.receipt and m.queue == queue_name for m in got)
    assert len({m.message_id for m in got}) == 3
    assert all(m.enqueued_at and m.enqueued_at > 1.7e9 for m in got)
    assert await transport.receive(queue_name) == []  # hidden by the visibility timeout
    assert (await transport.depth(queue_name)).total == 3

    # AND after ack they are gone
    await transport.ack(queue_name, got)
    assert (await transport.depth(queue_name)).total == 0
    assert azure_queue_name(queue_name) in await transport.queues()


async def test_wire_text_is_base64_as_the_functions_host_expects(
    transport: StorageQueueTransport,
    queue_name: str,
    azurite: str,
    raw: list[QueueClient],
) -> None:
    # GIVEN a message with non-ASCII text sent by the transport
    body = '{"city": "Zürich", "emoji": "🚀"}'
    await transport.send(queue_name, _msg(body))
    name = azure_queue_name(queue_name)

    # WHEN a plain client (no decode policy) and a host-like client (base64 decode) peek it
    plain = _raw_client(raw, azurite, name)
    hostlike = _raw_client(raw, azurite, name, message_decode_policy=TextBase64DecodePolicy())
    [on_wire] = await plain.peek_messages()
    [decoded] = await hostlike.peek_messages()

    # THEN the wire text is base64 of the UTF-8 body and the host's decoding gives the body
    assert on_wire.content == base64.b64encode(body.encode("utf-8")).decode("ascii")
    assert decoded.content == body

    # AND a message sent with the SDK's TextBase64EncodePolicy (a Functions output binding)
    # is received as its text; plain text (no policy) is delivered as it is
    encoder = _raw_client(raw, azurite, name, message_encode_policy=TextBase64EncodePolicy())
    await encoder.send_message('{"from": "binding"}')
    await plain.send_message('{"plain": true}')
    got = await transport.receive(queue_name, max_messages=10)
    assert sorted(m.body for m in got) == sorted([body, '{"from": "binding"}', '{"plain": true}'])


async def test_size_limit_is_exact_on_the_encoded_text(
    transport: StorageQueueTransport, queue_name: str, azurite: str, raw: list[QueueClient]
) -> None:
    limit = transport.max_message_bytes(queue_name)
    assert limit == 65_536
    # GIVEN bodies whose base64 text is exactly 65,536 bytes: ASCII and 2-byte characters
    ascii_max = "a" * 49_152
    two_byte_max = "é" * 24_576
    assert transport.encoded_size(ascii_max) == len(encode_text(ascii_max)) == 65_536
    assert transport.encoded_size(two_byte_max) == 65_536

    # WHEN they are sent THEN they pass and arrive intact
    await transport.send_batch(queue_name, [_msg(ascii_max, 1), _msg(two_byte_max, 2)])
    got = await transport.receive(queue_name)
    assert sorted(len(m.body) for m in got) == [24_576, 49_152]
    await transport.ack(queue_name, got)

    # AND one more byte of body (base64 grows to 65,540: it moves in steps of 4) is refused
    # before anything is sent — one too-large message stops the whole batch
    for too_big in ("a" * 49_153, "é" * 24_576 + "a", "€" * 16_384 + "x"):
        with pytest.raises(MessageTooLargeError) as info:
            await transport.send_batch(queue_name, [_msg("{}", 1), _msg(too_big, 2)])
        assert info.value.size == 65_540 and info.value.limit == 65_536
    assert (await transport.depth(queue_name)).total == 0

    # AND the limit is the service's: Azurite refuses 65,540 bytes of text sent directly
    plain = _raw_client(raw, azurite, azure_queue_name(queue_name))
    with pytest.raises(HttpResponseError):
        await plain.send_message(encode_text("a" * 49_153))


async def test_release_with_delay_and_dequeue_count(
    transport: StorageQueueTransport, queue_name: str
) -> None:
    # GIVEN a received message
    await transport.send(queue_name, _msg('{"x": 1}'))
    [first] = await transport.receive(queue_name, visibility_timeout=30)

    # WHEN it is released with a 2-second delay
    await transport.release(queue_name, first, 2)

    # THEN it is not visible at once, and is redelivered after the delay as the same
    # Storage message with dequeue count 2 and a new pop receipt
    assert await transport.receive(queue_name) == []
    await asyncio.sleep(2.3)
    [second] = await transport.receive(queue_name, visibility_timeout=1)
    assert second.message_id == first.message_id
    assert second.receive_count == 2 and second.receipt != first.receipt

    # AND when its 1-second visibility timeout lapses it comes back a third time
    await asyncio.sleep(1.3)
    [third] = await transport.receive(queue_name)
    assert third.receive_count == 3

    # AND acking with the stale receipt of an earlier delivery leaves the message alone
    await transport.ack(queue_name, [second])
    assert (await transport.depth(queue_name)).total == 1
    await transport.release(queue_name, third, 0)
    [fourth] = await transport.receive(queue_name)
    assert fourth.receive_count == 4


async def test_dead_letter_list_show_replay(
    transport: StorageQueueTransport, queue_name: str, azurite: str, raw: list[QueueClient]
) -> None:
    name = azure_queue_name(queue_name)
    body = '{"order": 7, "note": "größe"}'
    await transport.send(queue_name, _msg(body))
    [delivery] = await transport.receive(queue_name)
    info = DeadLetterInfo("INVALID_PAYLOAD", "validation", "bad order", 3, "orders", "acme")

    # WHEN apix dead-letters it
    await transport.dead_letter(queue_name, delivery, info)

    # THEN it left the source queue, and <queue>-poison holds the original wire text unchanged
    assert (await transport.depth(queue_name)).total == 0
    [poisoned] = await _raw_client(raw, azurite, name + "-poison").peek_messages()
    assert poisoned.content == encode_text(body)
    listed = await transport.queues()
    assert name in listed and name + "-poison" not in listed and name + "-poison-info" not in listed

    # AND list / show give the body with the error info
    [record] = await transport.list_dead_letters(queue_name)
    assert record.id == f"{name}/{poisoned.id}"
    assert (record.queue, record.message_id, record.body) == (queue_name, delivery.message_id, body)
    assert (record.error_code, record.error_category, record.error_message) == (
        "INVALID_PAYLOAD",
        "validation",
        "bad order",
    )
    assert (record.attempts, record.processor, record.tenant_id) == (3, "orders", "acme")
    assert record.created_at is not None
    assert record.id in {r.id for r in await transport.list_dead_letters()}
    assert await transport.get_dead_letter(record.id) == record

    # WHEN it is replayed
    new_id = await transport.replay_dead_letter(record.id)

    # THEN the source queue has the same body again, and the poison and info queues are empty
    [again] = await transport.receive(queue_name)
    assert again.body == body and again.message_id == new_id and again.receive_count == 1
    assert await transport.list_dead_letters(queue_name) == []
    for dlq in ("-poison", "-poison-info"):
        props = await _raw_client(raw, azurite, name + dlq).get_queue_properties()
        assert props.approximate_message_count == 0
    with pytest.raises(DeadLetterNotFoundError):
        await transport.get_dead_letter(record.id)
    with pytest.raises(DeadLetterNotFoundError):
        await transport.replay_dead_letter("not-an-id")


async def test_host_poisoned_messages_and_dead_letters_beyond_a_peek(
    transport: StorageQueueTransport, queue_name: str, azurite: str, raw: list[QueueClient]
) -> None:
    # GIVEN 40 messages the Functions host poisoned (raw text, no apix info) and then one
    # apix dead letter behind them
    name = azure_queue_name(queue_name)
    host = _raw_client(raw, azurite, name + "-poison")
    await host.create_queue()
    for i in range(40):
        await host.send_message(encode_text(f'{{"host": {i}}}'))
    await transport.send(queue_name, _msg('{"late": true}'))
    [delivery] = await transport.receive(queue_name)
    info = DeadLetterInfo("TRANSIENT_ERROR", "transient", "gave up", 5)
    await transport.dead_letter(queue_name, delivery, info)

    # WHEN the dead letters are listed THEN a peek shows the first 32, host ones marked POISONED
    listed = await transport.list_dead_letters(queue_name, limit=100)
    assert len(listed) == 32
    assert {r.error_code for r in listed} == {"POISONED"}
    assert listed[0].body == '{"host": 0}' and listed[0].queue == name

    # AND the 41st is still found by id (scan), and replayed; the other 40 stay visible
    [late_id] = [
        mid for mid, text in await _all_messages(host) if text == encode_text('{"late": true}')
    ]
    record = await transport.get_dead_letter(f"{name}/{late_id}")
    assert (record.body, record.error_code, record.attempts) == (
        '{"late": true}',
        "TRANSIENT_ERROR",
        5,
    )
    await transport.replay_dead_letter(record.id)
    assert len(await transport.list_dead_letters(queue_name, limit=100)) == 32
    assert (await host.get_queue_properties()).approximate_message_count == 40
    [back] = await transport.receive(queue_name)
    assert back.body == '{"late": true}'


async def _all_messages(client: QueueClient) -> list[tuple[str, str]]:
    """(id, text) of every message of a queue: received page by page, then made visible."""
    seen = []
    while True:
        page = [
            m
            async for m in client.receive_messages(
                max_messages=32, messages_per_page=32, visibility_timeout=10
            )
        ]
        if not page:
            break
        seen += page
    for m in seen:
        await client.update_message(m.id, m.pop_receipt, visibility_timeout=0)
    return [(m.id, m.content) for m in seen]


def test_queue_name_mapping() -> None:
    assert azure_queue_name("raw.orders") == "raw-orders"
    assert azure_queue_name("Orders_1") == "orders-1"
    assert azure_queue_name("already-valid-42") == "already-valid-42"
    assert azure_queue_name("x" * 51) == "x" * 51
    for bad in ("ab", "a..b", "a._b", ".orders", "orders-", "x" * 52, "größe", "a b", "o-poison"):
        with pytest.raises(InvalidQueueNameError, match="cannot be an Azure Storage queue"):
            azure_queue_name(bad)
    assert isinstance(InvalidQueueNameError("x"), ConfigurationError)


async def test_mapped_names_share_a_queue(transport: StorageQueueTransport) -> None:
    # GIVEN apix names that map to one Azure queue
    suffix = __import__("uuid").uuid4().hex[:8]
    await transport.send(f"Raw.Orders{suffix}", _msg('{"a": 1}'))

    # THEN the message is received under the other spelling, and queues() lists the Azure name
    [got] = await transport.receive(f"raw_orders{suffix}")
    assert got.body == '{"a": 1}'
    assert f"raw-orders{suffix}" in await transport.queues()
    with pytest.raises(InvalidQueueNameError):
        await transport.send("a..b", _msg("{}"))


async def test_connection_errors_are_typed(
    monkeypatch: pytest.MonkeyPatch, azurite: str, queue_name: str
) -> None:
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.delenv("APIX_AZURE_STORAGE_CONNECTION", raising=False)
    with pytest.raises(AzureConnectionError, match="AzureWebJobsStorage"):
        StorageQueueTransport()
    with pytest.raises(AzureConnectionError, match="MY_STORAGE"):
        from_url("azure-queue://?connection=MY_STORAGE")
    for bad in ("garbage", "Foo=bar", "AccountName=x;AccountKey=not base64!", "  "):
        with pytest.raises(AzureConnectionError):
            StorageQueueTransport(bad)
    for url in (
        "azure-queue://myaccount",
        "azure-queue://?conection=X",
        "sqs://",
        "azure-queue://?connection=",
    ):
        with pytest.raises(ConfigurationError):
            from_url(url)

    # GIVEN a well-formed string with the wrong key WHEN sending THEN a credentials error
    wrong = azurite.replace("Eby8", "Xby8")
    t = StorageQueueTransport(wrong)
    try:
        with pytest.raises(AzureConnectionError, match="rejected the credentials"):
            await t.send(queue_name, _msg("{}"))
    finally:
        await t.close()


async def test_from_url_reads_app_settings(
    monkeypatch: pytest.MonkeyPatch, azurite: str, queue_name: str
) -> None:
    monkeypatch.setenv("MY_STORAGE", azurite)
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.delenv("APIX_AZURE_STORAGE_CONNECTION", raising=False)
    t = from_url("azure-queue://?connection=MY_STORAGE&visibility_timeout=5")
    assert t.visibility_timeout == 5
    try:
        await t.send(queue_name, _msg('{"via": "url"}'))
        assert [m.body for m in await t.receive(queue_name)] == ['{"via": "url"}']
    finally:
        await t.close()
    # the default URL reads APIX_AZURE_STORAGE_CONNECTION first, then AzureWebJobsStorage
    assert from_url("azure-queue://")._source == "app setting AzureWebJobsStorage"
    monkeypatch.setenv("APIX_AZURE_STORAGE_CONNECTION", azurite)
    assert from_url("azure-queue://")._source == "app setting APIX_AZURE_STORAGE_CONNECTION"


def test_one_transport_serves_successive_event_loops(azurite: str, queue_name: str) -> None:
    # GIVEN one transport used by two asyncio.run calls (as run_sync does per invocation)
    t = StorageQueueTransport(azurite)

    async def send() -> None:
        await t.send(queue_name, _msg('{"loop": 1}'))

    async def receive() -> list[str]:
        try:
            return [str(m.body) for m in await t.receive(queue_name)]
        finally:
            await t.close()

    # WHEN the second loop receives what the first sent THEN its clients are its own
    asyncio.run(send())
    assert asyncio.run(receive()) == ['{"loop": 1}']


async def test_queue_prefix_separates_customers_on_one_account(
    azurite: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN two customers' transports on one account: A by URL, B by the app setting
    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    cust_a = from_url("azure-queue://?prefix=cust-a-")
    monkeypatch.setenv("APIX_AZURE_QUEUE_PREFIX", "cust-b-")
    cust_b = StorageQueueTransport(azurite)
    try:
        assert (cust_a.azure_name(queue_name), cust_b.prefix) == (
            f"cust-a-{azure_queue_name(queue_name)}",
            "cust-b-",
        )
        # WHEN both send to the same apix queue and A dead-letters its message
        await cust_a.send(queue_name, _msg('{"who": "a"}'))
        await cust_b.send(queue_name, _msg('{"who": "b"}'))
        [a] = await cust_a.receive(queue_name)
        [b] = await cust_b.receive(queue_name)
        info = DeadLetterInfo("INVALID_PAYLOAD", "validation", "bad", 1, "orders", "acme")
        await cust_a.dead_letter(queue_name, a, info)
        # THEN each sees only its own queue, messages and dead letters
        assert (a.body, b.body) == ('{"who": "a"}', '{"who": "b"}')
        assert [q for q in await cust_a.queues() if not q.startswith("cust-a-")] == []
        assert f"cust-a-{azure_queue_name(queue_name)}" in await cust_a.queues()
        [record] = await cust_a.list_dead_letters()
        assert record.id.startswith(f"cust-a-{azure_queue_name(queue_name)}/")
        assert await cust_b.list_dead_letters() == []
    finally:
        await cust_a.close()
        await cust_b.close()


def test_bad_queue_prefix_is_a_configuration_error(azurite: str) -> None:
    with pytest.raises(ConfigurationError, match="queue prefix"):
        StorageQueueTransport(azurite, prefix="-bad")
