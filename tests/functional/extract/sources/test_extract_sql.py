"""The SQL query extractor on real SQLite and PostgreSQL: keyset pages, parameters, typed
errors, and incremental pipeline runs that load each row once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from apix_core.errors import TransientError
from apix_core.extract.base import ExtractorFactory
from apix_core.extract.exceptions import ExtractConfigError
from apix_core.extract.pipeline import PipelineManager
from apix_core.extract.sql import SqlConnectionError, SqlExtractor, SqlQueryError
from apix_core.store.database import Database

T0 = datetime(2026, 11, 28, tzinfo=UTC)


async def make_table(url: str, name: str, rows: list[tuple[int, datetime, str]]) -> None:
    """``name(id, updated_at, region)``: timestamptz on PostgreSQL, ISO text on SQLite. The
    source is another application's table: tests reach it as the superuser
    (``admin_database_url``), apix's own store as the application role."""
    engine = create_async_engine(url)
    pg = engine.dialect.name == "postgresql"
    async with engine.begin() as conn:
        ts = "timestamptz" if pg else "text"
        await conn.execute(
            sa.text(
                f"CREATE TABLE IF NOT EXISTS {name} "
                f"(id integer primary key, updated_at {ts} not null, region text not null)"
            )
        )
        await conn.execute(
            sa.text(f"INSERT INTO {name} (id, updated_at, region) VALUES (:id, :ts, :region)"),
            [
                {"id": i, "ts": ts_ if pg else ts_.isoformat(), "region": region}
                for i, ts_, region in rows
            ],
        )
    await engine.dispose()


def rows_of(ids: range, *, same_ts_every: int = 1) -> list[tuple[int, datetime, str]]:
    return [(i, T0 + timedelta(minutes=i // same_ts_every), "eu" if i % 2 else "us") for i in ids]


async def test_keyset_pages_read_every_row_once_in_cursor_order(admin_database_url: str) -> None:
    # GIVEN 25 rows where every 4 rows share a timestamp (page edges fall inside a group)
    await make_table(admin_database_url, "sql_keyset", rows_of(range(25), same_ts_every=4))
    extractor = ExtractorFactory.create(
        "sql",
        {
            "url": admin_database_url,
            "table": "sql_keyset",
            "cursor_column": "updated_at",
            "tiebreak_column": "id",
            "batch_size": 10,
        },
    )
    assert isinstance(extractor, SqlExtractor)
    # WHEN the whole table is streamed
    async with extractor:
        pages = [page async for page in extractor.extract_stream()]
    # THEN three pages carry every row exactly once, ordered, with JSON-ready values
    assert [len(p) for p in pages] == [10, 10, 5]
    ids = [r["id"] for p in pages for r in p]
    assert ids == list(range(25))
    first = pages[0][0]
    assert datetime.fromisoformat(first["updated_at"]) == T0
    json.dumps(pages)


async def test_query_parameters_come_from_the_inputs(admin_database_url: str) -> None:
    # GIVEN a query with a :region placeholder
    await make_table(admin_database_url, "sql_params", rows_of(range(20)))
    config = {
        "url": admin_database_url,
        "query": "SELECT id, region FROM sql_params WHERE region = :region;",
        "cursor_column": "id",
        "batch_size": 3,
    }
    async with ExtractorFactory.create("sql", config) as extractor:
        # WHEN it runs for two regions, and once without the parameter
        eu = await extractor.extract({"region": "eu"})
        both = await extractor.extract([{"region": "eu"}, {"region": "us"}])
        with pytest.raises(ExtractConfigError, match=r":region.*no 'region'"):
            await extractor.extract()
    # THEN each run reads just the rows the parameter selects
    assert [r["id"] for r in eu] == list(range(1, 20, 2))
    assert len(both) == 20


async def test_bad_sql_is_a_typed_permanent_error(database_url: str) -> None:
    async with ExtractorFactory.create(
        "sql", {"url": database_url, "table": "no_such_table_here", "cursor_column": "id"}
    ) as extractor:
        with pytest.raises(SqlQueryError, match="query failed"):
            await extractor.extract()


def test_config_needs_exactly_one_source_and_plain_identifiers() -> None:
    with pytest.raises(ExtractConfigError, match="exactly one of `table` or `query`"):
        ExtractorFactory.create("sql", {"url": "sqlite:///x.db", "cursor_column": "id"})
    with pytest.raises(ExtractConfigError, match="cursor_column"):
        ExtractorFactory.create(
            "sql", {"url": "sqlite:///x.db", "table": "t", "cursor_column": "id; drop table t"}
        )


SQL_PIPELINE = """\
pipeline_id: sql-orders
extractor:
  class: sql
  url: {url}
  table: sql_incremental
  cursor_column: updated_at
  tiebreak_column: id
  batch_size: 7
output:
  type: jsonl
  config:
    path: {out}
watermark:
  field: updated_at
  initial_value: "2026-01-01T00:00:00+00:00"
  max_lateness: 0
"""


def read_ids(root: Path) -> list[int]:
    return sorted(
        json.loads(line)["id"]
        for path in root.rglob("*.jsonl")
        if not path.name.startswith(".")
        for line in path.read_text().splitlines()
    )


async def test_incremental_runs_load_each_row_once(
    admin_database_url: str, db: Database, tmp_path: Path
) -> None:
    # GIVEN a table of 30 rows and an incremental pipeline over it
    await make_table(admin_database_url, "sql_incremental", rows_of(range(30)))
    out = tmp_path / "out"
    manager = PipelineManager(database=db, tenant_id="acme")
    manager.register_pipeline(SQL_PIPELINE.format(url=admin_database_url, out=out))
    # WHEN it runs, 5 rows arrive (one at the last timestamp already loaded), and it runs again
    first = await manager.execute_pipeline("sql-orders")
    last_ts = T0 + timedelta(minutes=29)
    later: list[tuple[int, datetime, str]] = [(100, last_ts, "eu")]
    later += [(101 + i, last_ts + timedelta(hours=1, minutes=i), "us") for i in range(4)]
    await make_table(admin_database_url, "sql_incremental", later)
    second = await manager.execute_pipeline("sql-orders")
    third = await manager.execute_pipeline("sql-orders")
    # THEN every row is written exactly once and the second run read only the new rows
    assert first.records_written == 30
    assert second.records_written == 5
    assert second.records_extracted <= 6  # from the watermark on, not the whole table
    assert third.records_written == 0
    assert read_ids(out) == [*range(30), *range(100, 105)]
    stored = await manager.watermark("sql-orders")
    assert datetime.fromisoformat(str(stored.last_value)) == last_ts + timedelta(hours=1, minutes=3)


async def test_an_unreachable_database_is_a_transient_error() -> None:
    # GIVEN a PostgreSQL URL on a loopback port where nothing listens
    config = {"url": "postgresql://postgres@127.0.0.1:1/test", "table": "t", "cursor_column": "id"}
    async with ExtractorFactory.create("sql", config) as extractor:
        # WHEN it extracts, THEN a transient error a retry may fix
        with pytest.raises(SqlConnectionError, match="cannot reach the database") as caught:
            await extractor.extract()
    assert isinstance(caught.value, TransientError)
