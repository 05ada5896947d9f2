"""The local SQL-table transport: receipts, visibility, release, depth, bad bodies."""

from __future__ import annotations

import asyncio

import pytest

from apix_core import MalformedMessageError
from apix_core.store.database import Database
from apix_core.transport.base import OutgoingMessage
from apix_core.transport.local import LocalTransport


@pytest.fixture
async def transport(queue_url: str):
    db = Database(queue_url)
    await db.upgrade()
    t = LocalTransport(db, visibility_timeout=30, owns_database=True)
    yield t
    await t.close()


async def test_a_resent_message_id_is_queued_once(transport: LocalTransport) -> None:
    # GIVEN a message on a queue
    await transport.send("q", OutgoingMessage("m-1", '{"a":1}'))
    # WHEN the same id is sent again (an outbox re-dispatch after a crash)
    await transport.send("q", OutgoingMessage("m-1", '{"a":1}'))
    # THEN it is queued once
    assert (await transport.depth("q")).visible == 1


async def test_a_received_message_is_hidden_and_a_stale_receipt_acks_nothing(
    transport: LocalTransport,
) -> None:
    # GIVEN a message received once with a very short visibility timeout
    await transport.send("q", OutgoingMessage("m-1", "{}"))
    first = await transport.receive("q", 10, visibility_timeout=0.2)
    assert [m.receive_count for m in first] == [1]
    assert await transport.receive("q", 10) == []  # hidden while in flight
    # WHEN the timeout passes and another worker receives it
    await asyncio.sleep(0.3)
    second = await transport.receive("q", 10)
    assert [m.receive_count for m in second] == [2]
    # THEN the first worker's late ack does not delete the second worker's delivery
    await transport.ack("q", first)
    assert (await transport.depth("q")).in_flight == 1
    await transport.ack("q", second)
    assert (await transport.depth("q")).total == 0


async def test_release_delays_redelivery(transport: LocalTransport) -> None:
    # GIVEN a received message
    await transport.send("q", OutgoingMessage("m-1", "{}"))
    [msg] = await transport.receive("q", 1)
    # WHEN it is released with a delay
    await transport.release("q", msg, delay_seconds=0.3)
    # THEN it is delayed, not visible, and comes back afterwards
    depth = await transport.depth("q")
    assert (depth.visible, depth.delayed) == (0, 1)
    assert await transport.receive("q", 1) == []
    await asyncio.sleep(0.4)
    assert [m.message_id for m in await transport.receive("q", 1)] == ["m-1"]


async def test_nul_characters_are_a_typed_error_on_postgres(
    transport: LocalTransport, backend: str
) -> None:
    # GIVEN a foreign body with a NUL character
    body = '{"a": "x\x00y"}'
    if backend != "postgres":
        # SQLite text stores NUL; the message is queued as sent.
        await transport.send("q", OutgoingMessage("m-1", body))
        [msg] = await transport.receive("q", 1)
        assert msg.body == body
        return
    # WHEN it is sent to a PostgreSQL-backed queue THEN a typed error names the problem
    with pytest.raises(MalformedMessageError, match="NUL"):
        await transport.send("q", OutgoingMessage("m-1", body))
