"""Azure Storage Queues as an apix transport, compatible with the Azure Functions host.

URL (registry entry point ``azure-queue``)::

    azure-queue://                          connection string from the app setting
                                            APIX_AZURE_STORAGE_CONNECTION, else AzureWebJobsStorage
    azure-queue://?connection=MY_SETTING    connection string from the app setting MY_SETTING
    azure-queue://?connection=S&visibility_timeout=60
    azure-queue://?prefix=cust-a-           every queue name gets the prefix (per customer);
                                            default: the app setting APIX_AZURE_QUEUE_PREFIX

A connection string is what the Functions host reads from the setting a binding names
(``AzureWebJobsStorage`` by default); ``UseDevelopmentStorage=true`` and Azurite's
``devstoreaccount1`` strings work too.

Wire format. Message text is **base64 of the UTF-8 body**, byte-identical to the SDK's
``TextBase64EncodePolicy`` and what the Functions queue trigger decodes by default. The 64 KiB
limit applies to that text: 65,536 bytes, i.e. 49,152 bytes of body; :meth:`check_size` counts
it exactly and ``send_batch`` checks every message before sending any. On receive, text that is
not base64 (a producer without the encode policy) is delivered as it is, and base64 that is not
UTF-8 as ``bytes``; the core then dead-letters what it cannot parse instead of the whole receive
failing. Storage Queues carry no attributes: ``OutgoingMessage.attributes`` are not sent (the
envelope in the body carries tenant and trace context). ``ReceivedMessage.message_id`` is the
Storage message id (stable across redeliveries), ``receipt`` the pop receipt,
``receive_count`` the dequeue count. Messages are sent with no expiry (``message_ttl=-1``);
there is no batch send API, so a batch is sent as concurrent single sends and a retry may
duplicate a message (the idempotency table absorbs duplicates).

Queue names. An apix queue name maps deterministically to an Azure name: lowercased, ``.`` and
``_`` become ``-`` (``raw.orders`` → ``raw-orders``, ``Orders_1`` → ``orders-1``). The result
must be 3–51 characters of ``a-z0-9-`` starting and ending alphanumeric with no ``--`` (51, not
63, leaves room for the ``-poison-info`` suffix), and must not end in ``-poison`` or
``-poison-info``; anything else raises :class:`~apix_azure.errors.InvalidQueueNameError`. So
names differing only in case or ``.``/``_``/``-`` share a queue. Queues are created on first use.

Prefix. With a queue name prefix (per-customer deployments sharing one account) the Azure name
of ``raw.orders`` under ``cust-a-`` is ``cust-a-raw-orders`` (the prefix is mapped like the
rest), and so are its poison queues; ``list_dead_letters()`` and ``queues()`` only show the
prefix's queues.

Dead letters. ``dead_letter`` puts the original message text, unchanged, in ``<queue>-poison``
— the Functions host's own poison queue, so host tooling and poison-queue triggers see what the
host would have put there — and the error (code, category, message, attempts, processor,
tenant, time) as a small JSON message in ``<queue>-poison-info``, keyed by the poison message's
id. A message the host poisoned (after ``maxDequeueCount``) has no info message; it is listed
with error code ``POISONED`` and no details. A dead-letter id is ``<azure queue>/<poison message
id>``. Poison and info messages never expire.

Admin limits, from the service: ``list_dead_letters`` peeks, so it shows at most the first 32
messages of each poison queue, without side effects. ``get_dead_letter`` and
``replay_dead_letter`` find a message further back by receiving the poison queue in pages of 32
under a short visibility timeout and making the others visible again at once (their dequeue
count grows; two admins scanning at the same moment may miss each other's hidden messages).
``replay_dead_letter`` sends the text back to the source queue, then deletes the poison and
info messages. ``depth`` reports the service's approximate message count as ``visible``: it
includes in-flight and delayed messages, which Storage Queues cannot count apart.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from apix_azure.errors import AzureConnectionError, InvalidQueueNameError
from apix_azure.transport._settings import parse_url, queue_prefix, resolve_connection_string
from apix_core.constants import DEFAULT_VISIBILITY_TIMEOUT
from apix_core.errors import (
    ConfigurationError,
    DeadLetterNotFoundError,
    TransportError,
)
from apix_core.transport.base import (
    DeadLetterInfo,
    DeadLetterRecord,
    OutgoingMessage,
    QueueDepth,
    QueueTransport,
    ReceivedMessage,
)

if TYPE_CHECKING:
    from azure.storage.queue import QueueMessage
    from azure.storage.queue.aio import QueueClient, QueueServiceClient

DEFAULT_SETTINGS = ("APIX_AZURE_STORAGE_CONNECTION", "AzureWebJobsStorage")
MAX_MESSAGE_TEXT_BYTES = 64 * 1024
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600
PEEK_LIMIT = 32  # the service's cap for peek and receive
POISON_SUFFIX = "-poison"
INFO_SUFFIX = "-poison-info"
POISONED_CODE = "POISONED"
_MAX_NAME = 63 - len(INFO_SUFFIX)
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*")
_SEND_CONCURRENCY = 16
_SCAN_VISIBILITY = 30
_MAX_ERROR_CHARS = 4000  # keeps an info message far below 64 KiB even in 4-byte characters


def azure_queue_name(name: str) -> str:
    """The Azure Storage queue of an apix queue name (see the module docstring)."""
    mapped = name.lower().replace(".", "-").replace("_", "-")
    problem = None
    if not 3 <= len(mapped) <= _MAX_NAME:
        problem = f"must map to 3-{_MAX_NAME} characters (got {len(mapped)})"
    elif not _NAME.fullmatch(mapped):
        problem = (
            "may only hold letters, digits, '.', '_' and '-', start and end with a letter or "
            "digit, and not hold two separators in a row"
        )
    elif mapped.endswith((POISON_SUFFIX, INFO_SUFFIX)):
        problem = f"must not end in {POISON_SUFFIX!r} or {INFO_SUFFIX!r} (dead-letter queues)"
    if problem:
        raise InvalidQueueNameError(
            f"queue name {name!r} cannot be an Azure Storage queue: it {problem}; apix maps a "
            "name by lowercasing it and turning '.' and '_' into '-'"
        )
    return mapped


def encode_text(body: str | bytes) -> str:
    """Message text of a body: base64 of its UTF-8 bytes (as ``TextBase64EncodePolicy``)."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return base64.b64encode(raw).decode("ascii")


