"""``App``: the registry of processors, their topology, and the shared store and transport."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from apix_core.config import Settings
from apix_core.exceptions import (
    ConfigurationError,
    InvalidTenantError,
    MalformedMessageError,
    MissingTenantError,
)
from apix_core.handler import Outcome, OutcomeKind, ProcessorHandler
from apix_core.hashing import deterministic_id
from apix_core.message import Message, MessageType
from apix_core.processor import ProcessorConfig, ProcessorInterface, ProcessorSpec, build_spec
from apix_core.store.database import Database
from apix_core.store.repositories import Store
from apix_core.tenancy import TENANT_ID_RULE, is_valid_tenant_id
from apix_core.transport.base import (
    DeadLetterInfo,
    OutgoingMessage,
    QueueTransport,
    ReceivedMessage,
)

F = TypeVar("F", bound=Callable[..., Any])

SCHEDULE_QUEUE_PREFIX = "apix.schedule."


def schedule_queue(spec: ProcessorSpec) -> str:
    """Locally, a schedule enqueues its ticks here, so ticks get retries and dead letters too."""
    return f"{SCHEDULE_QUEUE_PREFIX}{spec.name}"


@dataclass
class HttpResponse:
    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})

    def text(self) -> str:
        return json.dumps(self.body, separators=(",", ":"), default=str)


class App:
    """A named set of processors.

    Configuration comes from the arguments, else from ``APIX_*`` environment variables (see
    :mod:`apix_core.constants`). The store and transport are created on :meth:`start`.
    """

    def __init__(
        self,
        name: str,
        *,
        database_url: str | None = None,
        queue_url: str | None = None,
        tenant_id: str | None = None,
        transport: QueueTransport | None = None,
        **settings: Any,
    ) -> None:
        if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigurationError(f"app name {name!r} must be letters, digits, '_', '.', '-'")
        self.name = name
        self._overrides = {
            "database_url": database_url,
            "queue_url": queue_url,
            "tenant_id": tenant_id,
            **settings,
        }
        self.specs: dict[str, ProcessorSpec] = {}
        self._settings: Settings | None = None
        self._user_transport = transport
        self.transport: QueueTransport | None = transport
        self.store: Store | None = None
        self._databases: list[Database] = []
        self._handlers: dict[str, ProcessorHandler] = {}
        self._started = False

    # -- registration ---------------------------------------------------------------------
    def processor(
        self,
        name: str | None = None,
        *,
        consumes: str | None = None,
        schedule: str | None = None,
        route: str | None = None,
        produces: Sequence[str] | str | None = None,
        config: ProcessorConfig | None = None,
        payload: type[BaseModel] | None = None,
        **options: Any,
    ) -> Callable[[F], F]:
        """Register a function processor or a ``ProcessorInterface`` class.

        ``options`` set :class:`ProcessorConfig` fields (``max_attempts=3``...). The function is
        returned unchanged, so it stays directly callable in tests.
        """

        def decorate(target: F) -> F:
            impl: Any = target() if isinstance(target, type) else target
            self.register(
                impl,
                name or getattr(target, "__name__", None),
                consumes=consumes,
                schedule=schedule,
                route=route,
                produces=produces,
                config=config,
                payload=payload,
                **options,
            )
            return target

        return decorate

    def register(
        self,
        processor: ProcessorInterface | Callable[..., Any],
        name: str | None = None,
        *,
        consumes: str | None = None,
        schedule: str | None = None,
        route: str | None = None,
        produces: Sequence[str] | str | None = None,
        config: ProcessorConfig | None = None,
        payload: type[BaseModel] | None = None,
        **options: Any,
    ) -> ProcessorSpec:
        """Register a processor instance or function (same arguments as :meth:`processor`)."""
        name = name or getattr(processor, "__name__", None) or type(processor).__name__
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name):
            raise ConfigurationError(f"processor name {name!r} must be 1-100 of [A-Za-z0-9_.-]")
        if name in self.specs:
            raise ConfigurationError(f"processor {name!r} is registered twice")
        spec = build_spec(
            name,
            processor,
            consumes=consumes,
            schedule=schedule,
            route=route,
            produces=produces,
            config=config,
            payload=payload,
            options=options,
        )
        if spec.consumes:
            owner = self.consumer_of(spec.consumes)
            if owner is not None:
                raise ConfigurationError(
                    f"queue {spec.consumes!r} is already consumed by {owner.name!r}; "
                    "fan out by producing to two queues"
                )
        if spec.route:
            for other in self.specs.values():
                if other.route == spec.route:
                    raise ConfigurationError(
                        f"route {spec.route} is already taken by {other.name!r}"
                    )
        self.specs[name] = spec
        if self._started:
            self._handlers[name] = self._make_handler(spec)
        return spec

    # -- topology -------------------------------------------------------------------------
    def consumer_of(self, queue: str) -> ProcessorSpec | None:
        for spec in self.specs.values():
            if spec.consumes == queue or (spec.schedule and schedule_queue(spec) == queue):
                return spec
        return None

    def input_queue(self, spec: ProcessorSpec) -> str | None:
        if spec.consumes:
            return spec.consumes
        if spec.schedule:
            return schedule_queue(spec)
        return None

    def queues(self) -> list[str]:
        """Every queue the app consumes or produces."""
        names: set[str] = set()
        for spec in self.specs.values():
            if spec.consumes:
                names.add(spec.consumes)
            names.update(spec.produces)
        return sorted(names)

    def mermaid(self) -> str:
        """The topology as a Mermaid flowchart.

        Node ids are the names when those are plain words (``q_orders``, ``p_normalize``); other
        names get a stable hash suffix, so ``a-b`` and ``a.b`` stay two nodes. Labels are
        escaped (``"`` → ``#quot;``).
        """
        lines = ["flowchart LR"]

        def qid(q: str) -> str:
            return _mermaid_id("q_", q)

        for q in self.queues():
            lines.append(f'    {qid(q)}[("{_mermaid_label(q)}")]')
        for spec in self.specs.values():
            pid = _mermaid_id("p_", spec.name)
            lines.append(f'    {pid}["{_mermaid_label(spec.name)}"]')
            if spec.consumes:
                lines.append(f"    {qid(spec.consumes)} --> {pid}")
            elif spec.schedule:
                lines.append(f'    t_{pid}(["⏱ {_mermaid_label(spec.schedule)}"]) --> {pid}')
            elif spec.route:
                lines.append(f'    h_{pid}(["{_mermaid_label(str(spec.route))}"]) --> {pid}')
            for q in spec.produces:
                lines.append(f"    {pid} --> {qid(q)}")
        return "\n".join(lines)

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env(**self._overrides)
        return self._settings

    async def start(self) -> None:
        """Open the store and transport (and migrate the embedded SQLite store)."""
        if self._started:
            return
        s = self.settings
        needs_store = any(spec.config.enable_persistence for spec in self.specs.values())
        db: Database | None = None
        if needs_store or not self.specs:
            db = Database(s.database_url, timeout=s.db_timeout)
            self._databases.append(db)
            if s.auto_migrate:
                await db.upgrade()
            self.store = Store(db)
        if self.transport is None:
            from apix_core.transport.local import LocalTransport

            if db is not None and s.queue_url == s.database_url:
                qdb = db
            else:
                qdb = Database(s.queue_url, timeout=s.db_timeout)
                self._databases.append(qdb)
                if s.auto_migrate:
                    await qdb.upgrade()
            self.transport = LocalTransport(
                qdb,
                visibility_timeout=s.visibility_timeout,
                max_message_bytes=s.local_max_message_bytes,
            )
        self._handlers = {name: self._make_handler(spec) for name, spec in self.specs.items()}
        self._started = True

    async def close(self) -> None:
        if self.transport is not None and self.transport is not self._user_transport:
            await self.transport.close()
            self.transport = None
        for db in self._databases:
            await db.dispose()
        self._databases.clear()
        self.store = None
        self._handlers.clear()
        self._started = False

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _make_handler(self, spec: ProcessorSpec) -> ProcessorHandler:
        if spec.config.max_attempts is None:
            spec.config.max_attempts = self.settings.max_attempts
        return ProcessorHandler(
            spec, store=self.store, transport=self.transport, default_tenant=self.settings.tenant_id
        )

    def handler(self, name: str) -> ProcessorHandler:
        if not self._started:
            raise ConfigurationError("call `await app.start()` (or `async with app:`) first")
        try:
            return self._handlers[name]
        except KeyError:
            raise ConfigurationError(f"no processor named {name!r}") from None

    # -- messages in ----------------------------------------------------------------------
    async def send(
        self,
        queue: str,
        payload: dict[str, Any],
        *,
        tenant_id: str | None = None,
        message_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Put a message on a queue (what an upstream system or ``apix send`` does)."""
        await self.start()
        tenant = tenant_id or self.settings.tenant_id
        if not tenant:
            raise MissingTenantError("send needs tenant_id= (or APIX_TENANT_ID)")
        from apix_core.observability.tracing import inject_trace_context, tracing_enabled

        msg = Message(
            message_id=message_id or str(uuid.uuid4()),
            tenant_id=tenant,
            payload=payload,
            metadata=dict(metadata or {}),
            # Link the pipeline to the caller's trace when an SDK is active.
            trace_context=inject_trace_context() if tracing_enabled() else {},
        )
        assert self.transport is not None
        body = msg.to_json()
        self.transport.check_size(queue, body)
        await self.transport.send(
            queue, OutgoingMessage(msg.message_id, body, 0.0, {"tenant_id": tenant})
        )
        return msg.message_id

    def timer_message(self, spec: ProcessorSpec, fire_time: datetime) -> Message:
        """The message of one schedule tick; its id derives from the tick, so a re-fire dedups."""
        tenant = self.settings.tenant_id
        if not tenant:
            raise ConfigurationError(
                f"schedule processor {spec.name!r} needs a tenant: "
                "set APIX_TENANT_ID or App(tenant_id=)"
            )
        when = fire_time.astimezone(UTC).replace(microsecond=0)
        return Message(
            message_id=deterministic_id("timer", self.name, spec.name, when.isoformat()),
            tenant_id=tenant,
            type=MessageType.TIMER,
            payload={"scheduled_time": when.isoformat(), "schedule": spec.schedule},
            created_at=when,
        )

    async def process(
        self, queue: str, deliveries: Sequence[ReceivedMessage], *, deadline: float | None = None
    ) -> list[Outcome]:
        """Run the consumer of ``queue`` over deliveries (platform adapters call this)."""
        spec = self.consumer_of(queue)
        if spec is None:
            raise ConfigurationError(f"no processor consumes queue {queue!r}")
        return await self.handler(spec.name).handle_batch(deliveries, deadline=deadline)

    async def settle(self, queue: str, outcomes: Sequence[Outcome]) -> None:
        """Apply outcomes on the app's transport: ack, release with delay, or dead-letter."""
        assert self.transport is not None
        spec = self.consumer_of(queue)
        done: list[ReceivedMessage] = []
        for o in outcomes:
            if o.kind is OutcomeKind.RETRY:
                await self.transport.release(queue, o.delivery, o.delay_seconds)
            elif o.kind is OutcomeKind.DEAD_LETTER:
                await self.transport.dead_letter(queue, o.delivery, dead_letter_info(o, spec))
            else:
                done.append(o.delivery)
        await self.transport.ack(queue, done)

    # -- HTTP -----------------------------------------------------------------------------
    def match_route(self, method: str, path: str) -> tuple[ProcessorSpec, dict[str, str]] | None:
        for spec in self.specs.values():
            if spec.route is None or spec.route.method != method.upper():
                continue
            params = _match_path(spec.route.path, path)
            if params is not None:
                return spec, params
        return None

    async def handle_http(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        query: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """Run the processor whose ``route=`` matches; map its outcome to an HTTP response.

        The tenant comes from the tenant header (``X-Tenant-Id`` by default); an
        ``Idempotency-Key`` header makes retries of the same request exactly-once.
        """
        await self.start()
        found = self.match_route(method, path)
        if found is None:
            return HttpResponse(404, {"error": "NOT_FOUND", "message": f"no route {method} {path}"})
        spec, params = found
        lower = {k.lower(): v for k, v in (headers or {}).items()}
        tenant = lower.get(self.settings.tenant_header.lower()) or self.settings.tenant_id
        if not tenant:
            return _error_response(
                400, MissingTenantError(f"missing {self.settings.tenant_header} header")
            )
        if not is_valid_tenant_id(tenant):
            # The header is caller input: refuse it before it scopes anything (or names a file).
            return _error_response(
                400,
                InvalidTenantError(
                    f"invalid {self.settings.tenant_header} header: use {TENANT_ID_RULE}"
                ),
            )
        try:
            payload = _json_object(body)
        except MalformedMessageError as exc:
            return _error_response(400, exc)
        key = lower.get("idempotency-key")
        message_id = (
            deterministic_id("http", self.name, spec.name, tenant, key)
            if key
            else str(uuid.uuid4())
        )
        message = Message(
            message_id=message_id,
            tenant_id=tenant,
            type=MessageType.HTTP,
            payload=payload,
            metadata={
                "http": {
                    "method": method.upper(),
                    "path": path,
                    "path_params": params,
                    "query": dict(query or {}),
                }
            },
        )
        outcome = await self.handler(spec.name).handle(message)
        base = {"message_id": message_id, "status": outcome.kind.value}
        if outcome.kind in (OutcomeKind.COMPLETED, OutcomeKind.DUPLICATE):
            result = outcome.result
            body_out: dict[str, Any] = dict(base)
            if result is not None:
                body_out["entities_created"] = result.entities_created
                body_out["metadata"] = result.processing_metadata
            return HttpResponse(202 if spec.produces else 200, body_out)
        error = outcome.error
        assert error is not None
        if outcome.kind is OutcomeKind.RETRY:
            return HttpResponse(
                503,
                {**base, "error": error.code, "message": error.message},
                {
                    "Content-Type": "application/json",
                    "Retry-After": str(max(1, int(outcome.delay_seconds))),
                },
            )
        status = 400 if error.category.value == "validation" else 500
        return HttpResponse(status, {**base, "error": error.code, "message": error.message})


def _mermaid_id(prefix: str, name: str) -> str:
    safe = re.sub(r"\W", "_", name, flags=re.ASCII)
    if safe == name:
        return prefix + name
    # Replacing characters is lossy ('a-b', 'a.b'): a hash of the real name keeps ids apart.
    return f"{prefix}{safe}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


_MERMAID_ESCAPES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;"}


def _mermaid_label(text: str) -> str:
    # Mermaid entity codes; '#' first, so the codes it inserts are not escaped again.
    return re.sub(r'[#"<>]', lambda m: _MERMAID_ESCAPES[m.group()], text)


def dead_letter_info(outcome: Outcome, spec: ProcessorSpec | None) -> DeadLetterInfo:
    error = outcome.error
    return DeadLetterInfo(
        error_code=error.code if error else "UNKNOWN",
        error_category=error.category.value if error else "unexpected",
        error_message=error.message if error else "",
        attempts=outcome.delivery.receive_count,
        processor=spec.name if spec else None,
        tenant_id=outcome.message.tenant_id
        if outcome.message
        else outcome.delivery.attributes.get("tenant_id"),
    )


def _error_response(status: int, exc: Exception) -> HttpResponse:
    code = getattr(exc, "code", "ERROR")
    return HttpResponse(status, {"error": code, "message": str(exc)})


def _json_object(body: bytes | str | None) -> dict[str, Any]:
    if body is None or body in (b"", ""):
        return {}
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessageError(f"request body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedMessageError("request body must be a JSON object")
    return obj


def _match_path(pattern: str, path: str) -> dict[str, str] | None:
    p_parts = pattern.strip("/").split("/")
    a_parts = path.split("?", 1)[0].strip("/").split("/")
    if len(p_parts) != len(a_parts):
        return None
    params: dict[str, str] = {}
    for p, a in zip(p_parts, a_parts, strict=True):
        if p.startswith("{") and p.endswith("}"):
            params[p[1:-1]] = a
        elif p != a:
            return None
    return params
