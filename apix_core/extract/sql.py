"""The SQL query extractor: rows of a table or a SELECT, page by page with keyset pagination.

Each page is one short query ``... WHERE cursor > :last ORDER BY cursor LIMIT n`` (with a
``tiebreak_column`` when cursor values repeat), so no transaction stays open between pages and
a page costs the same at row 10 as at row 10 million (no ``OFFSET``). In a pipeline with a
``watermark``, the run's lower bound (the stored watermark minus the lookback) restricts the
``incremental_column`` (default: the cursor column) with ``>=``; the incremental filter drops
the rows at exactly the watermark that an earlier run already delivered.

Rows become JSON-ready records: datetimes, dates and times as ISO 8601 strings, decimals as
strings (exact), UUIDs as strings, bytes as base64.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from apix_core.errors import PermanentError, TransientError
from apix_core.extract.base import BaseExtractor, ExtractorFactory, Inputs, Record
from apix_core.extract.exceptions import ExtractConfigError, ExtractError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_PARAM = re.compile(r"(?<![:\w\\]):(\w+)")


class SqlQueryError(ExtractError, PermanentError):
    """The database rejected the query (syntax, unknown table or column, type mismatch)."""

    code: ClassVar[str] = "EXTRACT_SQL_QUERY"


class SqlConnectionError(ExtractError, TransientError):
    """The database could not be reached; a later attempt may succeed."""

    code: ClassVar[str] = "EXTRACT_SQL_UNREACHABLE"


class SqlExtractorConfig(BaseModel):
    """``url`` (``sqlite:///file.db``, ``postgresql://user@host/db``); ``table`` or ``query``
    (a SELECT whose ``:name`` placeholders come from the inputs); ``cursor_column`` (keyset
    order); ``tiebreak_column`` (a unique column, when cursor values repeat)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1)
    table: str | None = Field(None, pattern=rf"^{_IDENT}(\.{_IDENT})?$")
    query: str | None = None
    columns: list[str] | None = None
    cursor_column: str = Field(pattern=rf"^{_IDENT}$")
    tiebreak_column: str | None = Field(None, pattern=rf"^{_IDENT}$")
    #: The column the pipeline's watermark bounds (default: ``cursor_column``).
    incremental_column: str | None = Field(None, pattern=rf"^{_IDENT}$")
    #: The input holding the lower bound (the pipeline sets ``watermark``).
    watermark_param: str = "watermark"
    #: How the lower bound is bound: ``auto`` turns ISO 8601 strings into datetimes on
    #: PostgreSQL (timestamp columns) and keeps them as strings on SQLite (text columns).
    cursor_type: Literal["auto", "string", "number", "datetime"] = "auto"
    batch_size: int = Field(1000, ge=1, le=100_000)

    @model_validator(mode="after")
    def _one_source(self) -> SqlExtractorConfig:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of `table` or `query`")
        for name in self.columns or ():
            if not re.fullmatch(_IDENT, name):
                raise ValueError(f"columns: {name!r} is not a plain column name")
        return self


