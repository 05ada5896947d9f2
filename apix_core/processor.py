"""Processors: the interface, their configuration, triggers, and the adapter for plain functions."""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import re
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


HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
#: Methods that only read (RFC 9110 "safe"): their routes never write to the store.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: A path segment: RFC 3986 ``pchar``s, or one ``{name}`` parameter.
_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%-]+|\{[A-Za-z_][A-Za-z0-9_]*\}")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def check_name(kind: str, value: object, processor: str | None = None) -> str:
    """A processor or queue name: 1-100 of ``[A-Za-z0-9_.-]``, not starting with ``.``, no
    ``..`` (names end up in file names, URLs and SQL). Raises :class:`ConfigurationError`."""
    where = f"processor {processor!r}: " if processor else ""
    if (
        not isinstance(value, str)
        or not _NAME.fullmatch(value)
        or value.startswith(".")
        or ".." in value
    ):
        raise ConfigurationError(
            f"{where}{kind} name {value!r} must be 1-100 of [A-Za-z0-9_.-], "
            "not starting with '.' and without '..'"
        )
    return value


@dataclass(frozen=True)
class HttpRoute:
    method: str
    path: str

    @classmethod
    def parse(cls, route: str, processor: str | None = None) -> HttpRoute:
        """``"METHOD /path"`` (or ``"/path"`` for POST); raises :class:`ConfigurationError`."""
        where = f"processor {processor!r}: " if processor else ""
        parts = route.split(None, 1) if isinstance(route, str) else []
        if not parts:
            raise ConfigurationError(f"{where}route {route!r} must be 'METHOD /path'")
        method, path = ("POST", parts[0]) if len(parts) == 1 else (parts[0].upper(), parts[1])
        if method not in HTTP_METHODS:
            raise ConfigurationError(
                f"{where}route {route!r}: method {method!r} is not one of "
                f"{', '.join(sorted(HTTP_METHODS))}"
            )
        path = _path(path.strip())
        segments = path[1:].split("/")
        if segments and segments[-1] == "":
            segments.pop()  # "/" and a trailing slash
        params = [s for s in segments if s.startswith("{")]
        bad = [s for s in segments if not _SEGMENT.fullmatch(s) or s in (".", "..")]
        if bad or len(params) != len(set(params)):
            raise ConfigurationError(
                f"{where}route {route!r}: the path must be '/'-separated segments of letters, "
                "digits and -._~!$&'()*+,;=:@% or '{name}' parameters (each name once)"
                + (f"; bad segment {bad[0]!r}" if bad else "")
            )
        return cls(method, path)

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
    def read_only(self) -> bool:
        """A route whose method is safe (GET, HEAD, OPTIONS) and that produces nothing: it runs
        without claiming (no idempotency row, outbox or error row) and may not write."""
        return self.route is not None and self.route.method in SAFE_METHODS and not self.produces

    @property
    def trigger(self) -> str:
        if self.consumes:
            return "queue"
        if self.schedule:
            return "schedule"
        return "http"


#: The decorator's own arguments (the rest are ProcessorConfig fields).
_DECORATOR_ARGS = ("consumes", "schedule", "route", "produces", "config", "payload")


def _check_options(name: str, options: dict[str, Any], config: ProcessorConfig | None) -> None:
    """Unknown keyword arguments fail first, naming the option meant: a misspelt trigger
    (``consume=``) must not read as "no trigger given"."""
    cfg = config if config is not None else ProcessorConfig()
    for key in options:
        if hasattr(cfg, key):
            continue
        if key == "type":
            hint = (
                "; the trigger picks the kind of processor: consumes='<queue>' (a queue "
                "message), schedule='<cron>' (a timer) or route='METHOD /path' (HTTP)"
            )
        else:
            known = [*_DECORATOR_ARGS, *(f for f in vars(cfg) if not f.startswith("_"))]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]}=?" if close else ""
        raise ConfigurationError(f"unknown processor option {key!r} for {name!r}{hint}")


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
    check_name("processor", name)
    _check_options(name, options, config)
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
    if consumes:
        check_name("queue", consumes, name)
    for queue in produced:
        check_name("queue", queue, name)
    http_route = HttpRoute.parse(route, name) if route else None
    if consumes and consumes in produced:
        raise ConfigurationError(f"processor {name!r} consumes and produces {consumes!r}: a loop")
    # A copy: one ProcessorConfig object given to two processors must not be shared (the
    # second would rename the first and set its options).
    cfg = copy.deepcopy(config) if config is not None else ProcessorConfig()
    for key, value in options.items():
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
        route=http_route,
        produces=produced,
        payload_model=payload,
    )


def _check_cron(name: str, expression: str) -> None:
    from apix_core.schedule import Schedule, ScheduleError

    try:
        Schedule.parse(expression)  # imports croniter, lazily
    except ScheduleError as exc:
        raise ScheduleError(f"processor {name!r}: {exc}") from None
