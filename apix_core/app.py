"""``App``: the registry of processors, their topology, and the shared store and transport."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from apix_core import http
from apix_core.config import Settings
from apix_core.constants import FAST_RETRY_MAX_SECONDS, TENANT_ATTRIBUTE
from apix_core.errors import ApixError, ConfigurationError, MissingTenantError
from apix_core.hashing import deterministic_id
from apix_core.http import HttpResponse
from apix_core.message import Message, MessageType, build_message
from apix_core.processing.handler import ProcessorHandler
from apix_core.processing.outcomes import Outcome, OutcomeKind
from apix_core.processing.settle import ConsumerSettler, SettleFailure
from apix_core.processor import ProcessorConfig, ProcessorInterface, ProcessorSpec, build_spec
from apix_core.tenancy import tenant_context
from apix_core.topology import SCHEDULE_QUEUE_PREFIX, Topology, schedule_queue
from apix_core.transport.base import Consumer, OutgoingMessage, Producer, ReceivedMessage

if TYPE_CHECKING:
    from apix_core.store.database import Database
    from apix_core.store.repositories import Store

F = TypeVar("F", bound=Callable[..., Any])

_log = logging.getLogger("apix.http")

_QUEUE_NAME = re.compile("[^\x00-\x1f\x7f\ud800-\udfff]{1,255}")


class App:
    """A named set of processors: the registry (``topology``) and the lifecycle of the store and
    transport they share. Triggers (the local runtime, ``apix serve``, the cloud adapters) drive
    it through :meth:`process`, :meth:`settle`, :meth:`handle_http` and :meth:`timer_message`.

    Configuration comes from the arguments, else from ``APIX_*`` environment variables (see
    :mod:`apix_core.constants`). The store and transport are created on :meth:`start`; the
    transport is the one ``APIX_QUEUE_URL`` names (``apix_core.transport.registry``).
    """

    def __init__(
        self,
        name: str,
        *,
        database_url: str | None = None,
        queue_url: str | None = None,
        tenant_id: str | None = None,
        transport: Producer | None = None,
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
        self.topology = Topology()
        self._settings: Settings | None = None
        self._user_transport = transport
        self.transport: Producer | None = transport
        self.store: Store | None = None
        self._databases: list[Database] = []
        self._handlers: dict[str, ProcessorHandler] = {}
        #: Ids of keyed HTTP requests being processed here (a concurrent retry gets 409).
        self._http_in_flight: set[str] = set()
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
        self.topology.add(spec)
        if self._started:
            self._handlers[name] = self._make_handler(spec)
        return spec

    # -- topology (apix_core.topology) ----------------------------------------------------
    @property
    def specs(self) -> dict[str, ProcessorSpec]:
        return self.topology.specs

    def consumer_of(self, queue: str) -> ProcessorSpec | None:
        return self.topology.consumer_of(queue)

    def input_queue(self, spec: ProcessorSpec) -> str | None:
        return self.topology.input_queue(spec)

    def queues(self) -> list[str]:
        """Every queue the app consumes or produces."""
        return self.topology.queues()

    def mermaid(self) -> str:
        """The topology as a Mermaid flowchart (:meth:`Topology.mermaid`)."""
        return self.topology.mermaid()

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env(**self._overrides)
        return self._settings

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has run (and :meth:`close` not since): adapters check it per
        invocation instead of awaiting ``start()``."""
        return self._started

    async def start(self) -> None:
        """Open the store and transport (and migrate the embedded SQLite store)."""
        if self._started:
            return
        # The store (and SQLAlchemy) loads here, not on import: a cold start that never
        # starts an app does not pay for it.
        from apix_core.store.database import Database
        from apix_core.store.repositories import Store
        from apix_core.transport.registry import open_transport

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
            self.transport = await open_transport(s.queue_url, settings=s, database=db)
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
        fast = self.settings.fast_retries
        if fast:
            # A copy: the registered spec keeps its production backoff.
            from apix_core.processing.outcomes import fast_backoff

            backoff = fast_backoff(spec.config.backoff, FAST_RETRY_MAX_SECONDS)
            spec = replace(spec, config=replace(spec.config, backoff=backoff))
        handler = ProcessorHandler(
            spec, store=self.store, transport=self.transport, default_tenant=self.settings.tenant_id
        )
        if fast:
            handler.retry = replace(handler.retry, cap=FAST_RETRY_MAX_SECONDS)
        return handler

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
        """Put a message on a queue (what an upstream system or ``apix send`` does).

        Raises apix's typed errors only: :class:`~apix_core.errors.InvalidTenantError`,
        :class:`~apix_core.errors.InvalidMessageIdError` (empty, over 255 characters, NUL or
        control characters), :class:`~apix_core.errors.PayloadValidationError`,
        :class:`~apix_core.errors.JsonTooDeepError` (``MAX_JSON_DEPTH``),
        :class:`~apix_core.errors.MessageTooLargeError`."""
        await self.start()
        [out] = self._outgoing(queue, [payload], tenant_id, message_id, metadata)
        await self._producer().send(queue, out)
        return out.message_id

    def _producer(self) -> Producer:
        assert self.transport is not None, "the app is started"
        return self.transport

    def _outgoing(
        self,
        queue: str,
        payloads: Sequence[dict[str, Any]],
        tenant_id: str | None,
        message_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        message_ids: Sequence[str] | None = None,
    ) -> list[OutgoingMessage]:
        """Envelopes for ``send``/``send_many``, each checked (typed errors only) and sized."""
        tenant = tenant_id or self.settings.tenant_id
        if not tenant:
            raise MissingTenantError("send needs tenant_id= (or APIX_TENANT_ID)")
        if not isinstance(queue, str) or not _QUEUE_NAME.fullmatch(queue):
            raise ConfigurationError(
                f"queue name {str(queue)[:80]!r} must be 1-255 printable characters"
            )
        from apix_core.observability.tracing import inject_trace_context, tracing_enabled

        # Link the pipeline to the caller's trace when an SDK is active.
        trace = inject_trace_context() if tracing_enabled() else {}
        producer = self._producer()
        if message_ids is not None and len(message_ids) != len(payloads):
            raise ConfigurationError(
                f"send_many got {len(message_ids)} message_ids for {len(payloads)} payloads"
            )
        out: list[OutgoingMessage] = []
        for i, payload in enumerate(payloads):
            msg = build_message(
                message_id=(message_ids[i] if message_ids is not None else message_id)
                or str(uuid.uuid4()),
                tenant_id=tenant,
                payload=payload,
                metadata=metadata or {},
                trace_context=dict(trace),
            )
            body = msg.to_json()
            producer.check_size(queue, body)
            out.append(
                OutgoingMessage(msg.message_id, body, 0.0, {TENANT_ATTRIBUTE: tenant}, tenant)
            )
        return out

    #: Messages per ``send_batch`` call (one transaction on the local transport) in
    #: :meth:`send_many`.
    SEND_MANY_BATCH = 500

    async def send_many(
        self,
        queue: str,
        payloads: Sequence[dict[str, Any]],
        *,
        tenant_id: str | None = None,
        message_ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> list[str]:
        """Put many messages on a queue, one ``send_batch`` (one transaction on the local
        transport) per :attr:`SEND_MANY_BATCH` messages; returns their ids in order.

        ``message_ids`` (one per payload) makes the sends idempotent: a queue, and the consuming
        processor, drop an id they already hold. Every message is built and size-checked before
        the first is sent, so a bad payload sends nothing."""
        await self.start()
        outgoing = self._outgoing(queue, payloads, tenant_id, None, metadata, message_ids)
        step = self.SEND_MANY_BATCH
        for start in range(0, len(outgoing), step):
            await self._producer().send_batch(queue, outgoing[start : start + step])
        return [m.message_id for m in outgoing]

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

    async def settle(self, queue: str, outcomes: Sequence[Outcome]) -> list[SettleFailure]:
        """Apply outcomes on the app's transport: ack, release with delay, or dead-letter
        (the local settlement, :class:`~apix_core.processing.settle.ConsumerSettler`).

        Each outcome is settled on its own: returns the deliveries that could not be (logged,
        retried once, left in flight for redelivery) — never raises for one of them."""
        spec = self.consumer_of(queue)
        settler = ConsumerSettler(self.consumer(), spec.name if spec else None)
        return await settler.settle(queue, outcomes)

    def consumer(self) -> Consumer:
        """The app's transport as a consumer (what polling workers need)."""
        if not isinstance(self.transport, Consumer):
            raise ConfigurationError(
                f"the transport {getattr(self.transport, 'name', None)!r} cannot receive: "
                "it can only send (use a transport that consumes, e.g. the local one)"
            )
        return self.transport

    # -- HTTP (apix_core.http) -------------------------------------------------------------
    def match_route(self, method: str, path: str) -> tuple[ProcessorSpec, dict[str, str]] | None:
        return http.match_route(self.specs.values(), method, path)

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
        ``Idempotency-Key`` header makes retries of the same request exactly-once. A read-only
        route (GET, HEAD or OPTIONS, no ``produces``) records nothing and may not write.
        """
        await self.start()
        found = self.match_route(method, path)
        if found is None:
            return http.not_found(method, path)
        spec, params = found
        try:
            message = http.request_message(
                self.name,
                spec,
                params,
                method=method,
                path=path,
                headers=headers,
                body=body,
                query=query,
                tenant_header=self.settings.tenant_header,
                default_tenant=self.settings.tenant_id,
            )
        except http.HttpRejected as rejected:
            return rejected.response
        except ApixError as exc:  # any other bad input of the request: an answer, not a raise
            return http.error_response(400, exc)
        handler = self.handler(spec.name)
        if spec.read_only:
            # A read records nothing: no claim, so no idempotency row and never "duplicate".
            outcome = await handler.handle_read(message)
            return http.response_for(outcome, spec)
        if "idempotency_key" not in message.metadata["http"]:
            return http.response_for(await handler.handle(message), spec)
        # Keyed: the first answer commits with the claim, and a retry gets it again.
        if handler.keep_answer is None:
            handler.keep_answer = partial(http.answer_to_keep, spec)
        in_flight, message_id = self._http_in_flight, message.message_id
        if message_id in in_flight:
            return http.in_progress(message)
        in_flight.add(message_id)
        try:
            outcome = await handler.handle(message)
        finally:
            in_flight.discard(message_id)
        if outcome.kind is not OutcomeKind.DUPLICATE or self.store is None:
            return http.response_for(outcome, spec)
        try:
            with tenant_context(message.tenant_id):
                kept = await self.store.idempotency.kept_answer(spec.name, message_id)
        except Exception:
            _log.warning("could not read a kept HTTP answer", exc_info=True)
            return http.HttpResponse(
                503,
                {"error": "DATABASE_ERROR", "message": "the first answer could not be read"},
                {"Content-Type": "application/json", "Retry-After": "1"},
            )
        return http.replayed(kept, message, outcome, spec)


__all__ = ["SCHEDULE_QUEUE_PREFIX", "App", "HttpResponse", "schedule_queue"]
