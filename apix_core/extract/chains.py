"""Chains: several extractors in a row, each fed by the state the previous ones left.

A chain (:class:`ChainConfig`, or the YAML of :func:`load_chain_yaml`) lists steps. Each step
names an extractor (a registered name, or a class path ``package.module:Class``) and its config,
and says how it reads and writes the chain's state (a
:class:`~apix_core.extract.chain_state.ChainState`, immutable: every step returns a new one):

- ``input_mapping`` ``{extractor input: state key}`` — the extractor's template values;
- ``processing_mode`` — ``single``: one extraction with those values as they are;
  ``sequential`` / ``parallel``: one extraction per item — every mapped value that is a list is
  iterated (several lists are zipped, they must be of equal length), in order or concurrently
  (at most ``max_concurrency`` at once; records are kept in item order either way);
- ``output_mapping`` ``{record field: state key}`` — the state key gets the list of that field's
  values over the step's records (``"*"``: the records themselves; records without the field
  are skipped);
- ``error_policy`` — ``mode`` ``fail`` (the chain stops), ``continue`` (the failed items are
  reported, the chain goes on with the rest) or ``retry`` (``max_retries`` more attempts with
  ``backoff``, then fail). Errors that retrying cannot fix (a 404, a bad config) are not retried.

:class:`ChainExecutor` runs chains and returns a :class:`ChainReport` per run: per step its
status, item counts and each failed item with its inputs and why.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from apix_core.errors import ConfigurationError, PermanentError
from apix_core.extract.base import BaseExtractor, ExtractorFactory, Record
from apix_core.extract.chain_state import ChainState
from apix_core.extract.config import parse_config
from apix_core.extract.exceptions import ExtractConfigError, UnknownComponentError

ProcessingMode = Literal["single", "sequential", "parallel"]
StepStatus = Literal["succeeded", "partial", "failed", "skipped"]
ChainStatus = Literal["succeeded", "partial", "failed"]
ALL_RECORDS = "*"


# -- configuration ----------------------------------------------------------------------------
class ErrorPolicy(BaseModel):
    """What a failing item does: ``fail`` the chain, ``continue`` without it, or ``retry`` it
    (``max_retries`` more attempts, waits of ``backoff_seconds`` growing by ``backoff``, then
    fail). ``max_retries`` also applies to ``fail`` / ``continue`` when set."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["fail", "continue", "retry"] = "fail"
    max_retries: int | None = Field(None, ge=0, le=100)
    backoff: Literal["fixed", "exponential"] = "exponential"
    backoff_seconds: float = Field(0.5, ge=0, le=3600)
    max_backoff_seconds: float = Field(30.0, ge=0, le=3600)

    def retries(self) -> int:
        if self.max_retries is not None:
            return self.max_retries
        return 3 if self.mode == "retry" else 0

    def delay(self, retry: int) -> float:
        """Seconds to wait before the ``retry``-th retry (1-based)."""
        base = self.backoff_seconds
        wait = base * (2 ** (retry - 1)) if self.backoff == "exponential" else base
        return float(min(wait, self.max_backoff_seconds))


class ChainStep(BaseModel):
    """One step: ``extractor`` (or ``extractor_class``), its ``config``, ``processing_mode``,
    ``input_mapping``, ``output_mapping``, ``error_policy`` (or ``error_handling``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    extractor: str = Field(min_length=1)
    config: dict[str, Any] | None = None
    processing_mode: ProcessingMode = "single"
    max_concurrency: int = Field(4, ge=1, le=1000)
    input_mapping: dict[str, str] = Field(default_factory=dict)
    output_mapping: dict[str, str] = Field(default_factory=dict)
    error_policy: ErrorPolicy = Field(default_factory=ErrorPolicy)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "extractor_class" in data and "extractor" not in data:
                data["extractor"] = data.pop("extractor_class")
            if "error_handling" in data and "error_policy" not in data:
                data["error_policy"] = data.pop("error_handling")
        return data


class ChainConfig(BaseModel):
    """A chain as in YAML: ``chain_id``, ``extractors`` (the steps, in order), ``parameters``
    (the initial state, under the run's inputs) and ``max_parallel_chains``."""

    model_config = ConfigDict(extra="forbid")

    chain_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")
    description: str | None = None
    extractors: list[ChainStep] = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)
    max_parallel_chains: int = Field(4, ge=1, le=1000)

    @model_validator(mode="after")
    def _unique_step_names(self) -> ChainConfig:
        seen: set[str] = set()
        for i, step in enumerate(self.extractors):
            if step.name is None:
                step.name = f"step{i + 1}"
            if step.name in seen:
                raise ValueError(f"two steps are named {step.name!r}; step names are unique")
            seen.add(step.name)
        return self


