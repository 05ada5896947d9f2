"""``PipelineManager``: one extractor to one output, incremental, resumable.

A pipeline (:class:`PipelineConfig`, or the YAML of :func:`load_pipeline_yaml`) names an
extractor, an output and optionally a watermark. A run streams the extractor's pages through
the incremental filter into the output; whenever the output has made everything it accepted
durable (an output batch flushed), the run may checkpoint: the watermark row (see
:mod:`apix_core.extract.watermarks`) gets the run's position — pages consumed, the output's
batch sequence, the filter's snapshot. The watermark itself (``last_value`` and its boundary
hashes) moves only when the run completes, after the last flush.

A run given a ``deadline`` (an invocation's end) stops before it, flushes, saves its position
and reports ``continued``; the next run of the pipeline resumes there — the pages already
consumed are skipped, the output continues its file sequence — so a time limit neither loses
nor repeats records. :meth:`PipelineManager.run_in_processor` does this inside a processor and
sends the continuation message.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from apix_core.errors import ConfigurationError, ProcessorContextError, TransientError
from apix_core.extract.base import (
    BaseExtractor,
    BaseOutput,
    ExtractorFactory,
    OutputFactory,
    OutputResult,
    Record,
)
from apix_core.extract.config import WatermarkConfig, _short, parse_config
from apix_core.extract.exceptions import ExtractConfigError, ExtractError
from apix_core.extract.incremental import Incremental, IncrementalRun
from apix_core.extract.outputs.buffered import BufferedOutput
from apix_core.extract.watermarks import DEFAULT_KEY, SqlWatermarks, Watermark, WatermarkStore
from apix_core.extract.yaml_files import line_of, raise_invalid, read_yaml
from apix_core.hashing import content_hash, deterministic_id

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from apix_core.app import App
    from apix_core.context import ProcessorContext
    from apix_core.store.database import Database


class PipelineBusyError(ExtractError, TransientError):
    """The pipeline has an interrupted run with other inputs; it must continue (or be reset)
    first. Transient: a later attempt finds the run finished."""

    code = "EXTRACT_PIPELINE_BUSY"


#: A run's inputs: one mapping of template values, or several (one extraction each).
Parameters = Mapping[str, Any] | list[Mapping[str, Any]] | None

#: Payload key of a continuation message (what :meth:`PipelineManager.run_in_processor` sends).
CONTINUATION_KEY = "apix_extract"


# -- configuration ----------------------------------------------------------------------------
class ExtractorSection(BaseModel):
    """``extractor:`` — ``class`` (or ``type``): a registered extractor name (default
    ``http``); ``config``: its config, or the keys inline. The shorthands ``batch_size`` and
    ``max_concurrent`` set the HTTP extractor's ``batch.batch_size`` and
    ``rate_limit.max_concurrent``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    kind: str = Field("http", alias="class")
    config: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _type_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "type" in data and "class" not in data:
            data = {**data, "class": data["type"]}
            data.pop("type")
        return data

    def settings(self) -> dict[str, Any]:
        inline = dict(self.model_extra or {})
        cfg = {**inline, **(self.config or {})}
        if self.kind == "http":
            if "batch_size" in cfg:
                cfg.setdefault("batch", {})["batch_size"] = cfg.pop("batch_size")
            if "max_concurrent" in cfg:
                cfg.setdefault("rate_limit", {})["max_concurrent"] = cfg.pop("max_concurrent")
        return cfg


class OutputSection(BaseModel):
    """``output:`` — ``type``: a registered output (``jsonl``, ``queue``, ``entity``; ``json``
    means the ``format`` in its config, default ``jsonl``); ``config``: its config."""

    model_config = ConfigDict(extra="forbid")

    type: str = "jsonl"
    config: dict[str, Any] = Field(default_factory=dict)

    def kind(self) -> str:
        if self.type == "json":
            return str(self.config.get("format", "jsonl"))
        return self.type


