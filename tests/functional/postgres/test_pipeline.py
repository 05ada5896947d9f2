"""The pipelined PostgreSQL transaction: the claim rides with BEGIN; content goes bound.

The claim travels as ``EXECUTE`` of a statement apix prepares once per connection, with its
arguments (ids) as SQL literals (``store.pg.literal``): these tests prove the literals read back
as the values whatever the server's string settings, that the prepared statement is there and
bounded, that the transaction recovers when it vanishes or a value cannot be a literal, and that
content (the write bundle) never appears in a statement's text.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apix_core import App, Message, ProcessorContext, tenant_context
from apix_core.processing import OutcomeKind
from apix_core.store import pg
from apix_core.store.database import Database
from apix_core.store.pg import NotALiteralError, literal
from apix_core.transport.base import ReceivedMessage

TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00", codec="utf-8"), max_size=40)


@pytest.fixture
async def raw(backend: str, admin_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The superuser's connection: it reads every tenant's rows and every session's activity."""
    if backend != "postgres":
        pytest.skip("SQL literals and prepared statements are PostgreSQL's")
    url = admin_database_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(url)
    yield conn
    await conn.close()


@pytest.mark.parametrize("conforming", ["on", "off"])
async def test_literals_read_back_as_their_values(raw: asyncpg.Connection, conforming: str) -> None:
    # GIVEN either setting of standard_conforming_strings (E'' strings ignore it)
    await raw.execute(f"SET standard_conforming_strings = {conforming}")
    seen: list[tuple[Any, Any]] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(text=TEXT, items=st.lists(st.none() | TEXT, max_size=6))
    def collect(text: str, items: list[str | None]) -> None:
        seen.append((text, items))

    collect()
    for text, items in [*seen, ("'; DROP TABLE x; --", ["\\", '"', "'", "{}", ",", "NULL"])]:
        # WHEN each value is written as a literal and read back by the server
        got_text, got_items = await raw.fetchrow(
            f"SELECT {literal(text)}::text, {literal(items)}::text[]"
        )
        # THEN it is the value itself: quotes, backslashes, braces and NULLs included
        assert got_text == text
        assert got_items == items


async def test_scalars_and_nul(raw: asyncpg.Connection) -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 29, 1, 2, 3, 456789, tzinfo=UTC)
    row = await raw.fetchrow(
        f"SELECT {literal(now)}::timestamptz, {literal(2.5)}::float8, {literal(7)}::int, "
        f"{literal(True)}::bool, {literal(None)}::text, {literal([1.5, float('inf')])}::float8[]"
    )
    assert tuple(row) == (now, 2.5, 7, True, None, [1.5, float("inf")])
    # A NUL cannot travel in a simple query (nor be stored in text): refused, never truncated.
    for value in ("a\x00b", ["ok", "a\x00b"], [None, "\x00"]):
        with pytest.raises(NotALiteralError):
            literal(value)


def _app(database_url: str, name: str = "pipe") -> App:
    app = App(name, database_url=database_url, queue_url=database_url, tenant_id="acme")

    @app.processor("ingest", consumes="in", produces=["out"])
    async def ingest(message: Message, ctx: ProcessorContext) -> dict:
        ctx.persist_entity(str(message.payload["id"]), "item", "test", message.payload)
        return {"id": message.payload["id"]}

    return app


def _batch(*ids: str, entity_ids: dict[str, str] | None = None) -> list[ReceivedMessage]:
    out = []
    for mid in ids:
        payload = {"id": (entity_ids or {}).get(mid, mid)}
        msg = Message(message_id=mid, tenant_id="acme", payload=payload)
        out.append(ReceivedMessage("in", mid, msg.to_json(), attributes={"tenant_id": "acme"}))
    return out


