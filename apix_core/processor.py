"""Processors: the interface, their configuration, triggers, and the adapter for plain functions."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel

from apix_core.errors import ConfigurationError, is_programming_error
from apix_core.message import Message
from apix_core.result import ProcessingResult

if TYPE_CHECKING:
    from apix_core.context import ProcessorContext


@dataclass(frozen=True)
class BackoffPolicy:
    """In-invocation retries of transient errors: exponential backoff with full jitter."""

    max_retries: int = 3
    initial_seconds: float = 0.05
    max_seconds: float = 2.0
    multiplier: float = 2.0
    #: Delay before a retryable failure is redelivered (the transport's visibility delay).
    redelivery_seconds: float = 1.0
    #: Cap on how long in-invocation retries may take in total.
    budget_seconds: float = 10.0


@dataclass
class ProcessorConfig:
    """How the handler runs one processor (seed 002 ``ProcessorConfig``)."""

    processor_name: str = ""
    #: The handler persists the entities of outgoing messages that carry an entity reference.
    is_source_processor: bool = False
    enable_duplicate_detection: bool = True
    enable_state_tracking: bool = True
    #: Idempotency, entity writes and the outbox. Off: a stateless, at-least-once processor.
    enable_persistence: bool = True
    #: Deliveries before a retryable failure is dead-lettered (None: ``APIX_MAX_ATTEMPTS``).
    max_attempts: int | None = None
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    #: Entity state recorded after a successful run on an entity message (None: no transition).
    success_state: str | None = None
    #: Run ``def`` processors in a worker thread so they may block (HTTP, files).
    run_sync_in_thread: bool = True


class ProcessorInterface:
    """Base class for class-based processors (seed 002). Only ``process`` is required.

    ``process`` takes ``(self, message, context)``, or just ``(self, message)`` (the seed's
    form): a subclass's one-argument ``process`` is adapted when the class is defined.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        process = cls.__dict__.get("process")
        if inspect.isfunction(process) and _positional_arity(process) == 2:
            cls.process = _with_context(process)  # type: ignore[method-assign]

    def process(
        self, message: Message, context: ProcessorContext
    ) -> ProcessingResult | Awaitable[ProcessingResult]:
        raise NotImplementedError

    def validate_message(self, message: Message) -> bool:
        """False dead-letters the message as a validation error, without running ``process``."""
        return True

    def get_processor_info(self) -> dict[str, Any]:
        return {"name": type(self).__name__, "version": "1.0.0"}

    def can_retry(self, error: Exception) -> bool:
        """Whether an exception that is not an apix error may be retried.

        By default everything but a programming error (``TypeError``, ``AttributeError``,
        ``NameError``... — :data:`apix_core.errors.PROGRAMMING_ERRORS`): retrying a bug on the
        same input fails the same way, so it is dead-lettered at once as ``PROCESSOR_BUG``.
        """
        return not is_programming_error(error)


def _positional_arity(func: Callable[..., Any]) -> int | None:
    """Positional parameters of ``func`` (self included); None if it takes ``*args`` or needs a
    keyword-only argument (then it is left as it is)."""
    count = 0
    for p in inspect.signature(func).parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            return None
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


def _with_context(process: Callable[..., Any]) -> Callable[..., Any]:
    """Adapt ``process(self, message)`` to the handler's ``process(self, message, context)``.

    The context stays optional, so direct calls ``p.process(message)`` keep working.
    """
    if inspect.iscoroutinefunction(process):

        @functools.wraps(process)
        async def process_async(self: Any, message: Message, context: Any = None) -> Any:
            return await process(self, message)

        return process_async

    @functools.wraps(process)
    def process_sync(self: Any, message: Message, context: Any = None) -> Any:
        return process(self, message)

    return process_sync


def _check_process_signature(name: str, impl: ProcessorInterface) -> None:
    """Registration-time check that the handler can call ``impl.process(message, context)``."""
    method = getattr(type(impl), "process", None)
    if not callable(method) or method is ProcessorInterface.process:
        raise ConfigurationError(
            f"processor {name!r}: {type(impl).__qualname__} must define process(self, message)"
        )
    try:
        # Not following __wrapped__: an adapted one-argument process reports its original.
        inspect.signature(impl.process, follow_wrapped=False).bind(None, None)
    except TypeError:
        raise ConfigurationError(
            f"processor {name!r}: {type(impl).__qualname__}.process must take "
            "(self, message, context) or (self, message)"
        ) from None
    except ValueError:
        return  # no signature to inspect (a builtin): trust it