class PipelineConfig(BaseModel):
    """A pipeline as in YAML: ``pipeline_id``, ``extractor``, ``output``, optional
    ``watermark`` (``field``, ``initial_value``, ``end_value``, ``lookback``, ``max_lateness``,
    ``param``) and ``parameters`` (default inputs)."""

    model_config = ConfigDict(extra="forbid")

    pipeline_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")
    description: str | None = None
    extractor: ExtractorSection
    output: OutputSection
    watermark: WatermarkConfig | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    #: The YAML it was read from (file or "pipeline", root node), so that the extractor's and
    #: output's own configs, checked at registration, name their file and line too.
    _yaml: tuple[str, Any] | None = PrivateAttr(default=None)

    def locate(self, section: str) -> tuple[str, Callable[[list[Any]], int | None] | None]:
        """``(source, line_of)`` for :func:`parse_config` of ``section`` (``extractor`` or
        ``output``): a location in the section's config model → its line in the YAML."""
        if self._yaml is None:
            return "", None
        where, root = self._yaml
        if section == "output":
            return where, lambda loc: line_of(root, ["output", "config", *loc])
        written = self.extractor.config or {}
        # The HTTP extractor's shorthands, written inline (see ExtractorSection.settings).
        shorthand = {
            "batch.batch_size": "batch_size",
            "rate_limit.max_concurrent": "max_concurrent",
        }

        def extractor_line(loc: list[Any]) -> int | None:
            short = shorthand.get(".".join(map(str, loc[:2])))
            if short and short in (self.extractor.model_extra or {}):
                return line_of(root, ["extractor", short])
            if loc and loc[0] in written:
                return line_of(root, ["extractor", "config", *loc])
            return line_of(root, ["extractor", *loc])

        return where, extractor_line


def load_pipeline_yaml(source: str | Path) -> PipelineConfig:
    """A :class:`PipelineConfig` from YAML text or a ``.yaml``/``.yml`` file; an invalid one
    raises :class:`ExtractConfigError` naming the key, the value and its line."""
    where, root, data = read_yaml(source, "pipeline", "pipeline_id, extractor and output")
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise_invalid(exc, root, where, "pipeline", model=PipelineConfig)
    config._yaml = (where, root)
    return config


# -- runs ---------------------------------------------------------------------------------------
RunState = Literal["idle", "running", "completed", "continued", "failed"]


@dataclass
class RunResult:
    """One run: ``completed`` (watermark moved), ``continued`` (stopped before its deadline,
    position saved) or ``failed``."""

    pipeline_id: str
    status: RunState
    pages: int = 0
    records_extracted: int = 0
    records_written: int = 0
    late: int = 0
    duplicates: int = 0
    output: OutputResult = field(default_factory=OutputResult)
    watermark: Any = None
    error: str | None = None


@dataclass
class PipelineStatus:
    """What :meth:`PipelineManager.get_status` reports (in this process)."""

    pipeline_id: str
    state: RunState = "idle"
    runs: int = 0
    last_result: RunResult | None = None
    last_error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class OutputBuilder(Protocol):
    def __call__(self, **context: Any) -> BaseOutput: ...


@dataclass
class Pipeline:
    """A registered pipeline: how to build its extractor and output for a run."""

    pipeline_id: str
    make_extractor: Callable[[], BaseExtractor]
    make_output: OutputBuilder
    incremental: Incremental | None = None
    watermark_key: str = DEFAULT_KEY
    watermark_param: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


class _Checkpoints(Protocol):
    async def load(self, pipeline_id: str, key: str) -> Watermark: ...

    async def commit(
        self, previous: Watermark, *, last_value: Any, boundary: Any, position: Any
    ) -> Watermark: ...


class _InTransaction:
    """Watermarks written in a processor's own transaction (with its outbox rows)."""

    def __init__(self, conn: AsyncConnection, tenant_id: str) -> None:
        self.sql = SqlWatermarks(conn, tenant_id)

    async def load(self, pipeline_id: str, key: str) -> Watermark:
        return await self.sql.load(pipeline_id, key)

    async def commit(
        self, previous: Watermark, *, last_value: Any, boundary: Any, position: Any
    ) -> Watermark:
        return await self.sql.commit(
            previous, last_value=last_value, boundary=boundary, position=position
        )


