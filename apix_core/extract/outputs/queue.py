"""Records as apix messages on a queue, for processors to consume.

Each record's message id is derived from the pipeline, the queue, the record's key (``key``: a
dotted path, or several) and — unless ``id_from: key`` — its content hash. A re-run of an
extraction that meets the same record again sends the same id, which the queue and the
consuming processor's idempotency record both drop: no downstream work is duplicated. A record
whose content changed gets a new id (it is new work); ``id_from: key`` makes the key alone
decide (first version wins).

Outside a processor the messages go through ``App.send_many`` (pass ``app=``). Inside one
(``ctx=``), they become the processor's outputs (``ctx.send``): written to the outbox in the
message's transaction, together with the watermark, and dispatched after commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from apix_core.errors import ConfigurationError, PermanentError
from apix_core.extract.base import OutputFactory, OutputResult, Record
from apix_core.extract.config import OutputBatchConfig, parse_config
from apix_core.extract.exceptions import ExtractError
from apix_core.extract.incremental import get_path
from apix_core.extract.outputs.buffered import BufferedOutput
from apix_core.hashing import canonical_json, content_hash, deterministic_id

if TYPE_CHECKING:
    from apix_core.app import App
    from apix_core.context import ProcessorContext


class RecordKeyError(ExtractError, PermanentError):
    """A record has no value at the configured key path."""

    code = "EXTRACT_RECORD_KEY"


class QueueOutputConfig(BaseModel):
    """``queue``: the destination; ``key``: the record's key path(s); ``id_from``:
    ``key+content`` (default) or ``key``; ``tenant_id``: defaults to the app's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: str
    key: str | list[str] = "id"
    id_from: Literal["key+content", "key"] = "key+content"
    tenant_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    batch: OutputBatchConfig = Field(default_factory=lambda: OutputBatchConfig(batch_size=500))


def record_key(record: Record, paths: list[tuple[str, ...]], spec: Any) -> str:
    """The record's key as text (several paths joined as canonical JSON)."""
    try:
        values = [get_path(record, p) for p in paths]
    except (KeyError, IndexError, TypeError):
        raise RecordKeyError(
            f"record has no key at {spec!r} (its keys: "
            f"{sorted(record)[:10] if isinstance(record, dict) else '-'})"
        ) from None
    if len(values) == 1 and isinstance(values[0], str | int):
        return str(values[0])
    return canonical_json(values)


@OutputFactory.register("queue")
class QueueOutput(BufferedOutput):
    """Records to a queue as apix messages with ids derived from the records."""

    config_model = QueueOutputConfig

    def __init__(
        self,
        config: QueueOutputConfig | dict[str, Any] | None = None,
        *,
        app: App | None = None,
        ctx: ProcessorContext | None = None,
        pipeline_id: str = "extract",
        **kwargs: Any,
    ) -> None:
        if not isinstance(config, QueueOutputConfig):
            config = parse_config(QueueOutputConfig, {**(config or {}), **kwargs}, where="output")
        super().__init__(config.batch)
        if app is None and ctx is None:
            raise ConfigurationError(
                "the queue output sends through an App: pass app= (outside a processor) or "
                "ctx= (inside one)"
            )
        self.config = config
        self.app = app
        self.ctx = ctx
        self.pipeline_id = pipeline_id
        keys = [config.key] if isinstance(config.key, str) else list(config.key)
        self._paths = [tuple(p for p in k.split(".") if p) for k in keys]
        self._pending: list[tuple[str, Record]] = []

    def _tenant(self) -> str:
        if self.ctx is not None:
            return self.ctx.tenant_id
        tenant = self.config.tenant_id
        if tenant is None:
            from apix_core.tenancy import current_tenant

            assert self.app is not None
            tenant = current_tenant() or self.app.settings.tenant_id
        if not tenant:
            raise ConfigurationError(
                "the queue output needs a tenant: tenant_id in its config, tenant_context() "
                "or APIX_TENANT_ID"
            )
        return tenant

    def message_id(self, record: Record, tenant: str) -> str:
        key = record_key(record, self._paths, self.config.key)
        parts = ["extract", tenant, self.pipeline_id, self.config.queue, key]
        if self.config.id_from == "key+content":
            parts.append(content_hash(record))
        return deterministic_id(*parts)

    def _accept(self, records: list[Record]) -> int:
        tenant = self._tenant()
        for record in records:
            self._pending.append((self.message_id(record, tenant), record))
        return 0  # sized by the transport's own check when sent

    async def _flush(self) -> OutputResult:
        pending, self._pending = self._pending, []
        queue = self.config.queue
        if self.ctx is not None:
            for _, record in pending:
                self.ctx.send(queue, record, metadata=dict(self.config.metadata))
        else:
            assert self.app is not None
            await self.app.send_many(
                queue,
                [record for _, record in pending],
                tenant_id=self._tenant(),
                message_ids=[mid for mid, _ in pending],
                metadata=dict(self.config.metadata),
            )
        return OutputResult(
            records_written=len(pending), batches_written=1, locations=[f"queue:{queue}"]
        )
