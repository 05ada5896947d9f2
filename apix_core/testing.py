"""Test your processors in-process, on a real embedded store: :class:`TestApp`.

``async with TestApp(app, tenant_id="acme") as t:`` points an :class:`~apix_core.App` at a fresh
temporary SQLite store and local queues (a directory it creates and removes), starts it, and
gives you the trigger's paths as calls (:meth:`~TestApp.deliver`, :meth:`~TestApp.request`,
:meth:`~TestApp.tick`, :meth:`~TestApp.drain`) and tenant-scoped inspection of what they left
behind (:meth:`~TestApp.entities`, :meth:`~TestApp.messages`, :meth:`~TestApp.dead_letters`...).
On exit the app is closed and its configuration restored: the user's module is not changed, and
``./.apix`` is never touched.

Not imported by ``import apix_core``: import it from ``apix_core.testing`` in your tests.
"""

from __future__ import annotations

import json as _json
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pydantic import BaseModel

from apix_core._closing import Closing
from apix_core.app import App
from apix_core.config import Settings, default_queue_url
from apix_core.constants import TENANT_ATTRIBUTE
from apix_core.errors import ConfigurationError
from apix_core.http import HttpResponse
from apix_core.message import Message
from apix_core.processing.outcomes import Outcome, OutcomeKind, dead_letter_info
from apix_core.processor import ProcessorSpec
from apix_core.tenancy import check_tenant_id, tenant_context
from apix_core.topology import schedule_queue
from apix_core.transport.base import ReceivedMessage

if TYPE_CHECKING:
    from apix_core.runtime.runner import RunStats
    from apix_core.store.repositories import ProcessingErrorRecord, Store
    from apix_core.store.state import StateEntry
    from apix_core.store.types import Entity, StateTransition
    from apix_core.transport.base import DeadLetterRecord
    from apix_core.transport.local import LocalTransport

#: What :meth:`TestApp.deliver` accepts as a payload: a dict, a pydantic model (dumped as JSON
#: data) or a whole :class:`Message` (its ids, tenant and attempt are kept).
Payload = Mapping[str, Any] | BaseModel | Message

_INSPECT_LIMIT = 10_000


