"""SqsTransport against moto_server (a real SQS API in a separate process).

moto counts sizes in characters and never checks batch totals, so the size tests also show
that apix's own byte count is what refuses a message.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import replace
from typing import Any

import boto3
import pytest

from apix_aws.transport.sqs import (
    DeadLetterQueueNotConfiguredError,
    DelayTooLongError,
    QueueNotFoundError,
    SqsBatchError,
    SqsTransport,
)
from apix_core.errors import MessageTooLargeError
from apix_core.transport.base import DeadLetterInfo, OutgoingMessage

from .conftest import REGION

pytestmark = pytest.mark.aws


def _raw_client(endpoint: str) -> Any:
    return boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)


async def _receive_all(sqs: SqsTransport, queue: str, want: int, timeout: float = 5.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got.extend(await sqs.receive(queue, max_messages=want - len(got), visibility_timeout=30))
    return got


async def test_send_receive_ack_round_trip(sqs: SqsTransport) -> None:
    # GIVEN a queue and a message with apix's attributes and more than SQS's ten
    await sqs.ensure_queue("orders")
    attributes = {
        "tenant_id": "acme",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "correlation_id": "corr-1",
        **{f"extra{i}": f"value {i}" for i in range(9)},
    }
    body = '{"apix":1,"message_id":"m-1","tenant_id":"acme","payload":{"n":"ü€😀"}}'

    # WHEN it is sent, received and acknowledged
    await sqs.send("orders", OutgoingMessage("m-1", body, attributes=attributes))
    [msg] = await _receive_all(sqs, "orders", 1)
    await sqs.ack("orders", [msg])

    # THEN the delivery carries apix's id (not SQS's), the body and every attribute
    assert msg.message_id == "m-1"
    assert msg.body == body
    assert msg.attributes == attributes
    assert msg.receive_count == 1
    assert msg.receipt
    assert msg.enqueued_at is not None and abs(msg.enqueued_at - time.time()) < 60
    # AND the ack deleted it
    assert (await sqs.depth("orders")).total == 0
    assert await sqs.receive("orders", 10, visibility_timeout=0) == []


async def test_batches_split_by_count_and_by_bytes(moto_endpoint: str, queue_prefix: str) -> None:
    # GIVEN a transport on a client whose SendMessageBatch calls are counted (a botocore hook)
    client = _raw_client(moto_endpoint)
    calls: list[int] = []
    client.meta.events.register(
        "before-parameter-build.sqs.SendMessageBatch",
        lambda params, **_: calls.append(len(params["Entries"])),
    )
    sqs = SqsTransport(client=client, queue_prefix=queue_prefix, receive_wait_seconds=0)
    await sqs.ensure_queue("bulk")
    await sqs.ensure_queue("small", dlq=False, max_message_bytes=4096)

    # WHEN 25 messages are sent in one batch
    await sqs.send_batch("bulk", [OutgoingMessage(f"b-{i}", f"body {i}") for i in range(25)])
    # THEN SQS saw three calls of 10, 10 and 5 entries, and all 25 arrived
    assert calls == [10, 10, 5]
    got = await _receive_all(sqs, "bulk", 25)
    assert sorted(m.message_id for m in got) == sorted(f"b-{i}" for i in range(25))

    # WHEN five 1,500-byte messages go to a queue whose messages (and batches) hold 4 KiB
    calls.clear()
    await sqs.send_batch("small", [OutgoingMessage(f"s-{i}", "x" * 1500) for i in range(5)])
    # THEN each call stays within 4,096 bytes: 2 + 2 + 1
    assert calls == [2, 2, 1]
    await sqs.close()


async def test_multibyte_body_over_the_byte_limit_is_refused_before_sending(
    sqs: SqsTransport, moto_endpoint: str
) -> None:
    # GIVEN a queue of 4,096-byte messages and a body of 2,100 characters but 4,200 bytes
    url = await sqs.ensure_queue("tiny", dlq=False, max_message_bytes=4096)
    body = "é" * 2100
    await sqs.prepare(["tiny"])
    assert sqs.max_message_bytes("tiny") == 4096

    # WHEN apix sends it THEN it raises before anything reaches SQS
    with pytest.raises(MessageTooLargeError) as caught:
        await sqs.send("tiny", OutgoingMessage("big", body))
    assert caught.value.size > 4096 and caught.value.limit == 4096
    with pytest.raises(MessageTooLargeError):
        sqs.check_size("tiny", body)
    assert (await sqs.depth("tiny")).total == 0
    # AND moto itself would have taken it (it counts characters): the check is apix's own
    _raw_client(moto_endpoint).send_message(QueueUrl=url, MessageBody=body)
    assert (await sqs.depth("tiny")).visible == 1


async def test_release_makes_a_message_visible_after_its_delay(sqs: SqsTransport) -> None:
    await sqs.ensure_queue("retry", dlq=False)
    await sqs.send("retry", OutgoingMessage("r-1", "{}"))
    [first] = await _receive_all(sqs, "retry", 1)

    # WHEN it is released with a one-second delay
    await sqs.release("retry", first, 1.0)

    # THEN it is invisible at once, and delivered again (second receive) after the delay
    assert await sqs.receive("retry", 10, visibility_timeout=30) == []
    await asyncio.sleep(1.3)
    [again] = await _receive_all(sqs, "retry", 1, timeout=3)
    assert again.message_id == "r-1"
    assert again.receive_count == 2


async def test_redrive_policy_moves_a_message_to_the_dead_letter_queue(sqs: SqsTransport) -> None:
    # GIVEN a queue whose redrive policy allows two receives
    await sqs.ensure_queue("flaky", max_receive_count=2)
    await sqs.send("flaky", OutgoingMessage("f-1", '{"k":1}', attributes={"tenant_id": "acme"}))

    # WHEN it is received twice without being deleted
    for _ in range(2):
        assert len(await sqs.receive("flaky", 10, visibility_timeout=0)) == 1
    # THEN the next receive finds the queue empty: SQS moved it to the dead-letter queue
    assert await sqs.receive("flaky", 10, visibility_timeout=0) == []
    [record] = await sqs.list_dead_letters("flaky")
    assert record.message_id == "f-1"
    assert record.queue == "flaky"
    assert record.error_code == "MAX_RECEIVES_EXCEEDED"
    assert record.tenant_id == "acme"
    assert record.body == '{"k":1}'


async def test_dead_letter_queues_by_name_and_by_redrive_policy(
    sqs: SqsTransport, moto_endpoint: str
) -> None:
    # GIVEN a queue with its NAME-dlq, and a queue whose redrive policy targets "parking"
    await sqs.ensure_queue("raw")
    await sqs.ensure_queue("parking", dlq=False)
    await sqs.ensure_queue("orders", dlq=False)
    parking_arn = _raw_client(moto_endpoint).get_queue_attributes(
        QueueUrl=await sqs.queue_url("parking"), AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    _raw_client(moto_endpoint).set_queue_attributes(
        QueueUrl=await sqs.queue_url("orders"),
        Attributes={
            "RedrivePolicy": f'{{"deadLetterTargetArn": "{parking_arn}", "maxReceiveCount": "3"}}'
        },
    )

    # WHEN the transport is asked which of its queues hold dead letters
    found = await sqs.dead_letter_queues()

    # THEN both dead-letter queues, by their apix names, and no other
    assert found == {"raw-dlq", "parking"}


async def test_dead_letter_list_show_and_replay(sqs: SqsTransport) -> None:
    # GIVEN a message that failed for good
    await sqs.ensure_queue("work")
    attributes = {"tenant_id": "acme", "correlation_id": "c-9"}
    await sqs.send("work", OutgoingMessage("w-1", '{"n":1}', attributes=attributes))
    [msg] = await _receive_all(sqs, "work", 1)
    info = DeadLetterInfo(
        error_code="INVALID_PAYLOAD",
        error_category="validation",
        error_message="payload.n: must be a string " + "x" * 3000,
        attempts=1,
        processor="normalize",
        tenant_id="acme",
    )

    # WHEN apix dead-letters it
    await sqs.dead_letter("work", msg, info)

    # THEN it left the queue and the listing shows it with its error, more than once (a peek)
    assert (await sqs.depth("work")).total == 0
    [record] = await sqs.list_dead_letters("work")
    assert await sqs.list_dead_letters("work") == [record]
    assert (record.queue, record.message_id, record.body) == ("work", "w-1", '{"n":1}')
    assert (record.error_code, record.error_category) == ("INVALID_PAYLOAD", "validation")
    assert record.error_message.startswith("payload.n: must be a string")
    assert len(record.error_message) == 1000  # truncated for the message attribute
    assert (record.attempts, record.processor, record.tenant_id) == (1, "normalize", "acme")
    assert record.attributes == attributes
    assert record.created_at is not None
    assert [r.id for r in await sqs.list_dead_letters()] == [record.id]  # every queue
    # AND it can be shown by its id
    assert await sqs.get_dead_letter(record.id) == record

    # WHEN it is replayed
    assert await sqs.replay_dead_letter(record.id) == "w-1"

    # THEN the dead-letter queue is empty and the queue holds the original message again
    assert await sqs.list_dead_letters("work") == []
    [back] = await _receive_all(sqs, "work", 1)
    assert (back.message_id, back.body, back.attributes) == ("w-1", '{"n":1}', attributes)
    assert back.receive_count == 1


async def test_dead_letter_without_a_dead_letter_queue_says_how_to_configure_one(
    sqs: SqsTransport,
) -> None:
    await sqs.ensure_queue("plain", dlq=False)
    await sqs.send("plain", OutgoingMessage("p-1", "{}"))
    [msg] = await _receive_all(sqs, "plain", 1)
    info = DeadLetterInfo("E", "unexpected", "boom", 3)

    with pytest.raises(DeadLetterQueueNotConfiguredError, match="RedrivePolicy"):
        await sqs.dead_letter("plain", msg, info)
    with pytest.raises(DeadLetterQueueNotConfiguredError):
        await sqs.list_dead_letters("plain")


async def test_fifo_group_and_deduplication_ids(sqs: SqsTransport, moto_endpoint: str) -> None:
    # GIVEN a FIFO queue (by its suffix)
    await sqs.ensure_queue("events.fifo")

    # WHEN the same apix message is sent twice, and another one names its group
    tenant = {"tenant_id": "acme"}
    await sqs.send("events.fifo", OutgoingMessage("e-1", '{"i":1}', attributes=tenant))
    await sqs.send("events.fifo", OutgoingMessage("e-1", '{"i":1}', attributes=tenant))
    await sqs.send(
        "events.fifo",
        OutgoingMessage("e-2", '{"i":2}', attributes={"tenant_id": "acme", "group_id": "g-7"}),
    )

    # THEN SQS deduplicated the re-send, and each message is in its group
    got = await _receive_all(sqs, "events.fifo", 3, timeout=1)
    assert sorted(m.message_id for m in got) == ["e-1", "e-2"]
    groups = {m.message_id: m.attributes["group_id"] for m in got}
    assert groups == {"e-1": "acme", "e-2": "g-7"}
    # AND a per-message delay, which FIFO queues cannot honour, is refused
    with pytest.raises(DelayTooLongError, match="FIFO"):
        await sqs.send("events.fifo", OutgoingMessage("e-3", "{}", delay_seconds=5))

    # WHEN e-1 is dead-lettered (to the FIFO dead-letter queue) and replayed at once
    by_id = {m.message_id: m for m in got}
    await sqs.ack("events.fifo", [by_id["e-2"]])
    await sqs.dead_letter(
        "events.fifo", by_id["e-1"], DeadLetterInfo("E", "transient", "gave up", 5)
    )
    [record] = await sqs.list_dead_letters("events.fifo")
    assert record.attributes == {"tenant_id": "acme", "group_id": "acme"}
    assert await sqs.replay_dead_letter(record.id) == "e-1"

    # THEN it is back in its group, under a deduplication id of its own: SQS would drop a
    # replay within 5 minutes of the first send otherwise (moto only compares with messages
    # still queued, so the id is checked directly)
    raw = _raw_client(moto_endpoint).receive_message(
        QueueUrl=await sqs.queue_url("events.fifo"),
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    )["Messages"]
    assert [m["MessageAttributes"]["apix_message_id"]["StringValue"] for m in raw] == ["e-1"]
    assert raw[0]["Attributes"]["MessageGroupId"] == "acme"
    first_send_dedup_id = hashlib.sha256(b"e-1").hexdigest()
    assert raw[0]["Attributes"]["MessageDeduplicationId"] not in ("", first_send_dedup_id)


async def test_batch_entry_failures_and_stale_receipts(sqs: SqsTransport) -> None:
    await sqs.ensure_queue("partial", dlq=False)
    limit = await sqs._limit("partial")
    url = await sqs.queue_url("partial")
    good = sqs._send_entry("partial", OutgoingMessage("ok-1", "{}"), limit)
    bad = sqs._send_entry("partial", OutgoingMessage("bad-1", "{}"), limit)
    bad[1]["DelaySeconds"] = 1000  # past apix's own check: SQS refuses this one entry

    # WHEN SQS fails one entry of a batch THEN a retryable error names it; the other arrived
    with pytest.raises(SqsBatchError) as caught:
        await sqs._send_entries("partial", url, [good, bad], limit)
    assert caught.value.message_ids == ["bad-1"]
    assert caught.value.retryable
    [delivered] = await _receive_all(sqs, "partial", 1)
    assert delivered.message_id == "ok-1"

    # AND an ack whose receipt is no longer valid is skipped, not raised
    stale = replace(delivered, receipt="not-a-receipt")
    await sqs.ack("partial", [stale])
    await sqs.ack("partial", [delivered])
    assert (await sqs.depth("partial")).total == 0


async def test_depth_counts_visible_in_flight_and_delayed(sqs: SqsTransport) -> None:
    await sqs.ensure_queue("depth", dlq=False)
    await sqs.send_batch(
        "depth",
        [
            OutgoingMessage("d-1", "{}"),
            OutgoingMessage("d-2", "{}"),
            OutgoingMessage("d-3", "{}", delay_seconds=60),
        ],
    )
    assert len(await sqs.receive("depth", 1, visibility_timeout=30)) == 1

    depth = await sqs.depth("depth")

    assert (depth.visible, depth.in_flight, depth.delayed) == (1, 1, 1)
    with pytest.raises(DelayTooLongError, match="900"):
        await sqs.send("depth", OutgoingMessage("d-4", "{}", delay_seconds=901))


async def test_queue_prefix_and_unknown_queues(
    sqs: SqsTransport, moto_endpoint: str, queue_prefix: str
) -> None:
    # GIVEN a queue created through a transport with a prefix
    await sqs.ensure_queue("orders")

    # THEN its SQS name carries the prefix, and the transport lists it by its apix name
    urls = _raw_client(moto_endpoint).list_queues(QueueNamePrefix=queue_prefix)["QueueUrls"]
    assert sorted(u.rsplit("/", 1)[-1] for u in urls) == [
        f"{queue_prefix}orders",
        f"{queue_prefix}orders-dlq",
    ]
    assert await sqs.queues() == ["orders", "orders-dlq"]

    # AND another deployment's prefix does not see it: a typed error names the queue
    other = SqsTransport(
        endpoint_url=moto_endpoint, region=REGION, queue_prefix="elsewhere-", receive_wait_seconds=0
    )
    with pytest.raises(QueueNotFoundError, match="elsewhere-orders") as caught:
        await other.send("orders", OutgoingMessage("x", "{}"))
    assert caught.value.queue == "orders"
    await other.close()
    # AND a missing queue is not created by a send, nor cached as missing
    with pytest.raises(QueueNotFoundError):
        await sqs.receive("later")
    await sqs.ensure_queue("later", dlq=False)
    await sqs.send("later", OutgoingMessage("l-1", "{}"))
    assert (await sqs.depth("later")).visible == 1