@ExtractorFactory.register("sql")
class SqlExtractor(BaseExtractor):
    """Rows of ``table`` or ``query`` in pages of ``batch_size``, ordered by the cursor."""

    config_model: ClassVar[type[BaseModel] | None] = SqlExtractorConfig

    def __init__(self, config: SqlExtractorConfig | Mapping[str, Any]) -> None:
        if not isinstance(config, SqlExtractorConfig):
            from apix_core.extract.config import parse_config

            config = parse_config(SqlExtractorConfig, config, where="sql extractor")
        self.config = config
        self._engine: AsyncEngine | None = None
        #: Pages and rows read by this instance (all its extractions).
        self.pages = 0
        self.rows = 0

    def _engine_now(self) -> AsyncEngine:
        if self._engine is None:
            from sqlalchemy.ext.asyncio import create_async_engine

            from apix_core.store.database import normalize_url

            try:
                url = normalize_url(self.config.url)
            except Exception as exc:
                raise ExtractConfigError(
                    f"sql extractor url: {exc}", key="url", value="<hidden>"
                ) from None
            self._engine = create_async_engine(url)
        return self._engine

    async def extract_stream(self, inputs: Inputs = None) -> AsyncIterator[list[Record]]:
        items = list(inputs) if isinstance(inputs, list) else [inputs or {}]
        for item in items:
            async for page in self._extract_one(dict(item)):
                yield page

    async def _extract_one(self, values: dict[str, Any]) -> AsyncIterator[list[Record]]:
        import sqlalchemy as sa

        cfg = self.config
        engine = self._engine_now()
        quote = engine.dialect.identifier_preparer.quote
        cursor = quote(cfg.cursor_column)
        tiebreak = quote(cfg.tiebreak_column) if cfg.tiebreak_column else None
        if cfg.query is not None:
            inner = cfg.query.strip().rstrip(";")
        else:
            assert cfg.table is not None
            table = ".".join(quote(part) for part in cfg.table.split("."))
            cols = ", ".join(quote(c) for c in cfg.columns) if cfg.columns else "*"
            inner = f"SELECT {cols} FROM {table}"
        params: dict[str, Any] = {}
        for name in dict.fromkeys(_PARAM.findall(inner)):
            if name not in values:
                raise ExtractConfigError(
                    f"sql extractor query uses :{name} but the inputs have no {name!r} "
                    f"(give it in the pipeline's parameters or --param {name}=...)",
                    key="query",
                    value=name,
                )
            params[name] = values[name]
        bound = values.get(cfg.watermark_param)
        where: list[str] = []
        if bound is not None:
            column = quote(cfg.incremental_column or cfg.cursor_column)
            where.append(f"{column} >= :apix_lower")
            params["apix_lower"] = self._bind(bound, engine.dialect.name)
        order = f"{cursor}, {tiebreak}" if tiebreak else cursor
        last: tuple[Any, Any] | None = None
        while True:
            conds = list(where)
            if last is not None:
                if tiebreak:
                    conds.append(
                        f"({cursor} > :apix_after OR ({cursor} = :apix_after "
                        f"AND {tiebreak} > :apix_after_tb))"
                    )
                    params["apix_after_tb"] = last[1]
                else:
                    conds.append(f"{cursor} > :apix_after")
                params["apix_after"] = last[0]
            sql = f"SELECT * FROM ({inner}) AS apix_src"
            if conds:
                sql += " WHERE " + " AND ".join(conds)
            sql += f" ORDER BY {order} LIMIT {int(cfg.batch_size)}"
            rows = await self._fetch(sa.text(sql), params)
            if not rows:
                return
            tail = rows[-1]
            tb = cfg.tiebreak_column
            last = (tail[cfg.cursor_column], tail[tb] if tb is not None else None)
            self.pages += 1
            self.rows += len(rows)
            yield [
                {k: v if type(v) in _PLAIN else _json_ready(v) for k, v in row.items()}
                for row in rows
            ]
            if len(rows) < cfg.batch_size:
                return

    async def _fetch(self, stmt: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
        import sqlalchemy as sa

        try:
            async with self._engine_now().connect() as conn:
                result = await conn.execute(stmt, params)
                return list(result.mappings().all())  # type: ignore[arg-type]
        except (OSError, TimeoutError) as exc:
            raise SqlConnectionError(f"sql extractor cannot reach the database: {exc}") from None
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise SqlConnectionError(f"sql extractor lost the connection: {exc.orig}") from None
            first = (str(exc.orig).strip().splitlines() or [""])[0]
            raise SqlQueryError(f"sql extractor query failed: {first}") from None

    def _bind(self, value: Any, dialect: str) -> Any:
        kind = self.config.cursor_type
        if kind == "string" or not isinstance(value, str):
            return value
        if kind == "number":
            return float(value) if "." in value else int(value)
        if kind == "datetime" or dialect == "postgresql":
            from apix_core.extract.incremental import comparable

            parsed = comparable(value, where="watermark")
            if isinstance(parsed, datetime):
                return parsed
            if kind == "datetime":
                raise ExtractConfigError(
                    f"sql extractor: watermark {value!r} is not an ISO 8601 datetime",
                    key="cursor_type",
                    value=kind,
                )
        return value

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()


#: Types a record keeps as they are (the common case, checked without a call).
_PLAIN = frozenset({int, str, float, bool, type(None)})


def _json_ready(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


__all__ = [
    "SqlConnectionError",
    "SqlExtractor",
    "SqlExtractorConfig",
    "SqlQueryError",
]