@pytest.fixture
async def app(
    raw: asyncpg.Connection, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[App]:
    """A started App on ONE pooled connection: every transaction sees the same session."""
    monkeypatch.setenv("APIX_DB_POOL_SIZE", "1")
    started = _app(database_url)
    await started.start()
    yield started
    await started.close()


async def _prepared_names(app: App) -> set[str]:
    """The apix statements prepared on the App's (only) connection."""
    assert app.store is not None
    async with app.store.db.transaction() as conn:
        rows = await pg.driver(conn).fetch(
            "SELECT name FROM pg_prepared_statements WHERE name LIKE 'apix\\_%'"
        )
    return {r[0] for r in rows}


async def test_claim_rides_with_begin(raw: asyncpg.Connection, app: App) -> None:
    # GIVEN a message already processed
    handler = app.handler("ingest")
    assert app.store is not None and app.store.db.pipelines
    first = await handler.handle_batch(_batch("m-1"))

    # WHEN a batch mixes it with new messages (the claim's count falls short)
    outcomes = await handler.handle_batch(_batch("m-1", "m-2", "m-3"))

    # THEN the new ones ran, the old one is a duplicate, and nothing was written twice
    assert [o.kind for o in first] == [OutcomeKind.COMPLETED]
    assert [o.kind for o in outcomes] == [
        OutcomeKind.DUPLICATE,
        OutcomeKind.COMPLETED,
        OutcomeKind.COMPLETED,
    ]
    with tenant_context("acme"):
        assert await app.store.entities.count() == 3
    assert await raw.fetchval("SELECT count(*) FROM apix_queue_messages") == 3
    assert await raw.fetchval("SELECT count(*) FROM apix_idempotency") == 3
    # AND the claim went as apix's prepared statement; the writes (content) never do
    assert await _prepared_names(app) == {pg.statement_name(pg.CLAIM_SQL)}


async def test_content_never_travels_in_statement_text(raw: asyncpg.Connection, app: App) -> None:
    # GIVEN messages whose payload holds a sentinel: it reaches the entities' attributes, their
    # versions and the outgoing queue messages, all written in the pipelined transaction
    sentinel = f"sentinel-{uuid.uuid4().hex}"
    handler = app.handler("ingest")
    warm = _batch("w-1", "w-2", entity_ids={"w-1": "warm-1", "w-2": "warm-2"})
    batch = _batch("s-1", "s-2", entity_ids={"s-1": f"{sentinel}-1", "s-2": f"{sentinel}-2"})

    # WHEN they are processed on the App's one pooled connection (after a batch of the same
    # shape: whatever is prepared is prepared, the statement text is short), which then idles
    assert [o.kind for o in await handler.handle_batch(warm)] == [OutcomeKind.COMPLETED] * 2
    outcomes = await handler.handle_batch(batch)

    # THEN the rows hold the content, but no session's statement text ever did: the idle
    # connection's last statement is COMMIT, and the write went as bind parameters
    assert [o.kind for o in outcomes] == [OutcomeKind.COMPLETED] * 2
    bodies = await raw.fetch("SELECT body FROM apix_queue_messages")
    assert sum(sentinel in r[0] for r in bodies) == 2
    texts = await raw.fetch(
        "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND query <> ''"
    )
    assert texts and not [r[0] for r in texts if sentinel in r[0]]
    assert "COMMIT" in {r[0] for r in texts}
    # AND the server would log no parameter values with a failed statement's text
    assert await raw.fetchval("SHOW log_parameter_max_length_on_error") == "0"


async def test_lost_prepared_statements_are_prepared_again(
    raw: asyncpg.Connection, app: App
) -> None:
    # GIVEN a connection whose apix statements were deallocated behind apix's back
    handler = app.handler("ingest")
    await handler.handle_batch(_batch("a-1", "a-2"))
    assert app.store is not None
    names = await _prepared_names(app)
    async with app.store.db.transaction() as conn:
        for name in names:
            await pg.driver(conn).execute(f"DEALLOCATE {name}")
    assert await _prepared_names(app) == set()

    # WHEN the next batch arrives
    outcomes = await handler.handle_batch(_batch("b-1", "b-2"))

    # THEN it fails over to one transaction per message, which prepare them anew
    assert [o.kind for o in outcomes] == [OutcomeKind.COMPLETED] * 2
    assert pg.statement_name(pg.CLAIM_SQL) in await _prepared_names(app)
    assert await raw.fetchval("SELECT count(*) FROM apix_idempotency") == 4


async def test_prepared_statements_per_connection_are_bounded(
    raw: asyncpg.Connection, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a bound of 1 prepared statement per connection (the claim reaches it at once)
    monkeypatch.setattr(pg, "MAX_PREPARED", 1)
    handler = app.handler("ingest")
    # WHEN batches follow one another (new entities, updates of existing ones)
    for n, (ids, entity_ids) in enumerate(
        [
            (["a-1"], None),
            (["b-1", "b-2"], None),
            (["c-1"], {"c-1": "a-1"}),
            (["d-1", "d-2"], {"d-1": "b-1", "d-2": "b-2"}),
        ]
    ):
        outcomes = await handler.handle_batch(_batch(*ids, entity_ids=entity_ids))
        assert [o.kind for o in outcomes] == [OutcomeKind.COMPLETED] * len(ids), n
        # THEN each transaction deallocated and prepared the claim again: never more than one
        assert await _prepared_names(app) == {pg.statement_name(pg.CLAIM_SQL)}
    assert await raw.fetchval("SELECT count(*) FROM apix_idempotency") == 6


# A NUL in a message id no longer reaches the claim: Message refuses it (InvalidMessageIdError,
# tests/functional/store/test_poison_batch.py), so only a value inside the write bundle can.
@pytest.mark.parametrize(
    ("message_id", "entity_id"),
    [("bad-2", "bad\x00entity")],
    ids=["write-bundle"],
)
async def test_a_value_that_cannot_be_a_literal_goes_the_usual_way(
    raw: asyncpg.Connection, app: App, message_id: str, entity_id: str
) -> None:
    # GIVEN a batch where one message's id, or only its entity's id, holds a NUL (PostgreSQL
    # text cannot): the claim, or the write bundle, cannot travel as literals
    handler = app.handler("ingest")
    outcomes = await handler.handle_batch(
        _batch("ok-1", message_id, "ok-2", entity_ids={message_id: entity_id})
    )

    # THEN the others complete, and the culprit alone fails with a database error (to be
    # retried, then dead-lettered), as without pipelining
    kinds = [o.kind for o in outcomes]
    assert kinds[0] == kinds[2] == OutcomeKind.COMPLETED
    assert kinds[1] is OutcomeKind.RETRY
    assert outcomes[1].error is not None
    assert outcomes[1].error.code == "STORE_WRITE_FAILED"
    assert await raw.fetchval("SELECT count(*) FROM apix_idempotency") == 2


def test_pgbouncer_connections_are_not_pipelined() -> None:
    # Transaction pooling hands each transaction to any server session: none can rely on a
    # statement prepared in another.
    url = "postgresql://apix@127.0.0.1:6432/apix"
    assert Database(url, pgbouncer=True).pipelines is False
    assert Database(url, pgbouncer=False).pipelines is True
    assert Database("sqlite:///:memory:").pipelines is False


async def test_subclassed_values_are_written_by_their_value(raw: asyncpg.Connection) -> None:
    # GIVEN values of str and int subclasses (an enum's value is what a column must hold)
    from enum import IntEnum, StrEnum

    class Kind(StrEnum):
        QUEUE = "queue"

        def __str__(self) -> str:
            return "not-the-value"

    class Level(IntEnum):
        HIGH = 3

    # WHEN they are written as literals / THEN the server reads their values
    row = await raw.fetchrow(
        f"SELECT {literal(Kind.QUEUE)}::text, {literal([Kind.QUEUE])}::text[], "
        f"{literal(Level.HIGH)}::int"
    )
    assert tuple(row) == ("queue", ["queue"], 3)