class PipelineManager:
    """Registers pipelines and runs them.

    ``database`` (a :class:`~apix_core.store.database.Database`) keeps watermarks; with
    ``app=`` the app's store is used (after ``app.start()``) and the queue output sends through
    it. ``tenant_id`` (else :func:`apix_core.tenant_context`'s) scopes watermarks and outputs.
    """

    def __init__(
        self,
        *,
        database: Database | None = None,
        app: App | None = None,
        tenant_id: str | None = None,
        checkpoint_margin: float = 5.0,
    ) -> None:
        self._database = database
        self.app = app
        self.tenant_id = tenant_id
        #: Seconds kept free before a deadline: the run stops, flushes and saves its position.
        self.checkpoint_margin = checkpoint_margin
        self._pipelines: dict[str, Pipeline] = {}
        self._status: dict[str, PipelineStatus] = {}

    # -- registration -------------------------------------------------------------------------
    @property
    def database(self) -> Database:
        if self._database is not None:
            return self._database
        store = getattr(self.app, "store", None)
        if store is None:
            raise ConfigurationError(
                "PipelineManager keeps watermarks in the metadata store: pass database=, or "
                "app= after `await app.start()`"
            )
        db: Database = store.db
        return db

    def _database_or_none(self) -> Database | None:
        if self._database is not None:
            return self._database
        store = getattr(self.app, "store", None)
        return None if store is None else store.db

    def register_pipeline(
        self,
        config: PipelineConfig | Mapping[str, Any] | str | Path,
        *,
        extractor: BaseExtractor | Callable[[], BaseExtractor] | None = None,
        output: BaseOutput | OutputBuilder | None = None,
        incremental: Incremental | None = None,
    ) -> Pipeline:
        """Register a pipeline from a :class:`PipelineConfig`, a mapping, YAML (text or a
        path), or a bare ``pipeline_id`` with ``extractor=`` and ``output=`` objects (or
        factories: ``output`` may be called with ``run_id=``, ``seq=``, ``ctx=`` ...)."""
        if isinstance(config, str) and "\n" not in config and extractor is not None:
            pipeline_id, cfg = config, None
        else:
            if isinstance(config, Path | str):
                cfg = load_pipeline_yaml(config)
            elif isinstance(config, PipelineConfig):
                cfg = config
            else:
                try:
                    cfg = PipelineConfig.model_validate(dict(config))
                except ValidationError as exc:
                    err = exc.errors(include_url=False)[0]
                    key = ".".join(map(str, err["loc"]))
                    raise ExtractConfigError(
                        f"invalid pipeline: {key}: {err['msg']} (got {_short(err.get('input'))})",
                        key=key,
                        value=err.get("input"),
                    ) from None
            pipeline_id = cfg.pipeline_id
        if pipeline_id in self._pipelines:
            raise ConfigurationError(f"a pipeline {pipeline_id!r} is registered already")
        pipeline = self._build(pipeline_id, cfg, extractor, output, incremental)
        self._pipelines[pipeline_id] = pipeline
        self._status[pipeline_id] = PipelineStatus(pipeline_id)
        return pipeline

    def _build(
        self,
        pipeline_id: str,
        cfg: PipelineConfig | None,
        extractor: Any,
        output: Any,
        incremental: Incremental | None,
    ) -> Pipeline:
        if extractor is None:
            assert cfg is not None
            section = cfg.extractor
            settings = section.settings()
            cls = ExtractorFactory.get(section.kind)  # fails at registration on a bad name
            if cls.config_model is not None:
                source, lines = cfg.locate("extractor")
                parse_config(
                    cls.config_model, settings, where="extractor", source=source, line_of=lines
                )

            def make_extractor() -> BaseExtractor:
                # The store, for extractors that keep tokens there (OAuth2 via ApiTokenService).
                accepted = _accepted_by(cls, {"database": self._database_or_none()})
                return ExtractorFactory.create(section.kind, settings, **accepted)

        elif isinstance(extractor, BaseExtractor):
            instance = extractor

            def make_extractor() -> BaseExtractor:
                return instance

        else:
            make_extractor = extractor
        if output is None:
            assert cfg is not None
            kind, out_cfg = cfg.output.kind(), dict(cfg.output.config)
            if kind != "jsonl":
                out_cfg.pop("format", None)  # `type: json` + `format:` chose the kind
            out_cls = OutputFactory.get(kind)
            if out_cls.config_model is not None:
                source, lines = cfg.locate("output")
                parse_config(
                    out_cls.config_model,
                    out_cfg,
                    where="output.config",
                    source=source,
                    line_of=lines,
                )
            make_output: OutputBuilder = _output_builder(kind, out_cfg)
        elif isinstance(output, BaseOutput):
            instance_out = output

            def make_output(**_: Any) -> BaseOutput:
                return instance_out

        else:
            make_output = _accepting(output)
        watermark = cfg.watermark if cfg is not None else None
        if incremental is None and watermark is not None and watermark.enabled:
            incremental = _incremental_of(watermark)
        return Pipeline(
            pipeline_id,
            make_extractor,
            make_output,
            incremental,
            (watermark.key if watermark and watermark.key else DEFAULT_KEY),
            watermark.param if watermark else None,
            dict(cfg.parameters) if cfg is not None else {},
        )

    def get_pipeline(self, pipeline_id: str) -> Pipeline:
        try:
            return self._pipelines[pipeline_id]
        except KeyError:
            known = ", ".join(sorted(self._pipelines)) or "none"
            raise ConfigurationError(
                f"no pipeline {pipeline_id!r} is registered (registered: {known})"
            ) from None

    def get_status(self, pipeline_id: str) -> PipelineStatus:
        """The state of the pipeline's runs in this process (``idle`` before the first)."""
        self.get_pipeline(pipeline_id)
        return self._status[pipeline_id]

    async def watermark(self, pipeline_id: str) -> Watermark:
        """The stored watermark (and in-flight position) of the pipeline."""
        p = self.get_pipeline(pipeline_id)
        return await self._store().load(pipeline_id, p.watermark_key)

    def _store(self) -> WatermarkStore:
        from apix_core.tenancy import current_tenant

        tenant = self.tenant_id or current_tenant()
        if tenant is None and self.app is not None:
            tenant = self.app.settings.tenant_id
        return WatermarkStore(self.database, tenant)

    # -- running ------------------------------------------------------------------------------
    async def execute_pipeline(self, pipeline_id: str, parameters: Parameters = None) -> RunResult:
        """Run the pipeline to the end (all pages) and move its watermark."""
        return await self.execute_stream(pipeline_id, parameters)

    async def execute_stream(
        self,
        pipeline_id: str,
        parameters: Parameters = None,
        *,
        deadline: float | None = None,
    ) -> RunResult:
        """Stream pages into the output, checkpointing after each output batch; with
        ``deadline`` (``time.monotonic()`` based) stop before it and leave the position for the
        next run (``status == "continued"``)."""
        p = self.get_pipeline(pipeline_id)
        return await self._run(p, parameters, deadline, self._store(), {}, per_flush=True)

    async def write_output(self, pipeline_id: str, records: list[Record]) -> OutputResult:
        """Write ``records`` with the pipeline's output (its own batch files or messages); the
        watermark does not move."""
        p = self.get_pipeline(pipeline_id)
        output = p.make_output(
            **self._output_context(p, None, run_id_of(pipeline_id, time.time_ns()), 0)
        )
        try:
            result = await output.write(records)
        finally:
            await output.close()
        return result

    async def run_in_processor(
        self,
        ctx: ProcessorContext,
        pipeline_id: str,
        parameters: Parameters = None,
        *,
        continue_on: str,
    ) -> RunResult:
        """Run the pipeline inside a processor, bounded by the invocation's deadline.

        The watermark and position are written in the processor's transaction, so they commit
        with the message and its outputs (a queue output here is the processor's own outbox).
        A run that does not finish in time saves its position and sends a continuation message
        to ``continue_on`` (one of the processor's ``produces``; the queue whose consumer calls
        this again) — so every record is written exactly once across invocations.
        """
        p = self.get_pipeline(pipeline_id)
        if continue_on not in ctx.produces:
            raise ConfigurationError(
                f"run_in_processor(continue_on={continue_on!r}): declare it in the processor's "
                f"produces= (has {list(ctx.produces)})"
            )
        access = ctx._access
        if access is None:
            raise ProcessorContextError(
                "run_in_processor needs persistence (ProcessorConfig.enable_persistence): the "
                "watermark commits with the message"
            )
        state = await access.state()
        conn = getattr(state, "conn", None)
        if conn is None:
            raise ProcessorContextError(
                "run_in_processor needs a SQL metadata store (its transaction holds watermarks)"
            )
        params: Any = (
            [dict(item) for item in parameters]
            if isinstance(parameters, list)
            else dict(parameters or {})
        )
        result = await self._run(
            p,
            params,
            ctx.deadline,
            _InTransaction(conn, ctx.tenant_id),
            {"ctx": ctx},
            per_flush=False,
        )
        if result.status == "continued":
            ctx.send(
                continue_on,
                {CONTINUATION_KEY: {"pipeline_id": pipeline_id, "parameters": params}},
            )
        return result

    async def _run(
        self,
        p: Pipeline,
        parameters: Parameters,
        deadline: float | None,
        checkpoints: _Checkpoints,
        extra: dict[str, Any],
        *,
        per_flush: bool,
    ) -> RunResult:
        status = self._status[p.pipeline_id]
        status.state, status.started_at, status.finished_at = "running", _now(), None
        status.runs += 1
        result = RunResult(p.pipeline_id, "running")
        try:
            await self._stream(p, parameters, deadline, checkpoints, extra, per_flush, result)
        except BaseException as exc:
            result.status = "failed"
            result.error = f"{type(exc).__name__}: {exc}"
            status.last_error = result.error
            raise
        finally:
            status.state = result.status
            status.last_result = result
            status.finished_at = _now()
        return result

    async def _stream(
        self,
        p: Pipeline,
        parameters: Parameters,
        deadline: float | None,
        checkpoints: _Checkpoints,
        extra: dict[str, Any],
        per_flush: bool,
        result: RunResult,
    ) -> None:
        wm = await checkpoints.load(p.pipeline_id, p.watermark_key)
        position: dict[str, Any] = wm.position if isinstance(wm.position, dict) else {}
        # A rerun from the same stored version names its files (run_id, seq) alike.
        run_id = position.get("run_id") or run_id_of(p.pipeline_id, p.watermark_key, wm.version)
        run: IncrementalRun | None = None
        if p.incremental is not None:
            run = (
                IncrementalRun.restore(p.incremental, position["incremental"], p.pipeline_id)
                if "incremental" in position
                else p.incremental.start(wm)
            )
        inputs = self._inputs(p, parameters, run)
        inputs_hash = content_hash(inputs)[:16]
        if position and position.get("inputs") not in (None, inputs_hash):
            raise PipelineBusyError(
                f"pipeline {p.pipeline_id!r} has an interrupted run with other inputs: it "
                "continues first (same inputs), or reset its watermark to drop it"
            )
        output = p.make_output(**self._output_context(p, extra, run_id, position.get("seq", 0)))
        extractor = p.make_extractor()
        pages = int(position.get("pages", 0))
        # (pages consumed, request of the page after them) once everything before is durable.
        durable: tuple[int, Any] = (pages, position.get("next_request"))
        following: Any = durable[1]
        finished = False

        def position_now() -> dict[str, Any]:
            pos: dict[str, Any] = {"run_id": run_id, "pages": durable[0], "inputs": inputs_hash}
            if durable[1] is not None and durable[1] is not _UNKNOWN:
                pos["next_request"] = durable[1]
            seq = getattr(output, "seq", None)
            if seq is not None:
                pos["seq"] = seq
            if run is not None:
                pos["incremental"] = run.snapshot()
            return pos

        try:
            finished = True
            async for batch, following in _pages(extractor, inputs, position):
                pages += 1
                result.records_extracted += len(batch)
                kept = run.filter(batch) if run is not None else batch
                if isinstance(output, BufferedOutput):
                    # Batches run across pages (a page may end one batch and start the next);
                    # a checkpoint needs every record up to a page's end to be written.
                    result.output = result.output.merge(await output.feed(kept))
                    flushed = output.pending_records == 0
                else:
                    if kept:
                        result.output = result.output.merge(await output.write(kept))
                    flushed = True
                if flushed:
                    durable = (pages, following)
                    if per_flush:
                        wm = await checkpoints.commit(
                            wm,
                            last_value=wm.last_value,
                            boundary=wm.boundary,
                            position=position_now(),
                        )
                if deadline is not None and time.monotonic() >= deadline - self.checkpoint_margin:
                    # Stop here unless that was known to be the last page.
                    finished = following is None
                    break
            if isinstance(output, BufferedOutput):
                result.output = result.output.merge(await output.flush())
            durable = (pages, following)
            await output.close()
        finally:
            await extractor.close()
        result.pages = pages
        result.records_written = result.output.records_written
        if run is not None:
            result.late, result.duplicates = run.late, run.duplicates
        if not finished:
            result.status = "continued"
            await checkpoints.commit(
                wm, last_value=wm.last_value, boundary=wm.boundary, position=position_now()
            )
            result.watermark = wm.last_value
            return
        last_value, boundary = wm.last_value, list(wm.boundary)
        if run is not None and p.incremental is not None and p.incremental.end_value is None:
            last_value, boundary = run.state()
        await checkpoints.commit(wm, last_value=last_value, boundary=boundary, position=None)
        result.status = "completed"
        result.watermark = last_value

    def _inputs(
        self, p: Pipeline, parameters: Parameters, run: IncrementalRun | None
    ) -> dict[str, Any] | list[dict[str, Any]] | None:
        bound: dict[str, Any] = {}
        if run is not None and run.lower_bound is not None:
            # The extractor's templates may use {watermark} (e.g. params: {since: "{watermark}"}).
            bound["watermark"] = run.lower_bound
            if p.watermark_param:
                bound[p.watermark_param] = run.lower_bound
        if isinstance(parameters, list):
            # One extraction per mapping, one after the other (exact positions).
            return [{**p.parameters, **item, **bound} for item in parameters]
        inputs = {**p.parameters, **(parameters or {}), **bound}
        return inputs or None

    def _output_context(
        self, p: Pipeline, extra: dict[str, Any] | None, run_id: str, seq: int
    ) -> dict[str, Any]:
        context: dict[str, Any] = {"run_id": run_id, "seq": seq, "pipeline_id": p.pipeline_id}
        if self.app is not None:
            context["app"] = self.app
        database = self._database_or_none()
        if database is not None:
            context["database"] = database
        context.update(extra or {})
        return context