def decode_text(text: str) -> str | bytes:
    """Body of a message text; text that is not base64 is returned as it is."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def encoded_text_size(body: str) -> int:
    """Bytes of the base64 message text of ``body``."""
    return 4 * math.ceil(len(body.encode("utf-8")) / 3)


def _whole_seconds(value: float, low: int, high: int) -> int:
    return min(high, max(low, math.ceil(value)))


def _timestamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _validate_connection_string(conn: str, source: str) -> None:
    pairs = [part.split("=", 1) for part in conn.strip().rstrip(";").split(";")]
    if any(len(pair) != 2 for pair in pairs):
        raise AzureConnectionError(f"{source} does not hold a connection string (key=value;...)")
    key = {k.strip().lower(): v for k, v in pairs}.get("accountkey")
    if key is not None:
        try:
            base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise AzureConnectionError(f"{source}: AccountKey is not base64") from None


@contextlib.contextmanager
def _azure_errors(what: str) -> Iterator[None]:
    """SDK errors as apix errors: credentials → configuration, the rest → transient."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

    try:
        yield
    except ClientAuthenticationError as exc:
        raise AzureConnectionError(f"{what}: the storage account rejected the credentials") from exc
    except HttpResponseError as exc:
        if exc.status_code == 403:
            raise AzureConnectionError(
                f"{what}: the storage account rejected the credentials ({_error_code(exc)})"
            ) from exc
        raise TransportError(f"{what}: {exc.status_code} {_error_code(exc) or exc.reason}") from exc
    except AzureError as exc:
        raise TransportError(f"{what}: {type(exc).__name__}: {exc.message}") from exc


def _error_code(exc: BaseException) -> str | None:
    """The storage error code the SDK attaches to its errors (``QueueNotFound``...)."""
    code = getattr(exc, "error_code", None)  # a str enum (StorageErrorCode) or a str
    return str(getattr(code, "value", code)) if code is not None else None


