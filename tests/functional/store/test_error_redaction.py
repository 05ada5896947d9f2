"""No content or secrets reach the metadata store through error messages.

Processors fail with exceptions quoting sentinel values (a card number, a bearer token in a
repr'd header dict, a pydantic input, a ``PermanentError`` quoting the value, a reported
failure): every text column of every apix table is scanned, and no sentinel is there, while the
error type and code are.
"""

from __future__ import annotations

from typing import Any

import pydantic
import sqlalchemy as sa

from apix_core import App, Message, OutcomeKind, PermanentError, ProcessingResult
from apix_core.errors import redact_error_message
from apix_core.store.database import Database
from apix_core.store.models import metadata

CARD = "4111111111111111"
TOKEN = "sk-SENTINEL-bearer-7f3a"
PYDANTIC = "SENTINEL-pydantic-input"
VALUE = "SENTINEL-permanent-value"
REPORTED = "SENTINEL-reported-secret"
SENTINELS = (CARD, TOKEN, PYDANTIC, VALUE, REPORTED, "SENTINEL")


class Customer(pydantic.BaseModel):
    age: int


def _fail(case: str) -> Any:
    if case == "card":
        raise ValueError(f"card {CARD} for {{'Authorization': 'Bearer {TOKEN}'}}")
    if case == "pydantic":
        Customer.model_validate({"age": PYDANTIC})
    if case == "permanent":
        raise PermanentError(f"unknown customer {VALUE!r}")
    if case == "reported":
        return ProcessingResult.create_failure(
            f"upstream said password={REPORTED}", "UPSTREAM", can_retry=False
        )
    return None


async def _scan(admin_url: str) -> tuple[int, list[tuple[str, str, str]]]:
    """Rows read, and (table, column, value) of every text value holding a sentinel, in every
    apix table (as the superuser on PostgreSQL: every tenant's rows)."""
    db = Database(admin_url)
    found: list[tuple[str, str, str]] = []
    rows = 0
    try:
        async with db.transaction(write=False, maintenance=True) as conn:
            for table in metadata.sorted_tables:
                for row in (await conn.execute(sa.select(table))).mappings():
                    rows += 1
                    for column, value in row.items():
                        text = str(value)
                        if any(s in text for s in SENTINELS):
                            found.append((table.name, column, text))
    finally:
        await db.dispose()
    return rows, found


async def test_no_sentinel_reaches_any_table_through_error_messages(
    make_app: Any, admin_database_url: str
) -> None:
    # GIVEN processors failing with sentinel values in their exception texts
    app: App = make_app("redact", tenant_id="acme", max_attempts=1)

    @app.processor("work", consumes="in")
    async def work(message: Message) -> Any:
        return _fail(message.payload["case"])

    await app.start()
    cases = ["card", "pydantic", "permanent", "reported"]
    for case in cases:
        await app.send("in", {"case": case}, message_id=f"m-{case}")

    # WHEN they are processed and settled
    deliveries = await app.consumer().receive("in", max_messages=10)
    outcomes = await app.process("in", deliveries)
    assert await app.settle("in", outcomes) == []

    # THEN every one is dead-lettered with its type and code recorded
    assert all(o.kind is OutcomeKind.DEAD_LETTER for o in outcomes)
    codes = {o.delivery.message_id: o.error.code for o in outcomes if o.error}
    assert codes == {
        "m-card": "UNEXPECTED_ERROR",
        "m-pydantic": "UNEXPECTED_ERROR",
        "m-permanent": "VALIDATION_ERROR",
        "m-reported": "UPSTREAM",
    }
    dead = {d.message_id: d for d in await app.transport.list_dead_letters("in")}  # type: ignore[union-attr]
    assert "ValueError: card *** for {'***': '***'}" in dead["m-card"].error_message
    assert "(at test_error_redaction.py:" in dead["m-card"].error_message
    assert "ValidationError: age: int_parsing" in dead["m-pydantic"].error_message
    assert dead["m-permanent"].error_message.startswith("PermanentError: unknown customer '***'")
    # AND no sentinel is in any text of any apix table (errors, dead letters, all the rest)
    rows, found = await _scan(admin_database_url)
    assert rows >= 4 and found == []  # the 4 errors at least: the scan saw every tenant


def test_redaction_removes_values_but_keeps_type_and_shape() -> None:
    # GIVEN exception texts with values of every kind the store must not keep
    texts = {
        ValueError(f"card {CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]}"): "ValueError: card ***",
        ValueError("call failed: Authorization: Bearer abc.def.ghi123"): "Bearer ***",
        RuntimeError("GET /x?api_key=SENTINEL123&q=1"): "api_key=***",
        KeyError("SENTINEL"): "KeyError: '***'",
        ValueError('client_secret="SENTINEL"'): 'client_secret="***"',
        ValueError("nul \x00 here"): "nul \\x00 here",
    }
    for exc, expected in texts.items():
        # WHEN redacted for storage
        stored = redact_error_message(exc)
        # THEN the value is gone and the shape stays
        assert expected in stored, stored
        assert "SENTINEL" not in stored and CARD not in stored and "\x00" not in stored
    assert len(redact_error_message(ValueError("x" * 10_000))) <= 2000


def test_a_topology_error_keeps_its_names_but_not_other_values() -> None:
    # GIVEN the topology error ctx.send raises (names checked against the name rule) and one
    # whose "queue" is not a name (a value from a payload, say)
    from apix_core.errors import TopologyError, names_only

    named = names_only(TopologyError("processor 'top' may send to ['x'], not 'y'"), "top", "x", "y")
    valued = names_only(
        TopologyError(f"processor 'top' may send to ['x'], not '{CARD} x'"), "top", "x", f"{CARD} x"
    )
    # WHEN redacted for storage
    # THEN the names stay readable, and a value that is no name is still removed
    assert redact_error_message(named) == (
        "TopologyError: processor 'top' may send to ['x'], not 'y'"
    )
    assert CARD not in redact_error_message(valued)
    assert "'***'" in redact_error_message(valued)