class TestApp(Closing):
    """An :class:`App` on a throwaway store, driven the way its triggers drive it.

    ``tenant_id`` is the tenant of every call that does not name one (default: the app's own
    ``tenant_id`` / ``APIX_TENANT_ID``); inspection is scoped to it. ``database_url`` puts the
    store elsewhere (a fresh PostgreSQL database, say; you own its cleanup); ``settings`` are
    further ``App`` settings for the test (``max_attempts=2``, ``batch_size=1``...).

    Schedules never fire by themselves: call :meth:`tick`.
    """

    __test__ = False  # a library class whose name starts with "Test": not a pytest test class

    def __init__(
        self,
        app: App,
        *,
        tenant_id: str | None = None,
        database_url: str | None = None,
        **settings: Any,
    ) -> None:
        if not isinstance(app, App):
            raise ConfigurationError(f"TestApp wraps an apix App, not {type(app).__name__}")
        self.app = app
        self._tenant_arg = tenant_id
        self._database_url = database_url
        self._settings_arg = settings
        self.directory: Path | None = None
        self._saved: dict[str, Any] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def start(self) -> None:
        """Point the app at a fresh store and local queues, and start it."""
        app = self.app
        if app._started or self._saved is not None:
            raise ConfigurationError(
                f"app {app.name!r} is already started: TestApp needs an app that is not running "
                "(it points the app at its own temporary store); close it first"
            )
        saved = {
            "_overrides": app._overrides,
            "_settings": app._settings,
            "_user_transport": app._user_transport,
            "transport": app.transport,
            # App.start fills in max_attempts from the settings on the specs themselves.
            "max_attempts": {n: s.config.max_attempts for n, s in app.specs.items()},
        }
        directory = Path(tempfile.mkdtemp(prefix="apix-test-"))
        if self._database_url:
            db_url = self._database_url
            queue_url = default_queue_url(db_url)
        else:
            db_url = f"sqlite+aiosqlite:///{directory / 'apix.db'}"
            queue_url = f"sqlite+aiosqlite:///{directory / 'queues.db'}"
        overrides = {
            **app._overrides,
            **self._settings_arg,
            "database_url": db_url,
            "queue_url": queue_url,
            "auto_migrate": True,
        }
        if self._tenant_arg is not None:
            overrides["tenant_id"] = check_tenant_id(self._tenant_arg)
        try:
            settings = Settings.from_env(**overrides)
            if not settings.tenant_id:
                raise ConfigurationError(
                    "TestApp needs a tenant: TestApp(app, tenant_id=...) "
                    "(or App(tenant_id=) / APIX_TENANT_ID)"
                )
            app._overrides = overrides
            app._settings = settings
            # A user transport (SQS, Service Bus...) is set aside: tests run on local queues.
            app._user_transport = None
            app.transport = None
            self._saved = saved
            self.directory = directory
            await app.start()
        except BaseException:
            await self.close()
            shutil.rmtree(directory, ignore_errors=True)
            raise

    async def close(self) -> None:
        """Close the app, restore its configuration, remove the temporary directory."""
        saved, self._saved = self._saved, None
        if saved is None:
            return
        app = self.app
        try:
            await app.close()
        finally:
            app._overrides = saved["_overrides"]
            app._settings = saved["_settings"]
            app._user_transport = saved["_user_transport"]
            app.transport = saved["transport"]
            for name, max_attempts in saved["max_attempts"].items():
                if name in app.specs:
                    app.specs[name].config.max_attempts = max_attempts
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None

    # -- properties -----------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        self._require_started()
        return self.app.settings

    @property
    def tenant_id(self) -> str:
        tenant = self.settings.tenant_id
        assert tenant is not None  # checked on start
        return tenant

    @property
    def store(self) -> Store:
        """The metadata store (None when no processor persists: then this raises)."""
        self._require_started()
        if self.app.store is None:
            raise ConfigurationError(
                "this app has no metadata store: none of its processors persists "
                "(enable_persistence=False everywhere)"
            )
        return self.app.store

    @property
    def transport(self) -> LocalTransport:
        from apix_core.transport.local import LocalTransport

        self._require_started()
        transport = self.app.transport
        assert isinstance(transport, LocalTransport)  # TestApp always opens local queues
        return transport

    def _require_started(self) -> None:
        if self._saved is None:
            raise ConfigurationError("use `async with TestApp(app) as t:` (or await t.start())")

    # -- the trigger's paths --------------------------------------------------------------
    async def deliver(
        self,
        queue_or_processor: str,
        payload: Payload,
        *,
        tenant_id: str | None = None,
        message_id: str | None = None,
        attempt: int = 1,
        attributes: Mapping[str, str] | None = None,
    ) -> Outcome:
        """Run the consumer of a queue (or the named processor's input queue) on one message,
        exactly as a queue trigger does; returns its outcome.

        The message does not go through the queue: it is delivered directly, as its
        ``attempt``-th delivery. Its outputs are really sent (see :meth:`messages`). Settlement:
        a ``DEAD_LETTER`` outcome is recorded as a dead letter (see :meth:`dead_letters`); a
        ``RETRY`` is not redelivered (deliver again with ``attempt=`` + 1 to play the retry).
        """
        return (
            await self.deliver_many(
                queue_or_processor,
                [payload],
                tenant_id=tenant_id,
                message_ids=[message_id] if message_id else None,
                attempt=attempt,
                attributes=attributes,
            )
        )[0]

    async def deliver_many(
        self,
        queue_or_processor: str,
        payloads: Iterable[Payload],
        *,
        tenant_id: str | None = None,
        message_ids: Iterable[str] | None = None,
        attempt: int = 1,
        attributes: Mapping[str, str] | None = None,
    ) -> list[Outcome]:
        """:meth:`deliver` for several messages as ONE batch (one unit of work, as a batch
        trigger delivers them); outcomes in order."""
        queue = self._queue_of(queue_or_processor)
        items = list(payloads)
        ids = list(message_ids) if message_ids is not None else [None] * len(items)
        if len(ids) != len(items):
            raise ConfigurationError(f"{len(items)} payloads but {len(ids)} message ids")
        deliveries = [
            self._delivery(queue, p, tenant_id, mid, attempt, attributes)
            for p, mid in zip(items, ids, strict=True)
        ]
        return await self._run(queue, deliveries)

    async def tick(self, processor: str, when: datetime | None = None) -> Outcome:
        """Fire a schedule processor once, for ``when`` (default: now, UTC). The tick's message
        id derives from the time (to the second), so a second tick for the same time is a
        ``DUPLICATE``, as when two schedulers fire the same tick."""
        spec = self._spec(processor)
        if not spec.schedule:
            raise ConfigurationError(f"processor {processor!r} has no schedule= to tick")
        message = self.app.timer_message(spec, when or datetime.now(UTC))
        queue = schedule_queue(spec)
        return (await self._run(queue, [self._received(queue, message, None)]))[0]

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        tenant_id: str | None = None,
    ) -> HttpResponse:
        """Call a ``route=`` processor as the HTTP trigger does (``App.handle_http``). The
        tenant header is filled from ``tenant_id`` (default: the test's tenant) unless
        ``headers`` carry one; ``json=`` is encoded as the body."""
        self._require_started()
        if json is not None and body is not None:
            raise ConfigurationError("pass json= or body=, not both")
        sent = dict(headers or {})
        header = self.settings.tenant_header
        if not any(k.lower() == header.lower() for k in sent):
            sent[header] = tenant_id or self.tenant_id
        if json is not None:
            body = _json.dumps(json)
            if not any(k.lower() == "content-type" for k in sent):
                sent["Content-Type"] = "application/json"
        return await self.app.handle_http(method, path, headers=sent, body=body, query=query)

    async def send(
        self,
        queue: str,
        payload: Mapping[str, Any] | BaseModel,
        *,
        tenant_id: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """Put a message on a queue (for :meth:`drain`); returns its id."""
        self._require_started()
        return await self.app.send(
            queue, _payload_dict(payload), tenant_id=tenant_id, message_id=message_id
        )

    async def drain(self, max_seconds: float = 10.0) -> RunStats:
        """Run every queue's worker until all queues are empty (or ``max_seconds`` passed:
        ``stats.depths`` shows what is left, e.g. a retry waiting for its backoff). Schedules do
        not fire. Settlement is the real one: acks, releases with backoff, dead letters."""
        from apix_core.runtime.runner import LocalRunner

        self._require_started()
        return await LocalRunner(self.app, fire_schedules=False, max_seconds=max_seconds).run()

    # -- inspection (the test's tenant) ---------------------------------------------------
    async def entities(
        self, canonical_type: str | None = None, *, state: str | None = None
    ) -> list[Entity]:
        """The tenant's entities, most recently updated first."""
        with tenant_context(self.tenant_id):
            return await self.store.entities.list(
                canonical_type=canonical_type, state=state, limit=_INSPECT_LIMIT
            )

    async def entity(self, entity_id: str) -> Entity:
        with tenant_context(self.tenant_id):
            return await self.store.entities.get(entity_id)

    async def transitions(self, entity_id: str) -> list[StateTransition]:
        """The entity's state transitions, oldest first."""
        with tenant_context(self.tenant_id):
            return await self.store.states.transitions(entity_id)

    async def errors(self, processor: str | None = None) -> list[ProcessingErrorRecord]:
        """Recorded processing errors, newest first."""
        with tenant_context(self.tenant_id):
            return await self.store.errors.list(processor=processor, limit=_INSPECT_LIMIT)

    async def dead_letters(self, queue: str | None = None) -> list[DeadLetterRecord]:
        """The tenant's dead letters, newest first."""
        records = await self.transport.list_dead_letters(queue, limit=_INSPECT_LIMIT)
        return [r for r in records if r.tenant_id == self.tenant_id]

    async def messages(self, queue: str) -> list[Message]:
        """The tenant's messages waiting on ``queue`` (visible, delayed or in flight), oldest
        first, without consuming them."""
        import sqlalchemy as sa

        from apix_core.store.models import queue_messages as qm
        from apix_core.store.sql import PG_MAX_ROWS

        transport = self.transport
        # Every tenant's rows: a message the queue holds as tenantless may name this tenant in
        # its body. On PostgreSQL (the queue's tenant policy) through the transport's peek.
        rows: list[tuple[str, str, Any]]
        if transport.db.is_postgres:
            queued = await transport.peek(queue, limit=PG_MAX_ROWS)
            rows = [(q.message_id, q.body, q.attributes) for q in queued]
        else:
            stmt = (
                sa.select(qm.c.message_id, qm.c.body, qm.c.attributes)
                .where(qm.c.queue == queue)
                .order_by(qm.c.id)
            )
            async with transport.db.transaction(write=False) as conn:
                rows = [tuple(r) for r in (await conn.execute(stmt)).all()]
        found = []
        for message_id, body, attributes in rows:
            message = Message.create_from_queue_data(
                body,
                default_tenant=(attributes or {}).get(TENANT_ATTRIBUTE) or self.tenant_id,
                transport_message_id=message_id,
            )
            if message.tenant_id == self.tenant_id:
                found.append(message)
        return found

    async def state(self, namespace: str, key: str) -> Any:
        """The stored value of ``(namespace, key)`` for the tenant, or None."""
        entry = await self.state_entry(namespace, key)
        return None if entry is None else entry.value

    async def state_entry(self, namespace: str, key: str) -> StateEntry | None:
        """The stored entry (value and version) of ``(namespace, key)``, or None."""
        from apix_core.store.state import StateRepository

        with tenant_context(self.tenant_id):
            return await StateRepository(self.store.db).get(namespace, key)

    # -- internals ------------------------------------------------------------------------
    def _spec(self, name: str) -> ProcessorSpec:
        self._require_started()
        spec = self.app.specs.get(name)
        if spec is None:
            raise ConfigurationError(f"no processor named {name!r}")
        return spec

    def _queue_of(self, name: str) -> str:
        self._require_started()
        spec = self.app.specs.get(name)
        if spec is not None:
            queue = self.app.input_queue(spec)
            if queue is None:
                raise ConfigurationError(
                    f"processor {name!r} consumes no queue: "
                    + ("call it with t.request(...)" if spec.route else "nothing delivers to it")
                )
            return queue
        if self.app.consumer_of(name) is None:
            raise ConfigurationError(
                f"no processor named {name!r} and none consumes queue {name!r}"
            )
        return name

    def _delivery(
        self,
        queue: str,
        payload: Payload,
        tenant_id: str | None,
        message_id: str | None,
        attempt: int,
        attributes: Mapping[str, str] | None,
    ) -> ReceivedMessage:
        if isinstance(payload, Message):
            message = payload
        else:
            message = Message(
                message_id=message_id or str(uuid.uuid4()),
                tenant_id=tenant_id or self.tenant_id,
                payload=_payload_dict(payload),
                attempt=attempt,
            )
        return self._received(queue, message, attributes)

    def _received(
        self, queue: str, message: Message, attributes: Mapping[str, str] | None
    ) -> ReceivedMessage:
        return ReceivedMessage(
            queue=queue,
            message_id=message.message_id,
            body=message.to_json(),
            receive_count=message.attempt,
            attributes={TENANT_ATTRIBUTE: message.tenant_id, **(attributes or {})},
        )

    async def _run(self, queue: str, deliveries: list[ReceivedMessage]) -> list[Outcome]:
        outcomes = await self.app.process(queue, deliveries)
        spec = self.app.consumer_of(queue)
        for o in outcomes:
            if o.kind is OutcomeKind.DEAD_LETTER:
                # No receipt: the transport records the dead letter and deletes nothing.
                await self.transport.dead_letter(
                    queue, o.delivery, dead_letter_info(o, spec.name if spec else None)
                )
        return outcomes


def _payload_dict(payload: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json")
    if not isinstance(payload, Mapping):
        raise ConfigurationError(
            f"a payload is a dict or a pydantic model, not {type(payload).__name__}"
        )
    return dict(payload)


__all__ = ["Payload", "TestApp"]