_UNKNOWN = "?"  # an extractor that cannot say which request comes next


async def _pages(
    extractor: BaseExtractor, inputs: Any, position: dict[str, Any]
) -> AsyncIterator[tuple[list[Record], Any]]:
    """The pages after ``position``, each with where the page after it starts (a JSON mapping
    ``{"input": i, "request": {...} or None}``; None after the last page; ``_UNKNOWN`` for
    extractors without ``iter_pages``).

    An extractor with ``iter_pages(input, resume=)`` (the HTTP extractor) resumes at the saved
    request. Several inputs are paginated one after the other, so a position is exact (pages of
    concurrent inputs would arrive in a different order on the next run). Any other extractor
    re-reads its stream and skips the pages already consumed: its pages must come in the same
    order every time.
    """
    done = int(position.get("pages", 0))
    saved = position.get("next_request")
    iter_pages = getattr(extractor, "iter_pages", None)
    if iter_pages is not None:
        from apix_core.extract.paginators import PageRequest

        items = list(inputs) if isinstance(inputs, list) else [inputs]
        # Consumed pages and nothing saved: the last page was consumed.
        first = int(saved["input"]) if saved is not None else (len(items) if done else 0)
        for index in range(first, len(items)):
            request = saved.get("request") if saved is not None and index == first else None
            resume = PageRequest(request["url"], request.get("params") or {}) if request else None
            async for page in iter_pages(items[index], resume=resume):
                nxt = page.next_request
                following: Any
                if nxt is not None:
                    req = {"url": nxt.url, "params": dict(nxt.params)}
                    following = {"input": index, "request": req}
                elif index + 1 < len(items):
                    following = {"input": index + 1, "request": None}
                else:
                    following = None
                yield page.records, following
        return
    seen = 0
    async for batch in extractor.extract_stream(inputs):
        seen += 1
        if seen > done:
            yield batch, _UNKNOWN


