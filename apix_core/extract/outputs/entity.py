"""Records as entity metadata through the core's entity service (never their content).

Each record becomes an entity ``(canonical_type, source, external_id)`` — ``external_id`` read
at the ``key`` path — with the content hash of the record. The core's planner gives what
processors get: a new version when the content changed, duplicate detection when it did not
(no new version), and the state transitions of ``state``. One transaction per output batch;
inside a processor (``ctx=``) the entities go through ``ctx.persist_entity`` instead, into the
message's own transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from apix_core.extract.base import OutputFactory, OutputResult, Record
from apix_core.extract.config import OutputBatchConfig, parse_config
from apix_core.extract.incremental import get_path
from apix_core.extract.outputs.buffered import BufferedOutput
from apix_core.extract.outputs.queue import record_key
from apix_core.hashing import content_hash, entity_id_for
from apix_core.store.database import Database
from apix_core.store.types import (
    CANONICAL_TYPE_LENGTH,
    EXTERNAL_ID_LENGTH,
    SOURCE_LENGTH,
    EntityWriteBatch,
    PendingEntity,
)
from apix_core.tenancy import check_tenant_id, require_tenant

if TYPE_CHECKING:
    from apix_core.context import ProcessorContext


class EntityOutputConfig(BaseModel):
    """``canonical_type`` and ``source`` name the entities; ``key`` is the record's external
    id path; ``attributes`` lists record fields (dotted paths) kept as attributes — identifiers
    and flags, not content; ``state`` is the state new versions get."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    canonical_type: str = Field(min_length=1, max_length=CANONICAL_TYPE_LENGTH)
    source: str = Field(min_length=1, max_length=SOURCE_LENGTH)
    key: str | list[str] = "id"
    attributes: list[str] = Field(default_factory=list)
    state: str | None = None
    tenant_id: str | None = None
    batch: OutputBatchConfig = Field(default_factory=lambda: OutputBatchConfig(batch_size=500))


@OutputFactory.register("entity")
class EntityOutput(BufferedOutput):
    """Entity metadata (content hash, versions, duplicates) for each record."""

    config_model = EntityOutputConfig

    def __init__(
        self,
        config: EntityOutputConfig | dict[str, Any] | None = None,
        *,
        database: Database | None = None,
        ctx: ProcessorContext | None = None,
        pipeline_id: str = "extract",
        **kwargs: Any,
    ) -> None:
        if not isinstance(config, EntityOutputConfig):
            config = parse_config(EntityOutputConfig, {**(config or {}), **kwargs}, where="output")
        super().__init__(config.batch)
        if database is None and ctx is None:
            from apix_core.errors import ConfigurationError

            raise ConfigurationError(
                "the entity output writes to the metadata store: pass database= (or ctx= "
                "inside a processor)"
            )
        self.ctx = ctx
        self.config = config
        self.db = database
        self.pipeline_id = pipeline_id
        keys = [config.key] if isinstance(config.key, str) else list(config.key)
        self._paths = [tuple(p for p in k.split(".") if p) for k in keys]
        self._attr_paths = [(a, tuple(a.split("."))) for a in config.attributes]
        self._pending: list[PendingEntity] = []
        self._in_ctx = 0
        self.created = 0
        self.versions = 0
        self.duplicates = 0

    def _tenant(self) -> str:
        if self.ctx is not None:
            return self.ctx.tenant_id
        return check_tenant_id(self.config.tenant_id) if self.config.tenant_id else require_tenant()

    def _accept(self, records: list[Record]) -> int:
        tenant = self._tenant()
        cfg = self.config
        for record in records:
            external_id = record_key(record, self._paths, cfg.key)[:EXTERNAL_ID_LENGTH]
            attributes: dict[str, Any] = {}
            for name, path in self._attr_paths:
                try:
                    attributes[name] = get_path(record, path)
                except (KeyError, IndexError, TypeError):
                    continue
            if self.ctx is not None:
                # Buffered by the context: written, deduplicated and versioned at commit.
                self.ctx.persist_entity(
                    external_id,
                    cfg.canonical_type,
                    cfg.source,
                    record,
                    state=cfg.state,
                    **attributes,
                )
                self._in_ctx += 1
                continue
            self._pending.append(
                PendingEntity(
                    id=entity_id_for(tenant, cfg.canonical_type, cfg.source, external_id),
                    external_id=external_id,
                    canonical_type=cfg.canonical_type,
                    source=cfg.source,
                    content_hash=content_hash(record),
                    attributes=attributes,
                    state=cfg.state,
                    processor=f"extract:{self.pipeline_id}"[:100],
                    message_id=self.pipeline_id,
                )
            )
        return 0

    async def _flush(self) -> OutputResult:
        from apix_core.store.entities import apply_entity_writes

        pending, self._pending = self._pending, []
        if self.ctx is not None:
            count, self._in_ctx = self._in_ctx, 0
            return OutputResult(
                records_written=count,
                batches_written=1,
                locations=[f"entities:{self.config.canonical_type}/{self.config.source}"],
            )
        tenant = self._tenant()
        assert self.db is not None
        async with self.db.transaction(tenant_id=tenant) as conn:
            results = await apply_entity_writes(
                conn,
                tenant,
                EntityWriteBatch(entities=pending),
                duplicate_detection=True,
                state_tracking=self.config.state is not None,
                lock_rows=self.db.is_postgres,
            )
        created = sum(1 for r in results.values() if r.created)
        duplicates = sum(1 for r in results.values() if r.duplicate)
        self.created += created
        self.duplicates += duplicates
        self.versions += len(results) - created - duplicates
        return OutputResult(
            records_written=len(pending),
            batches_written=1,
            locations=[f"entities:{self.config.canonical_type}/{self.config.source}"],
            details={
                "created": self.created,
                "new_versions": self.versions,
                "duplicates": self.duplicates,
            },
        )