def load_chain_yaml(source: str | Path, *, check_extractors: bool = True) -> ChainConfig:
    """A :class:`ChainConfig` from YAML text or a ``.yaml``/``.yml`` file. An invalid one raises
    :class:`ExtractConfigError` naming the key, its value and its line; with
    ``check_extractors`` every step's extractor must resolve (registered, or importable)."""
    from apix_core.extract.yaml_files import line_of, raise_invalid, read_yaml

    where, root, data = read_yaml(source, "chain", "chain_id and extractors")
    try:
        chain = ChainConfig.model_validate(data)
    except ValidationError as exc:
        raise_invalid(
            exc,
            root,
            where,
            "chain",
            as_written=lambda loc: _as_written(data, loc),
            empty_key="chain",
            model=ChainConfig,
        )
    if check_extractors:
        for i, step in enumerate(chain.extractors):
            try:
                cls = resolve_extractor(step.extractor)
            except ConfigurationError as exc:
                key_name = (
                    "extractor" if "extractor" in data["extractors"][i] else "extractor_class"
                )
                line_no = line_of(root, ["extractors", i, key_name])
                at = f" (line {line_no})" if line_no else ""
                raise ExtractConfigError(
                    f"{where}: extractors.{i}.{key_name}{at}: {exc}",
                    key=f"extractors.{i}.{key_name}",
                    value=step.extractor,
                ) from None
            if cls.config_model is not None and step.config is not None:
                # The step's own config, with its file and line like the chain's keys.
                parse_config(
                    cls.config_model,
                    step.config,
                    where=f"extractors.{i}.config",
                    source=where,
                    line_of=_lines_under(root, ["extractors", i, "config"]),
                )
    return chain


def _lines_under(root: Any, base: list[Any]) -> Callable[[list[Any]], int | None]:
    """A location under ``base`` → its line in the YAML of ``root``."""
    from apix_core.extract.yaml_files import line_of

    return lambda loc: line_of(root, [*base, *loc])


#: A step key's other spelling (the seed design's), as the YAML may have written it.
_STEP_ALIASES = {"error_policy": "error_handling", "extractor": "extractor_class"}


def _as_written(data: dict[str, Any], loc: list[Any]) -> list[Any]:
    """``loc`` with a step key as the YAML spelled it (so its line is found)."""
    if len(loc) > 2 and loc[0] == "extractors" and isinstance(loc[1], int):
        steps = data.get("extractors")
        alias = _STEP_ALIASES.get(str(loc[2]))
        if (
            alias
            and isinstance(steps, list)
            and loc[1] < len(steps)
            and isinstance(steps[loc[1]], dict)
            and alias in steps[loc[1]]
        ):
            return [*loc[:2], alias, *loc[3:]]
    return loc


def resolve_extractor(name: str) -> type[BaseExtractor]:
    """The extractor class for a registered name or a class path (``pkg.mod:Class`` or
    ``pkg.mod.Class``)."""
    try:
        return ExtractorFactory.get(name)
    except UnknownComponentError:
        if ":" not in name and "." not in name:
            raise
    module_name, _, attr = name.rpartition(":") if ":" in name else name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExtractConfigError(
            f"extractor {name!r} is neither a registered extractor nor an importable class "
            f"path (module {module_name!r}: {exc}); register it with "
            f"@ExtractorFactory.register({name!r}) or write 'package.module:Class'",
            key="extractor",
            value=name,
        ) from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseExtractor)):
        raise ExtractConfigError(
            f"extractor {name!r}: {module_name} has no BaseExtractor subclass named {attr!r}",
            key="extractor",
            value=name,
        )
    return cls


def create_extractor(step: ChainStep) -> BaseExtractor:
    """A fresh extractor instance for ``step``."""
    cls = resolve_extractor(step.extractor)
    config: Any = step.config
    if cls.config_model is not None and config is not None:
        config = parse_config(cls.config_model, config, where=f"step {step.name}")
    factory: Any = cls  # extractors take their config positionally (none: no config)
    made: BaseExtractor = factory(config) if config is not None else factory()
    return made