def run_id_of(*parts: Any) -> str:
    """A short id, the same for the same parts (a run's file names)."""
    return deterministic_id("extract-run", *map(str, parts))[:13].replace("-", "")


def _now() -> datetime:
    return datetime.now(UTC)


def _incremental_of(w: WatermarkConfig) -> Incremental:
    return Incremental.from_config(w)


def _accepting(factory: Callable[..., BaseOutput]) -> OutputBuilder:
    """``factory`` called with only the context keywords it declares."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return lambda **_: factory()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return lambda **context: factory(**context)
    names = set(params)
    return lambda **context: factory(**{k: v for k, v in context.items() if k in names})


def _output_builder(kind: str, config: dict[str, Any]) -> OutputBuilder:
    cls = OutputFactory.get(kind)

    def make(**context: Any) -> BaseOutput:
        return _create(cls, config, context)

    return make


def _accepted_by(cls: type[Any], context: dict[str, Any]) -> dict[str, Any]:
    """The keywords of ``context`` that ``cls`` takes (None values left out)."""
    params = inspect.signature(cls).parameters
    return {k: v for k, v in context.items() if k in params and v is not None}


def _create(cls: type[BaseOutput], config: dict[str, Any], context: dict[str, Any]) -> BaseOutput:
    return cls(dict(config), **_accepted_by(cls, context))  # type: ignore[call-arg]


__all__ = [
    "CONTINUATION_KEY",
    "ExtractorSection",
    "OutputSection",
    "Pipeline",
    "PipelineBusyError",
    "PipelineConfig",
    "PipelineManager",
    "PipelineStatus",
    "RunResult",
    "load_pipeline_yaml",
]
