"""Per-tenant transactional state (apix_core.store.state) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from apix_core import tenant_context
from apix_core.cli.main import cli
from apix_core.errors import ApixError, TenantRequiredError
from apix_core.store.database import Database
from apix_core.store.models import state as state_table
from apix_core.store.retention import RetentionPolicy, prune
from apix_core.store.state import (
    MAX_STATE_VALUE_BYTES,
    InvalidStateError,
    SqlStateStore,
    StateConflictError,
    StateEntry,
    StateRepository,
    StateStore,
)


def _head() -> str:
    """The newest migration (state arrived in 0004; later revisions keep it)."""
    from alembic.script import ScriptDirectory

    from apix_core.store.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None and head >= "0004"
    return head


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.upgrade()
    yield database
    await database.dispose()


async def _put(db: Database, tenant: str, namespace: str, key: str, value: Any) -> StateEntry:
    async with db.transaction(tenant_id=tenant) as conn:
        return await SqlStateStore(conn, tenant).put(namespace, key, value)


async def _get(db: Database, tenant: str, namespace: str, key: str) -> StateEntry | None:
    async with db.transaction(tenant_id=tenant, write=False) as conn:
        return await SqlStateStore(conn, tenant).get(namespace, key)


async def test_put_then_get_round_trips_json_and_counts_versions(db: Database) -> None:
    # GIVEN an empty store
    value = {"since": "2026-11-01T00:00:00Z", "page": [1, 2.5, None, True], "ü": "naïve ✓"}
    before = datetime.now(UTC)

    # WHEN a key is written twice, each in its own committed transaction
    first = await _put(db, "acme", "extract.orders", "watermark", value)
    second = await _put(db, "acme", "extract.orders", "watermark", {"since": "later"})
    read = await _get(db, "acme", "extract.orders", "watermark")

    # THEN versions start at 1 and grow by one; the last value reads back as written
    assert first.version == 1 and first.value == value
    assert second.version == 2
    assert read is not None
    assert (read.namespace, read.key, read.value, read.version) == (
        "extract.orders",
        "watermark",
        {"since": "later"},
        2,
    )
    assert before - timedelta(seconds=1) <= read.updated_at <= datetime.now(UTC)
    assert await _get(db, "acme", "extract.orders", "other") is None


@pytest.mark.parametrize(
    "value", [None, 0, -5, 1.0, 0.1, 2**70, "", "123", "true", [], {}, False, "x" * 1000]
)
async def test_any_json_value_including_null_is_an_entry(db: Database, value: Any) -> None:
    # GIVEN a JSON scalar, an empty container or JSON null
    # WHEN it is stored and read back
    await _put(db, "acme", "ns", "k", value)
    entry = await _get(db, "acme", "ns", "k")

    # THEN the entry exists (null is a value, not an absence) and holds the same value
    assert entry is not None
    assert entry.value == value and type(entry.value) is type(value)


async def test_compare_and_set(db: Database) -> None:
    async with db.transaction(tenant_id="acme") as conn:
        store = SqlStateStore(conn, "acme")
        # GIVEN nothing stored: "must not exist" (0) creates, a version expects one
        created = await store.put("ns", "cursor", "a", expected_version=0)
        with pytest.raises(StateConflictError) as absent:
            await store.put("ns", "missing", "a", expected_version=1)

        # WHEN the right version is expected, then a stale one, then 0 again
        moved = await store.put("ns", "cursor", "b", expected_version=1)
        with pytest.raises(StateConflictError) as stale:
            await store.put("ns", "cursor", "c", expected_version=1)
        with pytest.raises(StateConflictError) as exists:
            await store.put("ns", "cursor", "d", expected_version=0)
        current = await store.get("ns", "cursor")

    # THEN only the matching writes happened; conflicts are typed, retryable and say why
    assert created.version == 1 and moved.version == 2
    assert current is not None and (current.value, current.version) == ("b", 2)
    assert await _get(db, "acme", "ns", "missing") is None
    assert (stale.value.expected, stale.value.actual) == (1, 2)
    assert (exists.value.expected, exists.value.actual) == (0, 2)
    assert absent.value.actual is None
    err = stale.value
    assert isinstance(err, ApixError) and err.code == "STATE_CONFLICT" and err.retryable
    assert "'ns'/'cursor'" in str(err) and "expected version 1, found version 2" in str(err)


async def test_concurrent_compare_and_set_lets_exactly_one_writer_win(db: Database) -> None:
    # GIVEN a cursor at version 1
    await _put(db, "acme", "ns", "cursor", 0)

    async def advance(to: int) -> str:
        try:
            async with db.transaction(tenant_id="acme") as conn:
                await SqlStateStore(conn, "acme").put("ns", "cursor", to, expected_version=1)
                # Hold the transaction so the writers overlap (PostgreSQL: the row lock waits).
                await asyncio.sleep(0.05)
        except StateConflictError:
            return "conflict"
        return "won"

    # WHEN five writers advance it from version 1 at the same time
    outcomes = await asyncio.gather(*(advance(i) for i in range(1, 6)))

    # THEN one wins, the others get a conflict, and the version moved once
    assert sorted(outcomes) == ["conflict"] * 4 + ["won"]
    entry = await _get(db, "acme", "ns", "cursor")
    assert entry is not None and entry.version == 2 and entry.value != 0


async def test_delete_and_list_with_prefix(db: Database) -> None:
    async with db.transaction(tenant_id="acme") as conn:
        store = SqlStateStore(conn, "acme")
        # GIVEN keys in two namespaces, some sharing a prefix (and one differing only in case)
        keys = ("page:2", "page:10", "Page:1", "pages", "cursor", "page_x", "page%", "ñ:1", "n:1")
        for key in keys:
            await store.put("extract", key, key)
        await store.put("other", "page:1", "elsewhere")

        # WHEN listing with and without prefix, and deleting
        everything = await store.list("extract")
        pages = await store.list("extract", prefix="page:")
        literal = await store.list("extract", prefix="page%")
        accented = await store.list("extract", prefix="ñ")
        deleted = await store.delete("extract", "cursor")
        deleted_again = await store.delete("extract", "cursor")
        after = await store.list("extract", prefix="c")

    # THEN the prefix is literal and case-sensitive, ordering is by key, deletes say if they did
    assert [e.key for e in everything] == [
        "Page:1",
        "cursor",
        "n:1",
        "page%",
        "page:10",
        "page:2",
        "page_x",
        "pages",
        "ñ:1",
    ]
    assert [e.key for e in pages] == ["page:10", "page:2"]
    assert all(e.namespace == "extract" and e.value == e.key for e in pages)
    assert [e.key for e in literal] == ["page%"]
    assert [e.key for e in accented] == ["ñ:1"]
    assert (deleted, deleted_again, after) == (True, False, [])


async def test_rolled_back_transaction_leaves_no_state(db: Database) -> None:
    # GIVEN a watermark at version 1
    await _put(db, "acme", "ns", "watermark", "t1")

    # WHEN a processing transaction moves it, adds a key, deletes another, and then fails
    await _put(db, "acme", "ns", "gone", 1)
    with pytest.raises(RuntimeError, match="processor crashed"):
        async with db.transaction(tenant_id="acme") as conn:
            store = SqlStateStore(conn, "acme")
            await store.put("ns", "watermark", "t2")
            await store.put("ns", "new", "x")
            await store.delete("ns", "gone")
            raise RuntimeError("processor crashed")

    # THEN nothing of it is stored
    watermark = await _get(db, "acme", "ns", "watermark")
    assert watermark is not None and (watermark.value, watermark.version) == ("t1", 1)
    assert await _get(db, "acme", "ns", "new") is None
    assert await _get(db, "acme", "ns", "gone") is not None


async def test_tenants_with_the_same_key_are_independent(db: Database) -> None:
    # GIVEN two tenants writing the same namespace and key
    await _put(db, "tenant-a", "ns", "watermark", "a1")
    await _put(db, "tenant-b", "ns", "watermark", "b1")
    await _put(db, "tenant-b", "ns", "watermark", "b2")

    # WHEN tenant A deletes it and each lists its namespace
    async with db.transaction(tenant_id="tenant-a") as conn:
        store = SqlStateStore(conn, "tenant-a")
        listed_a = await store.list("ns")
        assert await store.delete("ns", "watermark") is True
    b = await _get(db, "tenant-b", "ns", "watermark")

    # THEN each saw only its own value and version; B's survives A's delete
    assert [(e.value, e.version) for e in listed_a] == [("a1", 1)]
    assert b is not None and (b.value, b.version) == ("b2", 2)
    assert await _get(db, "tenant-a", "ns", "watermark") is None


def _nested(depth: int) -> list[Any]:
    value: list[Any] = [1]
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (datetime(2026, 1, 1, tzinfo=UTC), "value is a datetime"),
        ({"since": Decimal("1.5")}, "value['since'] is a Decimal"),
        ({"a": [1, {2: "x"}]}, "value['a'][1] has the int key 2"),
        ((1, 2), "value is a tuple"),
        ({"s": {1, 2}}, "value['s'] is a set"),
        ([float("nan")], "value[0] is nan (not finite)"),
        ({"x": float("inf")}, "value['x'] is inf (not finite)"),
        (b"bytes", "value is a bytes"),
        (_nested(33), "nested deeper than 32 levels"),
    ],
)
async def test_values_that_are_not_plain_json_are_refused_naming_the_key(
    db: Database, value: Any, problem: str
) -> None:
    # GIVEN a value JSON cannot hold as it is
    # WHEN it is put
    async with db.transaction(tenant_id="acme") as conn:
        with pytest.raises(InvalidStateError) as info:
            await SqlStateStore(conn, "acme").put("ns", "watermark", value)

    # THEN a typed error names the key and the offending part; nothing was written
    assert "'watermark'" in str(info.value) and problem in str(info.value)
    assert info.value.code == "INVALID_STATE" and not info.value.retryable
    assert await _get(db, "acme", "ns", "watermark") is None


async def test_circular_value_is_refused(db: Database) -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    async with db.transaction(tenant_id="acme") as conn:
        with pytest.raises(InvalidStateError, match="circular"):
            await SqlStateStore(conn, "acme").put("ns", "k", loop)


async def test_value_size_is_bounded(db: Database) -> None:
    # GIVEN a value exactly at the limit (encoded as stored: '"' + text + '"') and one over
    at_limit = "x" * (MAX_STATE_VALUE_BYTES - 2)
    over = "x" * (MAX_STATE_VALUE_BYTES - 1)

    # WHEN both are put
    entry = await _put(db, "acme", "ns", "big", at_limit)
    async with db.transaction(tenant_id="acme") as conn:
        with pytest.raises(InvalidStateError, match=r"'big2' is 65537 bytes .* 65536-byte limit"):
            await SqlStateStore(conn, "acme").put("ns", "big2", over)

    # THEN the first is stored whole, the second refused
    stored = await _get(db, "acme", "ns", "big")
    assert entry.version == 1 and stored is not None and stored.value == at_limit
    assert await _get(db, "acme", "ns", "big2") is None


@pytest.mark.parametrize(
    ("namespace", "key", "match"),
    [
        ("", "k", "namespace must be a non-empty str"),
        ("ns", "", "key must be a non-empty str"),
        ("n" * 201, "k", "namespace 'nnnn.*201 characters, more than 200"),
        ("ns", "k" * 501, "key 'kkkk.*501 characters, more than 500"),
        ("ns", "a\x00b", "NUL"),
        ("ns", 7, "key must be a non-empty str, not 7"),
    ],
)
async def test_bad_namespaces_and_keys_are_typed_errors(
    db: Database, namespace: Any, key: Any, match: str
) -> None:
    async with db.transaction(tenant_id="acme") as conn:
        store = SqlStateStore(conn, "acme")
        with pytest.raises(InvalidStateError, match=match):
            await store.put(namespace, key, 1)
        with pytest.raises(InvalidStateError, match=match):
            await store.get(namespace, key)


@pytest.mark.parametrize("expected", [-1, True, "1", 1.0])
async def test_bad_expected_version_is_a_typed_error(db: Database, expected: Any) -> None:
    async with db.transaction(tenant_id="acme") as conn:
        with pytest.raises(InvalidStateError, match="expected_version must be an int >= 0"):
            await SqlStateStore(conn, "acme").put("ns", "k", 1, expected_version=expected)


async def test_store_needs_a_valid_tenant(db: Database) -> None:
    async with db.transaction(write=False) as conn:
        with pytest.raises(TenantRequiredError):
            SqlStateStore(conn, "")
        with pytest.raises(TenantRequiredError, match="invalid tenant id"):
            SqlStateStore(conn, "a/b")


async def test_sql_store_implements_the_interface(db: Database) -> None:
    async with db.transaction(tenant_id="acme", write=False) as conn:
        store: StateStore = SqlStateStore(conn, "acme")
        assert isinstance(store, StateStore)


async def test_repository_lists_gets_and_resets_the_scoped_tenant(db: Database) -> None:
    # GIVEN state of two tenants in two namespaces
    for tenant in ("tenant-a", "tenant-b"):
        for namespace, key in (
            ("extract.orders", "watermark"),
            ("extract.orders", "page"),
            ("extract.users", "watermark"),
        ):
            await _put(db, tenant, namespace, key, f"{tenant}:{key}")
    repo = StateRepository(db)

    # WHEN tenant A lists, gets and resets through the repository
    with tenant_context("tenant-a"):
        everything = await repo.list()
        orders = await repo.list("extract.orders")
        page = await repo.get("extract.orders", "page")
        one = await repo.reset("extract.orders", "page")
        missing = await repo.reset("extract.orders", "page")
        whole = await repo.reset("extract.users")
        left = await repo.list()

    # THEN it saw and removed only its own rows; tenant B kept all of its state
    assert [(e.namespace, e.key) for e in everything] == [
        ("extract.orders", "page"),
        ("extract.orders", "watermark"),
        ("extract.users", "watermark"),
    ]
    assert {e.value for e in everything} == {"tenant-a:page", "tenant-a:watermark"}
    assert [e.key for e in orders] == ["page", "watermark"]
    assert page is not None and page.value == "tenant-a:page"
    assert (one, missing, whole) == (1, 0, 1)
    assert [(e.namespace, e.key) for e in left] == [("extract.orders", "watermark")]
    with tenant_context("tenant-b"):
        assert len(await repo.list()) == 3


async def test_repository_needs_a_tenant_in_scope(db: Database) -> None:
    with pytest.raises(TenantRequiredError):
        await StateRepository(db).list()


async def test_retention_never_prunes_state(db: Database) -> None:
    # GIVEN a watermark last written long ago
    await _put(db, "acme", "extract", "watermark", "2020-01-01")
    async with db.transaction(tenant_id="acme") as conn:
        await conn.execute(
            sa.update(state_table).values(updated_at=datetime(2020, 1, 1, tzinfo=UTC))
        )

    # WHEN retention prunes everything older than a day
    report = await prune(
        db, older_than=timedelta(days=1), policy=RetentionPolicy(idempotency=False)
    )

    # THEN the state row is still there: it is a live position, not history
    assert report.total == 0
    entry = await _get(db, "acme", "extract", "watermark")
    assert entry is not None and entry.value == "2020-01-01"


def _head() -> str:
    from alembic.script import ScriptDirectory

    from apix_core.store.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


# Python 3.12 deprecates sqlite3's default datetime adapter; apix registers explicit ones.
NO_DEFAULT_SQLITE_ADAPTER = pytest.mark.filterwarnings(
    "error:The default date(time)? adapter is deprecated:DeprecationWarning"
)


@NO_DEFAULT_SQLITE_ADAPTER
async def test_datetimes_in_raw_sql_keep_their_text_without_a_deprecation(backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("sqlite3's adapters")
    # GIVEN the embedded store's database, and datetimes bound to raw SQL (no column type)
    db = Database("sqlite+aiosqlite:///:memory:")
    aware = datetime(2026, 12, 1, 2, 3, 4, 5, tzinfo=UTC)
    try:
        # WHEN they are bound (on Python 3.12+ the default adapter would warn, here an error)
        async with db.connect() as conn:
            row = (
                await conn.execute(
                    sa.text("SELECT :aware, :naive, :day"),
                    {"aware": aware, "naive": datetime(2026, 12, 1), "day": aware.date()},
                )
            ).one()
    finally:
        await db.dispose()
    # THEN they are stored as the former default wrote them, so old rows still compare
    assert tuple(row) == ("2026-12-01 02:03:04.000005+00:00", "2026-12-01 00:00:00", "2026-12-01")


@NO_DEFAULT_SQLITE_ADAPTER
def test_db_upgrade_from_0003_adds_the_state_table(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database_url = empty_database_url  # migrations run as a role that may migrate

    # GIVEN a store at revision 0003 holding data
    async def at_0003() -> None:
        db = Database(database_url)
        try:
            await db.upgrade("0003")
            async with db.transaction(tenant_id="acme") as conn:
                await conn.execute(
                    sa.text(
                        "INSERT INTO apix_idempotency (tenant_id, processor, message_id, status, "
                        "created_at) VALUES ('acme', 'p', 'm', 'completed', :now)"
                    ),
                    {"now": datetime.now(UTC)},
                )
            async with db.connect() as conn:
                tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            assert "apix_state" not in tables
        finally:
            await db.dispose()

    asyncio.run(at_0003())

    # WHEN `apix db upgrade` runs
    monkeypatch.setenv("APIX_DATABASE_URL", database_url)
    monkeypatch.setenv("APIX_QUEUE_URL", database_url)
    result = CliRunner().invoke(cli, ["db", "upgrade"], catch_exceptions=False)

    # THEN the store is at head, the old rows are intact and state works
    assert result.exit_code == 0, result.output
    assert _head() in result.output

    async def check() -> tuple[str | None, int, StateEntry | None]:
        db = Database(database_url)
        try:
            await _put(db, "acme", "ns", "k", {"v": 1})
            async with db.transaction(tenant_id="acme", write=False) as conn:
                kept = (
                    await conn.execute(sa.text("SELECT count(*) FROM apix_idempotency"))
                ).scalar_one()
            return await db.current_revision(), int(kept), await _get(db, "acme", "ns", "k")
        finally:
            await db.dispose()

    revision, kept, entry = asyncio.run(check())
    assert revision == _head() and kept == 1
    assert entry is not None and entry.value == {"v": 1}


async def test_downgrade_to_0003_drops_the_state_table(admin_db: Database) -> None:
    db = admin_db  # only the schema's owner may downgrade it
    # GIVEN a store at head with state
    await _put(db, "acme", "ns", "k", 1)
    from alembic import command

    from apix_core.store.migrate import alembic_config

    # WHEN it is downgraded to 0003, then upgraded again
    await db.run_migration(lambda c: command.downgrade(alembic_config(c), "0003"))
    async with db.connect() as conn:
        tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    await db.upgrade()

    # THEN the table went away with its rows and comes back empty
    assert "apix_state" not in tables
    assert await db.current_revision() == _head()
    assert await _get(db, "acme", "ns", "k") is None
