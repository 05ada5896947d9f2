"""Azure Service Bus as an apix output: a producer only.

URL (registry entry point ``servicebus``)::

    servicebus://                         connection string from the app setting
                                          APIX_AZURE_SERVICEBUS_CONNECTION, else
                                          AzureWebJobsServiceBus (the Functions default)
    servicebus://?connection=MY_SETTING   from the app setting MY_SETTING
    servicebus://?connection=S&max_message_bytes=104857600&max_batch_bytes=1048576   (Premium)
    servicebus://?prefix=cust-a-&time_to_live=3600   queue name prefix (default: the app setting
                                          APIX_AZURE_QUEUE_PREFIX); message TTL in seconds

Messages. Each :class:`~apix_core.transport.base.OutgoingMessage` becomes a
``ServiceBusMessage`` (:func:`build_message`): ``message_id`` is the apix id (so the queue's
duplicate detection, when enabled, drops re-sends), the body is the envelope JSON
(``content_type`` ``application/json``), ``application_properties`` carry the attributes
(``tenant_id``, ``traceparent``, ``correlation_id``...), the attribute ``session_id`` becomes the
session id (for session-enabled queues) instead of a property, ``correlation_id`` also fills the
message's own field, a delay becomes ``scheduled_enqueue_time_utc`` and the transport's
``time_to_live`` the message TTL.

Sizes. Service Bus counts a message's AMQP-encoded size (body, properties, headers): 256 KiB on
Standard, up to 100 MiB on Premium (``max_message_bytes``). ``send_batch`` splits the messages
with :func:`plan_batches`, which measures them with the SDK's own ``ServiceBusMessageBatch``
(what ``ServiceBusSender.create_message_batch`` returns), so each group fits in one batch of
``max_batch_bytes`` (default: the message limit, at most 1 MiB); a message larger than a batch
but within the message limit is sent on its own, a larger one raises
:class:`~apix_core.errors.MessageTooLargeError` before anything is sent.
:meth:`ServiceBusTransport.check_size` only sees a body, so it counts its UTF-8 bytes — a lower
bound of the encoded size.

Testing. There is no Service Bus emulator here, and a broker is never faked: the tests cover
everything up to the SDK boundary — the ``ServiceBusMessage`` objects built, the split by size
and the typed errors — but not a real send.

A :class:`~apix_core.transport.base.Producer` only: Service Bus is consumed by the Functions
trigger, which settles messages itself (dead letters in ``<queue>/$deadletterqueue``), so this
transport neither receives nor offers the admin capabilities; ``apix worker`` and ``apix dlq``
say so (``App.consumer()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apix_azure.errors import AzureConnectionError, InvalidQueueNameError
from apix_azure.transport._settings import parse_url, queue_prefix, resolve_connection_string
from apix_core.errors import (
    ConfigurationError,
    MessageTooLargeError,
    PermanentError,
    TransportError,
)
from apix_core.transport.base import OutgoingMessage, Producer

if TYPE_CHECKING:
    from azure.servicebus import ServiceBusMessage
    from azure.servicebus.aio import ServiceBusClient, ServiceBusSender

DEFAULT_SETTINGS = ("APIX_AZURE_SERVICEBUS_CONNECTION", "AzureWebJobsServiceBus")
STANDARD_MAX_MESSAGE_BYTES = 256 * 1024
PREMIUM_MAX_MESSAGE_BYTES = 100 * 1024 * 1024
MAX_DEFAULT_BATCH_BYTES = 1024 * 1024
SESSION_ATTRIBUTE = "session_id"
CORRELATION_ATTRIBUTE = "correlation_id"
_NAME = re.compile(r"[A-Za-z0-9._-](?:[A-Za-z0-9._/-]{0,258}[A-Za-z0-9._-])?")
_MEASURE_LIMIT = 2**31  # a batch this large measures any message without refusing it


def servicebus_queue_name(name: str) -> str:
    """``name`` if Service Bus can hold it: 1-260 letters, digits, ``.``, ``_``, ``-``, ``/``,
    not starting or ending with ``/`` (queues are case-insensitive; apix names map unchanged)."""
    if not _NAME.fullmatch(name):
        raise InvalidQueueNameError(
            f"queue name {name!r} cannot be a Service Bus queue: use 1-260 letters, digits, "
            "'.', '_', '-' or '/', not starting or ending with '/'"
        )
    return name


def build_message(
    message: OutgoingMessage, *, time_to_live: timedelta | None = None, now: datetime | None = None
) -> ServiceBusMessage:
    """The ``ServiceBusMessage`` of an apix message (mapping in the module docstring)."""
    from azure.servicebus import ServiceBusMessage

    properties: dict[str | bytes, Any] = {
        k: v for k, v in message.attributes.items() if k != SESSION_ATTRIBUTE
    }
    session_id = message.attributes.get(SESSION_ATTRIBUTE)
    scheduled = None
    if message.delay_seconds > 0:
        scheduled = (now or datetime.now(UTC)) + timedelta(seconds=message.delay_seconds)
    try:
        return ServiceBusMessage(
            message.body,
            message_id=message.message_id,
            content_type="application/json",
            application_properties=properties or None,
            session_id=session_id,
            correlation_id=message.attributes.get(CORRELATION_ATTRIBUTE),
            time_to_live=time_to_live,
            scheduled_enqueue_time_utc=scheduled,
        )
    except (ValueError, TypeError) as exc:
        raise PermanentError(
            f"message {message.message_id!r} cannot be a Service Bus message: {exc}"
        ) from exc


def encoded_message_size(message: ServiceBusMessage) -> int:
    """Bytes ``message`` takes in a batch of its own, as the SDK counts them."""
    from azure.servicebus import ServiceBusMessageBatch

    batch = ServiceBusMessageBatch(max_size_in_bytes=_MEASURE_LIMIT)
    batch.add_message(message)
    return batch.size_in_bytes


def plan_batches(
    messages: Sequence[ServiceBusMessage],
    *,
    max_batch_bytes: int,
    max_message_bytes: int,
    destination: str = "servicebus",
) -> list[list[ServiceBusMessage]]:
    """Split ``messages`` (order kept) into groups that each fit one ``ServiceBusMessageBatch``
    of ``max_batch_bytes``; a message above that but within ``max_message_bytes`` is a group
    of its own (sent alone). Raises :class:`MessageTooLargeError` before any split if one
    message exceeds ``max_message_bytes``."""
    from azure.servicebus import ServiceBusMessageBatch
    from azure.servicebus.exceptions import MessageSizeExceededError

    sizes = [encoded_message_size(m) for m in messages]
    for size in sizes:
        if size > max_message_bytes:
            raise MessageTooLargeError(size, max_message_bytes, destination)
    groups: list[list[ServiceBusMessage]] = []
    group: list[ServiceBusMessage] = []
    batch = ServiceBusMessageBatch(max_size_in_bytes=max_batch_bytes)
    for message, size in zip(messages, sizes, strict=True):
        if size > max_batch_bytes:  # alone, in its place: close the open group first
            if group:
                groups.append(group)
            groups.append([message])
            group, batch = [], ServiceBusMessageBatch(max_size_in_bytes=max_batch_bytes)
            continue
        try:
            batch.add_message(message)
        except MessageSizeExceededError:
            groups.append(group)
            group, batch = [], ServiceBusMessageBatch(max_size_in_bytes=max_batch_bytes)
            batch.add_message(message)
        group.append(message)
    if group:
        groups.append(group)
    return groups


@contextlib.contextmanager
def _servicebus_errors(what: str) -> Iterator[None]:
    from azure.servicebus.exceptions import (
        MessagingEntityNotFoundError,
        ServiceBusAuthenticationError,
        ServiceBusAuthorizationError,
        ServiceBusError,
    )

    try:
        yield
    except (ServiceBusAuthenticationError, ServiceBusAuthorizationError) as exc:
        raise AzureConnectionError(f"{what}: Service Bus refused the credentials") from exc
    except MessagingEntityNotFoundError as exc:
        raise ConfigurationError(f"{what}: no such queue in the namespace") from exc
    except ServiceBusError as exc:
        raise TransportError(f"{what}: {type(exc).__name__}: {exc.message}") from exc


@dataclass
class _LoopClients:
    client: ServiceBusClient
    senders: dict[str, ServiceBusSender] = field(default_factory=dict)


class ServiceBusTransport(Producer):
    """Sends apix messages to Service Bus queues; receiving is the Functions trigger's job."""

    name = "servicebus"

    def __init__(
        self,
        connection_string: str | None = None,
        *,
        connection: str | None = None,
        max_message_bytes: int = STANDARD_MAX_MESSAGE_BYTES,
        max_batch_bytes: int | None = None,
        time_to_live: timedelta | None = None,
        prefix: str | None = None,
    ) -> None:
        """The connection string comes as for the storage transport: given, else the app
        setting ``connection``, else ``APIX_AZURE_SERVICEBUS_CONNECTION`` or
        ``AzureWebJobsServiceBus``. ``prefix`` (default ``APIX_AZURE_QUEUE_PREFIX``) goes
        before every queue name."""
        self.prefix = queue_prefix(prefix)
        settings = (connection,) if connection else DEFAULT_SETTINGS
        self._conn, self._source = resolve_connection_string(connection_string, settings)
        if max_message_bytes <= 0 or (max_batch_bytes is not None and max_batch_bytes <= 0):
            raise ConfigurationError("Service Bus size limits must be positive")
        self._max_message_bytes = max_message_bytes
        self.max_batch_bytes = max_batch_bytes or min(max_message_bytes, MAX_DEFAULT_BATCH_BYTES)
        self.time_to_live = time_to_live
        self.namespace = self._new_client().fully_qualified_namespace  # validates the string
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ServiceBusTransport:
        params = parse_url(
            url,
            "servicebus",
            ("connection", "max_message_bytes", "max_batch_bytes", "prefix", "time_to_live"),
        )
        for key in ("connection", "prefix"):
            if key in params:
                kwargs.setdefault(key, params[key])
        if "time_to_live" in params:
            try:
                seconds = float(params["time_to_live"])
            except ValueError:
                raise ConfigurationError(f"{url!r}: time_to_live is not a number") from None
            if not 0 < seconds < float("inf"):
                raise ConfigurationError(f"{url!r}: time_to_live must be positive seconds")
            kwargs.setdefault("time_to_live", timedelta(seconds=seconds))
        for key in ("max_message_bytes", "max_batch_bytes"):
            if key in params:
                try:
                    kwargs.setdefault(key, int(params[key]))
                except ValueError:
                    raise ConfigurationError(f"{url!r}: {key} is not an integer") from None
        return cls(**kwargs)

    def _new_client(self) -> ServiceBusClient:
        from azure.servicebus.aio import ServiceBusClient

        try:
            return ServiceBusClient.from_connection_string(self._conn)
        except (ValueError, KeyError, TypeError) as exc:
            raise AzureConnectionError(
                f"{self._source}: unusable Service Bus connection string: {exc}"
            ) from exc

    def _sender(self, queue: str) -> ServiceBusSender:
        loop = asyncio.get_running_loop()
        clients = self._clients.get(loop)
        if clients is None:
            clients = self._clients[loop] = _LoopClients(self._new_client())
        sender = clients.senders.get(queue)
        if sender is None:
            sender = clients.senders[queue] = clients.client.get_queue_sender(queue)
        return sender

    # -- producer ---------------------------------------------------------------------------

    def max_message_bytes(self, queue: str) -> int:
        return self._max_message_bytes

    def build_messages(self, messages: Sequence[OutgoingMessage]) -> list[ServiceBusMessage]:
        now = datetime.now(UTC)
        return [build_message(m, time_to_live=self.time_to_live, now=now) for m in messages]

    def plan(
        self, queue: str, messages: Sequence[OutgoingMessage]
    ) -> list[list[ServiceBusMessage]]:
        """The groups :meth:`send_batch` sends, one ``send_messages`` call each."""
        name = servicebus_queue_name(self.prefix + queue)
        return plan_batches(
            self.build_messages(messages),
            max_batch_bytes=self.max_batch_bytes,
            max_message_bytes=self._max_message_bytes,
            destination=f"{self.name}:{name}",
        )

    async def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        groups = self.plan(queue, messages)
        sender = self._sender(self.prefix + queue)
        with _servicebus_errors(f"sending to {queue!r}"):
            for group in groups:
                if len(group) == 1:
                    await sender.send_messages(group[0])
                    continue
                try:
                    batch = await sender.create_message_batch(
                        max_size_in_bytes=self.max_batch_bytes
                    )
                except ValueError as exc:  # above the namespace's batch limit
                    raise ConfigurationError(f"max_batch_bytes: {exc}") from exc
                for message in group:
                    batch.add_message(message)
                await sender.send_messages(batch)

    async def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            clients = self._clients.pop(asyncio.get_running_loop(), None)
            if clients is not None:
                for sender in clients.senders.values():
                    await sender.close()
                await clients.client.close()

    # -- not supported: Service Bus is consumed by the Functions trigger --------------------


def from_url(url: str, **kwargs: Any) -> ServiceBusTransport:
    """Entry point ``apix.transports`` / ``servicebus`` (URL forms in the module docstring)."""
    return ServiceBusTransport.from_url(url, **kwargs)


__all__ = [
    "ServiceBusTransport",
    "build_message",
    "encoded_message_size",
    "from_url",
    "plan_batches",
    "servicebus_queue_name",
]
