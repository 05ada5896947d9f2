"""The two interfaces of extraction — where records come from, where they go — and their
registries.

``BaseExtractor.extract_stream`` yields one batch per API page; ``extract`` collects them.
``BaseOutput.write`` writes a batch; ``write_stream`` drains an async iterable of batches (the
consumer side of streaming: it pulls, so a slow output slows the fetching down).

``ExtractorFactory`` / ``OutputFactory`` map names to classes:
``@ExtractorFactory.register("github")`` on a class, then ``ExtractorFactory.create("github",
{...config...})``. The built-in ones (``http``; the outputs of ``apix_core.extract.outputs``)
are imported on the first lookup, so importing this module stays cheap.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from apix_core._closing import Closing
from apix_core.extract.config import parse_config
from apix_core.extract.exceptions import UnknownComponentError

Record = dict[str, Any]
#: What ``extract(inputs)`` accepts: nothing, one mapping of template values, or several
#: (one extraction per mapping).
Inputs = Mapping[str, Any] | list[Mapping[str, Any]] | None


class BaseExtractor(Closing, ABC):
    """Extracts records from one source; one instance per extraction configuration.

    Subclasses implement :meth:`extract_stream`. An extractor may hold connections: use it as
    ``async with`` or call :meth:`close` (idempotent).
    """

    #: The pydantic model a factory validates a mapping config against (optional).
    config_model: ClassVar[type[BaseModel] | None] = None

    @abstractmethod
    def extract_stream(self, inputs: Inputs = None) -> AsyncIterator[list[Record]]:
        """One list of records per API page (or batch), as they arrive."""

    async def extract(self, inputs: Inputs = None) -> list[Record]:
        """Every record of the extraction in one list (use :meth:`extract_stream` for volume)."""
        records: list[Record] = []
        async for batch in self.extract_stream(inputs):
            records.extend(batch)
        return records

    async def close(self) -> None:
        """Release what the extractor holds (connections); safe to call twice."""


@dataclass
class OutputResult:
    """What an output wrote: records, batches, bytes, and where (``locations``: paths, queues)."""

    records_written: int = 0
    batches_written: int = 0
    bytes_written: int = 0
    locations: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def merge(self, other: OutputResult) -> OutputResult:
        """Both results added up (locations kept in order, without repeats)."""
        locations = list(self.locations)
        locations += [loc for loc in other.locations if loc not in locations]
        return OutputResult(
            self.records_written + other.records_written,
            self.batches_written + other.batches_written,
            self.bytes_written + other.bytes_written,
            locations,
            {**self.details, **other.details},
        )


class BaseOutput(Closing, ABC):
    """Writes records to one destination.

    Subclasses implement :meth:`write`; :meth:`write_stream` writes batch after batch, pulling
    the next only when the previous is written (backpressure). Override it to batch
    differently (e.g. by ``OutputBatchConfig``).
    """

    config_model: ClassVar[type[BaseModel] | None] = None

    @abstractmethod
    async def write(self, records: list[Record]) -> OutputResult:
        """Write ``records``; durable when this returns."""

    async def write_stream(self, batches: AsyncIterable[list[Record]]) -> OutputResult:
        result = OutputResult()
        async for batch in batches:
            if batch:
                result = result.merge(await self.write(batch))
        return result

    async def close(self) -> None:
        """Flush and release; safe to call twice."""


T = TypeVar("T", BaseExtractor, BaseOutput)


class ComponentFactory(Generic[T]):
    """Name → class registry; ``create`` validates a mapping config with the class's
    ``config_model`` (errors name the bad key and value)."""

    def __init__(self, kind: str, base: type[Any], *builtins_modules: str) -> None:
        self.kind = kind
        self.base = base
        self._builtins_modules = builtins_modules
        self._builtins_loaded = False
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: ``@ExtractorFactory.register("github")``."""

        def decorator(cls: type[T]) -> type[T]:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(f"{cls!r} is not a subclass of {self.base.__name__}")
            self._classes[name] = cls
            return cls

        return decorator

    def get(self, name: str) -> type[T]:
        cls = self._classes.get(name)
        if cls is None:
            self._load_builtins()
            cls = self._classes.get(name)
        if cls is None:
            known = ", ".join(sorted(self._classes)) or "none"
            raise UnknownComponentError(
                f"no {self.kind} named {name!r} is registered (known: {known}); register one "
                f"with @{self.kind.title()}Factory.register({name!r})",
                key=self.kind,
                value=name,
            )
        return cls

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._classes)

    def create(self, name: str, config: Any = None, /, **kwargs: Any) -> T:
        """An instance of the class registered as ``name``, built from ``config``."""
        cls = self.get(name)
        if cls.config_model is not None and config is not None:
            config = parse_config(cls.config_model, config, where=self.kind)
        factory: Callable[..., T] = cls
        return factory(config, **kwargs) if config is not None else factory(**kwargs)

    def _load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        self._builtins_loaded = True
        for module in self._builtins_modules:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                # Only a missing built-ins module is fine; a broken import inside it is not.
                if exc.name != module:
                    from apix_core.extract.exceptions import missing_extra

                    raise (missing_extra(exc) or exc) from None


ExtractorFactory: ComponentFactory[BaseExtractor] = ComponentFactory(
    "extractor",
    BaseExtractor,
    "apix_core.extract.http",
    "apix_core.extract.sql",
    "apix_core.extract.files",
)
OutputFactory: ComponentFactory[BaseOutput] = ComponentFactory(
    "output", BaseOutput, "apix_core.extract.outputs"
)

__all__ = [
    "BaseExtractor",
    "BaseOutput",
    "Closing",  # moved to apix_core._closing; still importable from here
    "ComponentFactory",
    "ExtractorFactory",
    "Inputs",
    "OutputFactory",
    "OutputResult",
    "Record",
]