@runtime_checkable
class Mapper(Protocol):
    """A processor attribute ``mapper`` with ``to_canonical`` makes the processor a source."""

    def to_canonical(self, data: dict[str, Any]) -> dict[str, Any]: ...


ProcessorFunction = Callable[..., Any]


class FunctionProcessor(ProcessorInterface):
    """Adapts ``def f(message, ctx)`` / ``async def f(message, ctx)`` to the interface."""

    def __init__(self, func: ProcessorFunction) -> None:
        params = list(inspect.signature(func).parameters.values())
        if not 1 <= len(params) <= 2:
            raise ConfigurationError(
                f"processor {func.__qualname__} must take (message) or (message, ctx)"
            )
        self.func = func
        self.takes_ctx = len(params) == 2
        self.is_async = inspect.iscoroutinefunction(func)

    def process(self, message: Message, context: ProcessorContext) -> Any:
        if self.takes_ctx:
            return self.func(message, context)
        return self.func(message)

    def get_processor_info(self) -> dict[str, Any]:
        return {"name": self.func.__qualname__, "module": self.func.__module__}


def is_async_processor(processor: ProcessorInterface) -> bool:
    if isinstance(processor, FunctionProcessor):
        return processor.is_async
    return inspect.iscoroutinefunction(processor.process)


@dataclass(frozen=True)
class HttpRoute:
    method: str
    path: str

    @classmethod
    def parse(cls, route: str) -> HttpRoute:
        parts = route.split(None, 1)
        if len(parts) == 1:
            return cls("POST", _path(parts[0]))
        return cls(parts[0].upper(), _path(parts[1]))

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _path(p: str) -> str:
    return p if p.startswith("/") else f"/{p}"


@dataclass
class ProcessorSpec:
    """A registered processor: what triggers it, what it may send, how it runs."""

    name: str
    processor: ProcessorInterface
    config: ProcessorConfig
    consumes: str | None = None
    schedule: str | None = None
    route: HttpRoute | None = None
    produces: tuple[str, ...] = ()
    payload_model: type[BaseModel] | None = None

    @property
    def trigger(self) -> str:
        if self.consumes:
            return "queue"
        if self.schedule:
            return "schedule"
        return "http"


def build_spec(
    name: str,
    processor: ProcessorInterface | ProcessorFunction,
    *,
    consumes: str | None,
    schedule: str | None,
    route: str | None,
    produces: Sequence[str] | str | None,
    config: ProcessorConfig | None,
    payload: type[BaseModel] | None,
    options: dict[str, Any],
) -> ProcessorSpec:
    triggers = [t for t in (consumes, schedule, route) if t]
    if len(triggers) != 1:
        raise ConfigurationError(
            f"processor {name!r} needs exactly one trigger: consumes=, schedule= or route="
        )
    if schedule:
        _check_cron(name, schedule)
    if isinstance(produces, str):
        produces = (produces,)
    produced = tuple(produces or ())
    if consumes and consumes in produced:
        raise ConfigurationError(f"processor {name!r} consumes and produces {consumes!r}: a loop")
    cfg = config or ProcessorConfig()
    for key, value in options.items():
        if not hasattr(cfg, key):
            raise ConfigurationError(f"unknown processor option {key!r} for {name!r}")
        setattr(cfg, key, value)
    cfg.processor_name = cfg.processor_name or name
    if cfg.max_attempts is not None and cfg.max_attempts < 1:
        raise ConfigurationError(f"max_attempts of {name!r} must be at least 1")
    impl = processor if isinstance(processor, ProcessorInterface) else FunctionProcessor(processor)
    if not isinstance(impl, FunctionProcessor):
        _check_process_signature(name, impl)
    if isinstance(getattr(impl, "mapper", None), Mapper):
        cfg.is_source_processor = True
    return ProcessorSpec(
        name=name,
        processor=impl,
        config=cfg,
        consumes=consumes,
        schedule=schedule,
        route=HttpRoute.parse(route) if route else None,
        produces=produced,
        payload_model=payload,
    )


def _check_cron(name: str, expression: str) -> None:
    from apix_core.schedule import Schedule, ScheduleError

    try:
        Schedule.parse(expression)  # imports croniter, lazily
    except ScheduleError as exc:
        raise ScheduleError(f"processor {name!r}: {exc}") from None