# -- mapping ----------------------------------------------------------------------------------
def step_items(step: ChainStep, state: ChainState) -> list[dict[str, Any]]:
    """The inputs of each extraction of ``step`` on ``state`` (one for ``single``)."""
    values: dict[str, Any] = {}
    for param, key in step.input_mapping.items():
        try:
            values[param] = state.lookup(key)
        except KeyError:
            known = ", ".join(sorted(state)) or "none"
            raise ExtractConfigError(
                f"step {step.name!r}: input_mapping.{param} reads state key {key!r}, which no "
                f"earlier step or input set (state has: {known})",
                key=f"input_mapping.{param}",
                value=key,
            ) from None
    plain = ChainState(values).to_dict()
    if step.processing_mode == "single":
        return [plain]
    iterated = {k: v for k, v in plain.items() if isinstance(v, list)}
    if not iterated:
        return [plain]
    lengths = {k: len(v) for k, v in iterated.items()}
    if len(set(lengths.values())) > 1:
        raise ExtractConfigError(
            f"step {step.name!r}: the lists it iterates have different lengths {lengths}",
            key="input_mapping",
            value=lengths,
        )
    count = next(iter(lengths.values()))
    return [{**plain, **{k: v[i] for k, v in iterated.items()}} for i in range(count)]


def map_outputs(step: ChainStep, records: list[Record]) -> dict[str, Any]:
    """The state values ``step``'s ``output_mapping`` makes of its records."""
    out: dict[str, Any] = {}
    for source, key in step.output_mapping.items():
        if source == ALL_RECORDS:
            out[key] = list(records)
            continue
        values = []
        for record in records:
            node: Any = record
            for part in source.split("."):
                node = node.get(part) if isinstance(node, Mapping) else None
            if node is not None:
                values.append(node)
        out[key] = values
    return out


# -- reports ----------------------------------------------------------------------------------
@dataclass
class ItemFailure:
    """One item of a step that failed: its position, inputs, the error and how often tried."""

    index: int
    inputs: dict[str, Any]
    error_type: str
    message: str
    attempts: int

    def __str__(self) -> str:
        return f"item {self.index} {self.inputs}: {self.error_type}: {self.message}"


@dataclass
class StepReport:
    """One step of a run: ``succeeded``, ``partial`` (some items failed under ``continue``),
    ``failed`` or ``skipped`` (an earlier step failed)."""

    name: str
    extractor: str
    status: StepStatus = "skipped"
    items_total: int = 0
    items_failed: int = 0
    records: int = 0
    retries: int = 0
    failures: list[ItemFailure] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class ChainReport:
    """One chain run: its status, each step's report and the final state."""

    chain_id: str
    status: ChainStatus
    steps: list[StepReport]
    state: ChainState
    records: list[Record] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def failures(self) -> list[tuple[str, ItemFailure]]:
        """Every failed item as ``(step name, failure)``."""
        return [(s.name, f) for s in self.steps for f in s.failures]

    def summary(self) -> str:
        """A few lines: the chain's status, then each step's."""
        lines = [f"chain {self.chain_id}: {self.status} in {self.seconds:.2f}s"]
        for s in self.steps:
            lines.append(
                f"  {s.name} ({s.extractor}): {s.status}, {s.items_total - s.items_failed}/"
                f"{s.items_total} items, {s.records} records, {s.retries} retries"
            )
            lines += [f"    failed {f}" for f in s.failures]
            if s.error and not s.failures:
                lines.append(f"    error: {s.error}")
        return "\n".join(lines)


# -- execution --------------------------------------------------------------------------------
@dataclass
class StepResult:
    """What running a step produced: its report, its records (in item order), the new state."""

    report: StepReport
    records: list[Record]
    state: ChainState


class ChainStepFailed(Exception):
    """Internal: a step under ``fail`` has a failed item (carries the original error)."""

    def __init__(self, failure: ItemFailure, error: BaseException) -> None:
        super().__init__(str(failure))
        self.failure = failure
        self.error = error
        self.report: StepReport | None = None


async def run_item(
    step: ChainStep,
    extractor: BaseExtractor,
    index: int,
    inputs: dict[str, Any],
    report: StepReport,
) -> list[Record] | ItemFailure:
    """One extraction of ``step`` with retries by its policy; its records, or its failure."""
    policy = step.error_policy
    attempt = 0
    while True:
        attempt += 1
        try:
            return await extractor.extract(dict(inputs))
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:
            retryable = not isinstance(exc, PermanentError | ConfigurationError)
            if retryable and attempt <= policy.retries():
                report.retries += 1
                await asyncio.sleep(policy.delay(attempt))
                continue
            failure = ItemFailure(index, inputs, type(exc).__name__, str(exc), attempt)
            if policy.mode != "continue":
                raise ChainStepFailed(failure, exc) from exc
            return failure