def _is_gone(exc: BaseException) -> bool:
    """The message was deleted or redelivered (stale pop receipt) since we received it."""
    from azure.core.exceptions import HttpResponseError

    return isinstance(exc, HttpResponseError) and (
        exc.status_code == 404 or _error_code(exc) == "PopReceiptMismatch"
    )


def _is_queue_missing(exc: BaseException) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    return isinstance(exc, ResourceNotFoundError) and _error_code(exc) == "QueueNotFound"


@dataclass
class _LoopClients:
    """SDK clients bound to one event loop (their aiohttp session is)."""

    service: QueueServiceClient
    queues: dict[str, QueueClient] = field(default_factory=dict)


class StorageQueueTransport(QueueTransport):
    """apix queues on an Azure Storage account (see the module docstring for the design)."""

    name = "azure-queue"

    def __init__(
        self,
        connection_string: str | None = None,
        *,
        connection: str | None = None,
        visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
        message_ttl: int = -1,
        prefix: str | None = None,
    ) -> None:
        """``connection_string`` wins; else the app setting ``connection``; else
        ``APIX_AZURE_STORAGE_CONNECTION`` or ``AzureWebJobsStorage``. ``message_ttl`` is in
        seconds, ``-1`` for never. ``prefix`` defaults to ``APIX_AZURE_QUEUE_PREFIX``."""
        self.prefix = queue_prefix(prefix)
        settings = (connection,) if connection else DEFAULT_SETTINGS
        self._conn, self._source = resolve_connection_string(connection_string, settings)
        _validate_connection_string(self._conn, self._source)
        self.visibility_timeout = visibility_timeout
        self.message_ttl = message_ttl
        self._account = self._new_service().account_name  # raises now on a malformed string
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients] = (
            weakref.WeakKeyDictionary()
        )
        self._created: set[str] = set()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> StorageQueueTransport:
        params = parse_url(url, "azure-queue", ("connection", "visibility_timeout", "prefix"))
        for key in ("connection", "prefix"):
            if key in params:
                kwargs.setdefault(key, params[key])
        if "visibility_timeout" in params:
            try:
                kwargs.setdefault("visibility_timeout", float(params["visibility_timeout"]))
            except ValueError:
                raise ConfigurationError(f"{url!r}: visibility_timeout is not a number") from None
        return cls(**kwargs)

    def azure_name(self, queue: str) -> str:
        """The Azure queue of an apix queue name, with this transport's prefix."""
        return azure_queue_name(self.prefix + queue)

    # -- clients ----------------------------------------------------------------------------

    def _new_service(self) -> QueueServiceClient:
        from azure.storage.queue.aio import QueueServiceClient

        try:
            return QueueServiceClient.from_connection_string(self._conn)
        except (ValueError, KeyError, TypeError) as exc:
            raise AzureConnectionError(
                f"{self._source}: unusable connection string: {exc}"
            ) from exc

    def _loop_clients(self) -> _LoopClients:
        loop = asyncio.get_running_loop()
        clients = self._clients.get(loop)
        if clients is None:
            clients = self._clients[loop] = _LoopClients(self._new_service())
        return clients

    def _client(self, azure_name: str) -> QueueClient:
        clients = self._loop_clients()
        client = clients.queues.get(azure_name)
        if client is None:
            client = clients.queues[azure_name] = clients.service.get_queue_client(azure_name)
        return client

    async def _ensure(self, azure_name: str) -> QueueClient:
        from azure.core.exceptions import ResourceExistsError

        client = self._client(azure_name)
        if azure_name not in self._created:
            with (
                _azure_errors(f"creating queue {azure_name!r}"),
                contextlib.suppress(ResourceExistsError),
            ):
                await client.create_queue()
            self._created.add(azure_name)
        return client

    async def _send_text(self, azure_name: str, text: str, delay: int, ttl: int) -> str:
        """Send one message text; returns the Storage message id. Recreates a queue deleted
        since it was cached."""
        client = await self._ensure(azure_name)
        with _azure_errors(f"sending to {azure_name!r}"):
            try:
                sent = await client.send_message(text, visibility_timeout=delay, time_to_live=ttl)
            except Exception as exc:
                if not _is_queue_missing(exc):
                    raise
                self._created.discard(azure_name)
                client = await self._ensure(azure_name)
                sent = await client.send_message(text, visibility_timeout=delay, time_to_live=ttl)
        return str(sent.id)

    # -- producer ---------------------------------------------------------------------------

    def max_message_bytes(self, queue: str) -> int:
        return MAX_MESSAGE_TEXT_BYTES

    def encoded_size(self, body: str) -> int:
        return encoded_text_size(body)

    async def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        azure_name = self.azure_name(queue)
        for m in messages:  # all checked before any is sent
            self.check_size(queue, m.body)
            if m.delay_seconds > MAX_VISIBILITY_SECONDS:
                raise ConfigurationError(
                    f"message {m.message_id!r}: Storage Queues delay at most 7 days, "
                    f"not {m.delay_seconds} s"
                )
        limit = asyncio.Semaphore(_SEND_CONCURRENCY)

        async def send(m: OutgoingMessage) -> None:
            async with limit:
                delay = _whole_seconds(m.delay_seconds, 0, MAX_VISIBILITY_SECONDS)
                await self._send_text(azure_name, encode_text(m.body), delay, self.message_ttl)

        await asyncio.gather(*(send(m) for m in messages))

    # -- consumer ---------------------------------------------------------------------------

    async def receive(
        self, queue: str, max_messages: int = 10, visibility_timeout: float | None = None
    ) -> list[ReceivedMessage]:
        client = await self._ensure(self.azure_name(queue))
        count = min(PEEK_LIMIT, max(1, max_messages))
        hide = _whole_seconds(
            self.visibility_timeout if visibility_timeout is None else visibility_timeout,
            1,
            MAX_VISIBILITY_SECONDS,
        )
        with _azure_errors(f"receiving from {client.queue_name!r}"):
            received = [
                m
                async for m in client.receive_messages(
                    messages_per_page=count, max_messages=count, visibility_timeout=hide
                )
            ]
        return [
            ReceivedMessage(
                queue=queue,
                message_id=str(m.id),
                body=decode_text(str(m.content)),
                receipt=str(m.pop_receipt),
                receive_count=int(m.dequeue_count or 1),
                enqueued_at=_timestamp(m.inserted_on),
            )
            for m in received
        ]

    async def _delete(self, client: QueueClient, message_id: str, receipt: str) -> None:
        """Delete a received message; one deleted or redelivered meanwhile is left alone."""
        with _azure_errors(f"deleting from {client.queue_name!r}"):
            try:
                await client.delete_message(message_id, receipt)
            except Exception as exc:
                if not _is_gone(exc):
                    raise

    async def ack(self, queue: str, messages: Sequence[ReceivedMessage]) -> None:
        if not messages:
            return
        client = self._client(self.azure_name(queue))
        await asyncio.gather(*(self._delete(client, m.message_id, m.receipt) for m in messages))

    async def release(self, queue: str, message: ReceivedMessage, delay_seconds: float) -> None:
        """Visible again after ``delay_seconds`` (whole seconds, at most 7 days)."""
        client = self._client(self.azure_name(queue))
        delay = _whole_seconds(delay_seconds, 0, MAX_VISIBILITY_SECONDS)
        with _azure_errors(f"releasing a message of {client.queue_name!r}"):
            try:
                await client.update_message(
                    message.message_id, message.receipt, visibility_timeout=delay
                )
            except Exception as exc:
                if not _is_gone(exc):
                    raise

    async def dead_letter(self, queue: str, message: ReceivedMessage, info: DeadLetterInfo) -> None:
        """Original text to ``<queue>-poison``, the error to ``<queue>-poison-info``, then
        delete the message from ``queue``."""
        azure_name = self.azure_name(queue)
        poison_id = await self._send_text(
            azure_name + POISON_SUFFIX, encode_text(message.body), 0, -1
        )
        record = {
            "apix_dead_letter": 1,
            "poison_id": poison_id,
            "queue": queue,
            "message_id": message.message_id,
            "error_code": info.error_code[:100],
            "error_category": info.error_category,
            "error_message": info.error_message[:_MAX_ERROR_CHARS],
            "attempts": info.attempts,
            "processor": info.processor,
            "tenant_id": info.tenant_id,
            "created_at": datetime.now(UTC).isoformat(),
        }
        await self._send_text(
            azure_name + INFO_SUFFIX, encode_text(json.dumps(record, ensure_ascii=False)), 0, -1
        )
        if message.receipt:
            await self._delete(self._client(azure_name), message.message_id, message.receipt)

    # -- admin ------------------------------------------------------------------------------

    async def _peek(self, azure_name: str) -> list[QueueMessage]:
        """Up to 32 messages from the front of a queue; none if it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        with _azure_errors(f"peeking {azure_name!r}"):
            try:
                return list(await self._client(azure_name).peek_messages(max_messages=PEEK_LIMIT))
            except ResourceNotFoundError:
                return []

    async def _scan(
        self, azure_name: str, wanted: Callable[[QueueMessage], bool], take: bool
    ) -> QueueMessage | None:
        """Find a message anywhere in a queue by receiving it page by page, then make every
        other message visible again. With ``take`` the found one stays hidden (its pop receipt
        is valid for the caller) for a short while."""
        from azure.core.exceptions import ResourceNotFoundError

        client = self._client(azure_name)
        hidden: list[QueueMessage] = []
        found: QueueMessage | None = None
        try:
            with (
                _azure_errors(f"searching {azure_name!r}"),
                contextlib.suppress(ResourceNotFoundError),
            ):
                while found is None:
                    page = [
                        m
                        async for m in client.receive_messages(
                            messages_per_page=PEEK_LIMIT,
                            max_messages=PEEK_LIMIT,
                            visibility_timeout=_SCAN_VISIBILITY,
                        )
                    ]
                    if not page:
                        break
                    for m in page:
                        if found is None and wanted(m):
                            found = m
                        else:
                            hidden.append(m)
        finally:
            if found is not None and not take:
                hidden.append(found)
            for m in hidden:
                with contextlib.suppress(Exception):  # it reappears after the timeout anyway
                    await client.update_message(m.id, m.pop_receipt, visibility_timeout=0)
        return found

    async def _find(self, azure_name: str, message_id: str, take: bool) -> QueueMessage | None:
        if not take:
            for m in await self._peek(azure_name):
                if m.id == message_id:
                    return m
        return await self._scan(azure_name, lambda m: bool(m.id == message_id), take)

    async def _info(self, azure_name: str, poison_id: str, take: bool = False) -> dict[str, Any]:
        """The apix error info of a poison message ({} when the host poisoned it)."""

        def matches(m: QueueMessage) -> bool:
            return _parse_info(m).get("poison_id") == poison_id

        info_queue = azure_name + INFO_SUFFIX
        if not take:
            for m in await self._peek(info_queue):
                if matches(m):
                    return _parse_info(m)
        found = await self._scan(info_queue, matches, take)
        if found is None:
            return {}
        if take:
            await self._delete(self._client(info_queue), found.id, str(found.pop_receipt))
        return _parse_info(found)

    async def list_dead_letters(
        self, queue: str | None = None, limit: int = 50
    ) -> list[DeadLetterRecord]:
        """Up to 32 dead letters per poison queue, peeked (see the module docstring)."""
        if queue is not None:
            sources = [self.azure_name(queue)]
        else:
            sources = [
                name.removesuffix(POISON_SUFFIX)
                for name in await self._queue_names()
                if name.endswith(POISON_SUFFIX)
            ]
        records: list[DeadLetterRecord] = []
        for source in sources:
            poisoned = await self._peek(source + POISON_SUFFIX)
            if not poisoned:
                continue
            infos = {
                info.get("poison_id"): info
                for info in map(_parse_info, await self._peek(source + INFO_SUFFIX))
            }
            records.extend(_record(source, m, infos.get(m.id, {})) for m in poisoned)
            if len(records) >= limit:
                break
        return records[:limit]

    async def get_dead_letter(self, dead_letter_id: str) -> DeadLetterRecord:
        source, poison_id = _split_id(dead_letter_id)
        found = await self._find(source + POISON_SUFFIX, poison_id, take=False)
        if found is None:
            raise DeadLetterNotFoundError(f"no dead letter with id {dead_letter_id}")
        return _record(source, found, await self._info(source, poison_id))

    async def replay_dead_letter(self, dead_letter_id: str) -> str:
        """Back to the source queue (the same text); returns the new Storage message id."""
        source, poison_id = _split_id(dead_letter_id)
        poison_queue = source + POISON_SUFFIX
        found = await self._find(poison_queue, poison_id, take=True)
        if found is None:
            raise DeadLetterNotFoundError(f"no dead letter with id {dead_letter_id}")
        new_id = await self._send_text(source, str(found.content), 0, self.message_ttl)
        await self._delete(self._client(poison_queue), found.id, str(found.pop_receipt))
        await self._info(source, poison_id, take=True)
        return new_id

    async def depth(self, queue: str) -> QueueDepth:
        """The approximate count of all messages, as ``visible`` (see the module docstring)."""
        from azure.core.exceptions import ResourceNotFoundError

        client = self._client(self.azure_name(queue))
        with _azure_errors(f"reading {client.queue_name!r}"):
            try:
                props = await client.get_queue_properties()
            except ResourceNotFoundError:
                return QueueDepth(visible=0, in_flight=0)
        return QueueDepth(visible=int(props.approximate_message_count or 0), in_flight=0)

    async def _queue_names(self) -> list[str]:
        """The account's queues under this transport's prefix."""
        start = azure_queue_name(self.prefix + "xxx")[:-3] if self.prefix else ""
        with _azure_errors("listing queues"):
            service = self._loop_clients().service
            names = [str(q.name) async for q in service.list_queues(name_starts_with=start or None)]
        return sorted(names)

    async def queues(self) -> list[str]:
        """Azure names of the account's queues (under the prefix), without dead-letter queues."""
        names = await self._queue_names()
        return [n for n in names if not n.endswith((POISON_SUFFIX, INFO_SUFFIX))]

    async def close(self) -> None:
        """Close this event loop's clients (those of other loops went with their loop)."""
        with contextlib.suppress(RuntimeError):
            clients = self._clients.pop(asyncio.get_running_loop(), None)
            if clients is not None:
                await clients.service.close()
                for client in clients.queues.values():
                    await client.close()