async def run_step(
    step: ChainStep, state: ChainState, items: list[dict[str, Any]] | None = None
) -> StepResult:
    """Run ``step`` on ``state`` (on ``items`` if given, else the items its mapping makes).

    Raises :class:`ChainStepFailed` when an item fails under ``fail`` / ``retry``.
    """
    started = time.perf_counter()
    report = StepReport(step.name or "", step.extractor)
    if items is None:
        items = step_items(step, state)
    report.items_total = len(items)
    results: list[list[Record] | ItemFailure] = []
    try:
        async with create_extractor(step) as extractor:
            if step.processing_mode == "parallel" and len(items) > 1:
                gate = asyncio.Semaphore(step.max_concurrency)

                async def guarded(i: int, item: dict[str, Any]) -> list[Record] | ItemFailure:
                    async with gate:
                        return await run_item(step, extractor, i, item, report)

                tasks = [asyncio.ensure_future(guarded(i, it)) for i, it in enumerate(items)]
                try:
                    results = list(await asyncio.gather(*tasks))
                except BaseException:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise
            else:
                for i, item in enumerate(items):
                    results.append(await run_item(step, extractor, i, item, report))
    except ChainStepFailed as failed:
        report.status, report.items_failed = "failed", 1
        report.failures.append(failed.failure)
        report.error = str(failed.failure)
        report.seconds = time.perf_counter() - started
        failed.report = report
        raise
    records: list[Record] = []
    for result in results:
        if isinstance(result, ItemFailure):
            report.failures.append(result)
        else:
            records.extend(result)
    report.items_failed = len(report.failures)
    report.records = len(records)
    report.status = "partial" if report.failures else "succeeded"
    report.seconds = time.perf_counter() - started
    return StepResult(report, records, state.updated(map_outputs(step, records)))


class ChainExecutor:
    """Runs chains: :meth:`execute_single_chain` one run, :meth:`execute_parallel_chains`
    several at once under ``max_parallel_chains``."""

    def __init__(self, *, max_parallel_chains: int | None = None) -> None:
        self.max_parallel_chains = max_parallel_chains

    async def execute_single_chain(
        self, chain: ChainConfig, inputs: Mapping[str, Any] | None = None
    ) -> ChainReport:
        """Run every step in order on the state ``chain.parameters`` + ``inputs``. Never raises
        for a step's failure: the report says which step and items failed, and why."""
        started = time.perf_counter()
        state = ChainState({**chain.parameters, **dict(inputs or {})})
        reports = [StepReport(s.name or "", s.extractor) for s in chain.extractors]
        records: list[Record] = []
        status: ChainStatus = "succeeded"
        for i, step in enumerate(chain.extractors):
            try:
                result = await run_step(step, state)
            except ChainStepFailed as failed:
                reports[i] = failed.report or reports[i]
                status = "failed"
                break
            except ConfigurationError as exc:
                reports[i].status, reports[i].error = "failed", f"{type(exc).__name__}: {exc}"
                status = "failed"
                break
            reports[i] = result.report
            state, records = result.state, result.records
            if result.report.status == "partial":
                status = "partial"
        return ChainReport(
            chain.chain_id,
            status,
            reports,
            state,
            records if status != "failed" else [],
            time.perf_counter() - started,
        )

    async def execute_parallel_chains(
        self,
        chains: ChainConfig | Sequence[ChainConfig | tuple[ChainConfig, Mapping[str, Any]]],
        inputs_list: Sequence[Mapping[str, Any]] | None = None,
        *,
        max_parallel_chains: int | None = None,
    ) -> list[ChainReport]:
        """Several runs at once, at most ``max_parallel_chains`` (else the executor's, else the
        first chain's) at a time; reports in the order given.

        ``chains`` is a list of chains or ``(chain, inputs)`` pairs — or one chain, run once per
        mapping of ``inputs_list``.
        """
        runs: list[tuple[ChainConfig, Mapping[str, Any]]] = []
        if isinstance(chains, ChainConfig):
            runs = [(chains, inputs) for inputs in (inputs_list or [{}])]
        else:
            if inputs_list is not None:
                raise ConfigurationError(
                    "inputs_list= goes with one chain; with a list pass (chain, inputs) pairs"
                )
            for c in chains:
                runs.append(c if isinstance(c, tuple) else (c, {}))
        if not runs:
            return []
        limit = max_parallel_chains or self.max_parallel_chains or runs[0][0].max_parallel_chains
        gate = asyncio.Semaphore(limit)

        async def one(chain: ChainConfig, inputs: Mapping[str, Any]) -> ChainReport:
            async with gate:
                return await self.execute_single_chain(chain, inputs)

        return list(await asyncio.gather(*(one(c, i) for c, i in runs)))


__all__ = [
    "ChainConfig",
    "ChainExecutor",
    "ChainReport",
    "ChainState",
    "ChainStep",
    "ErrorPolicy",
    "ItemFailure",
    "StepReport",
    "load_chain_yaml",
    "resolve_extractor",
]