def _parse_info(m: QueueMessage) -> dict[str, Any]:
    body = decode_text(str(m.content))
    try:
        info = json.loads(body)
    except ValueError:
        return {}
    return info if isinstance(info, dict) and info.get("apix_dead_letter") == 1 else {}


def _split_id(dead_letter_id: str) -> tuple[str, str]:
    source, sep, poison_id = dead_letter_id.partition("/")
    if not sep or not poison_id or not _NAME.fullmatch(source):
        raise DeadLetterNotFoundError(
            f"{dead_letter_id!r} is not an Azure dead-letter id (<queue>/<poison message id>)"
        )
    return source, poison_id


def _record(source: str, m: QueueMessage, info: dict[str, Any]) -> DeadLetterRecord:
    body = decode_text(str(m.content))
    created = info.get("created_at")
    return DeadLetterRecord(
        id=f"{source}/{m.id}",
        queue=str(info.get("queue") or source),
        message_id=str(info.get("message_id") or m.id),
        body=body.decode("utf-8", "replace") if isinstance(body, bytes) else body,
        error_code=str(info.get("error_code") or POISONED_CODE),
        error_category=str(info.get("error_category") or "unknown"),
        error_message=str(
            info.get("error_message")
            or "in the poison queue without apix error info (moved there by the Functions host)"
        ),
        attempts=int(info.get("attempts") or 0),
        created_at=datetime.fromisoformat(created) if isinstance(created, str) else m.inserted_on,
        processor=info.get("processor"),
        tenant_id=info.get("tenant_id"),
    )


def from_url(url: str, **kwargs: Any) -> StorageQueueTransport:
    """Entry point ``apix.transports`` / ``azure-queue`` (URL forms in the module docstring)."""
    return StorageQueueTransport.from_url(url, **kwargs)


__all__ = [
    "StorageQueueTransport",
    "azure_queue_name",
    "decode_text",
    "encode_text",
    "encoded_text_size",
    "from_url",
]
