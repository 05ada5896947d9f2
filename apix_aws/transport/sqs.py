"""Amazon SQS as an apix queue transport.

Queue names are apix's logical names; the SQS name is ``queue_prefix + name`` (one prefix per
deployment, e.g. ``prod-``), and a name ending in ``.fifo`` is a FIFO queue. boto3 is imported
when the transport first talks to SQS, and its (blocking) calls run in worker threads with
``asyncio.to_thread``; one client serves the transport.

What SQS adds to the interface:

* **Size.** SQS counts the UTF-8 bytes of the body plus every message attribute's name, data
  type and value against the queue's ``MaximumMessageSize``. :meth:`SqsTransport.send_batch`
  checks the exact size before sending; :meth:`SqsTransport.encoded_size` (which sees only a
  body) adds a reserve of :data:`ATTRIBUTE_RESERVE_BYTES` for the attributes apix adds, so a
  body the core accepts is never refused at send.
* **Message ids.** SQS assigns its own ``MessageId``; apix's id travels in the
  ``apix_message_id`` message attribute and comes back as ``ReceivedMessage.message_id``.
* **FIFO.** ``MessageGroupId`` is the ``group_id`` attribute, else the tenant (attribute or
  envelope), else ``"default"``; ``MessageDeduplicationId`` is a SHA-256 of the apix id, so a
  re-send within SQS's 5-minute window is dropped by SQS. FIFO queues cannot delay one message.
* **Delays** are whole seconds (rounded up, never early) up to 900; longer raises
  :class:`DelayTooLongError` (clamping would deliver early).
* **Dead letters** live in the queue's dead-letter queue (its ``RedrivePolicy``, or the
  ``dead_letter_queue`` override): SQS moves a message there after ``maxReceiveCount``
  receives, and :meth:`SqsTransport.dead_letter` sends it there with its error as
  ``apix_error_*`` message attributes. Listing them is a peek, see
  :meth:`SqsTransport.list_dead_letters`.

The URL form for the transport registry is documented on :func:`from_url`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, cast
from urllib.parse import parse_qs, urlsplit

from apix_core.constants import TENANT_ATTRIBUTE
from apix_core.errors import (
    ApixError,
    ConfigurationError,
    DeadLetterNotFoundError,
    MalformedMessageError,
    MessageTooLargeError,
    PermanentError,
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

_log = logging.getLogger("apix.sqs")

#: Environment variable with the SQS endpoint (moto_server, LocalStack); AWS's default if unset.
ENDPOINT_ENV = "APIX_SQS_ENDPOINT_URL"
#: SQS's maximum message size since January 2026; a queue's ``MaximumMessageSize`` may be lower.
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
#: Bytes :meth:`SqsTransport.encoded_size` adds to a body for the message attributes apix sends
#: (``apix_message_id``, ``tenant_id``, ``traceparent``, ``correlation_id``: about 700 at most).
ATTRIBUTE_RESERVE_BYTES = 1024
MAX_BATCH_ENTRIES = 10
MAX_DELAY_SECONDS = 900
MAX_VISIBILITY_SECONDS = 12 * 60 * 60
MAX_MESSAGE_ATTRIBUTES = 10
#: Seconds a peeked dead letter stays hidden while a listing scans its queue.
PEEK_VISIBILITY_SECONDS = 30
#: Messages a lookup by id scans in a dead-letter queue before it gives up.
DEFAULT_SCAN_LIMIT = 1000

MESSAGE_ID_ATTRIBUTE = "apix_message_id"
GROUP_ATTRIBUTE = "group_id"
#: Attributes beyond SQS's ten per message travel packed in this one, as a JSON object.
PACKED_ATTRIBUTE = "apix_attributes"
ERROR_CODE_ATTRIBUTE = "apix_error_code"
ERROR_CATEGORY_ATTRIBUTE = "apix_error_category"
ERROR_MESSAGE_ATTRIBUTE = "apix_error_message"
ATTEMPTS_ATTRIBUTE = "apix_attempts"
PROCESSOR_ATTRIBUTE = "apix_processor"
SOURCE_QUEUE_ATTRIBUTE = "apix_source_queue"
_DEAD_LETTER_ATTRIBUTES = frozenset(
    {
        ERROR_CODE_ATTRIBUTE,
        ERROR_CATEGORY_ATTRIBUTE,
        ERROR_MESSAGE_ATTRIBUTE,
        ATTEMPTS_ATTRIBUTE,
        PROCESSOR_ATTRIBUTE,
        SOURCE_QUEUE_ATTRIBUTE,
    }
)
#: Attributes kept unpacked first when a message has more than SQS allows.
_PREFERRED_ATTRIBUTES = (TENANT_ATTRIBUTE, "traceparent", "correlation_id", "tracestate")
_ERROR_MESSAGE_CHARS = 1000
_STRING = "String"

#: apix's internal schedule queues (``apix.schedule.NAME``, ``apix_core.topology``: used by
#: ``apix run`` / ``apix worker`` only; on Lambda, EventBridge invokes a schedule's function)
#: hold dots, which SQS names cannot: on SQS they are ``apix-schedule-NAME``.
_SCHEDULE_QUEUE = "apix.schedule."
_SCHEDULE_SQS_QUEUE = "apix-schedule-"
#: How ``ensure_queue`` and ``apix deploy aws`` name a queue's dead-letter queue.
_DEAD_LETTER_SUFFIXES = ("-dlq", "-dlq.fifo")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,75}(\.fifo)?|[A-Za-z0-9_-]{1,80}")
_ATTRIBUTE_NAME = re.compile(
    r"(?!aws\.|amazon\.)(?!.*\.\.)[A-Za-z0-9_-][A-Za-z0-9_.-]{0,255}", re.I
)
# Characters SQS accepts in bodies and attribute values (its documented XML 1.0 ranges).
_INVALID_CHARACTER = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NOT_FOUND_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)
_STALE_RECEIPT_CODES = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "InvalidReceiptHandle",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
    }
)
_RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "KmsThrottled",
        "RequestTimeout",
    }
)

# get_queue_url answers per (endpoint, region, SQS name), shared by the transports of a process
# (a process works for one AWS account: its URLs are the same whichever transport asks).
_QUEUE_URLS: dict[tuple[str, str, str], str] = {}


def _url_key(client: Any, name: str) -> tuple[str, str, str]:
    return (str(client.meta.endpoint_url), str(client.meta.region_name), name)


# -- errors --------------------------------------------------------------------------------


class QueueNotFoundError(ConfigurationError):
    """The SQS queue behind an apix queue name does not exist (apix never creates on send)."""

    code = "QUEUE_NOT_FOUND"

    def __init__(self, queue: str, sqs_name: str) -> None:
        super().__init__(
            f"SQS queue {sqs_name!r} (apix queue {queue!r}) does not exist: create it "
            "(apix deploy aws, or SqsTransport.ensure_queue for local use) or fix the queue "
            "prefix"
        )
        self.queue = queue
        self.sqs_name = sqs_name


class InvalidQueueNameError(ConfigurationError):
    """A queue name SQS cannot hold."""

    code = "INVALID_QUEUE_NAME"


class DeadLetterQueueNotConfiguredError(ConfigurationError):
    """The queue has no dead-letter queue to move failed messages to."""

    code = "DEAD_LETTER_QUEUE_NOT_CONFIGURED"


class DelayTooLongError(PermanentError):
    """A send delay SQS cannot honour (more than 900 s, or any delay on a FIFO queue)."""

    code = "DELAY_TOO_LONG"


class InvalidMessageAttributeError(PermanentError):
    """A message attribute SQS would refuse (its name or value)."""

    code = "INVALID_MESSAGE_ATTRIBUTE"


class SqsRequestError(TransportError):
    """An SQS request failed in a way a retry may fix (throttling, server error, network)."""

    code = "SQS_REQUEST_FAILED"

    def __init__(self, message: str, aws_code: str = "") -> None:
        super().__init__(message)
        self.aws_code = aws_code


class SqsRequestRejectedError(ApixError):
    """SQS refused a request (a client-side fault: a retry would fail the same way)."""

    code = "SQS_REQUEST_REJECTED"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, aws_code: str = "") -> None:
        super().__init__(message)
        self.aws_code = aws_code


class SqsBatchError(TransportError):
    """Some entries of a batch call failed; ``message_ids`` lists them (retrying is safe)."""

    code = "SQS_BATCH_FAILED"

    def __init__(self, operation: str, queue: str, failures: Sequence[tuple[str, str, str]]):
        details = "; ".join(f"{mid}: {code} {msg}".strip() for mid, code, msg in failures[:10])
        more = f" (and {len(failures) - 10} more)" if len(failures) > 10 else ""
        super().__init__(
            f"{operation} on {queue!r} failed for {len(failures)} message(s): {details}{more}"
        )
        self.operation = operation
        self.queue = queue
        self.message_ids = [mid for mid, _, _ in failures]
        self.failures = list(failures)


# -- the transport -----------------------------------------------------------------------


class SqsTransport(QueueTransport):
    """At-least-once queues on Amazon SQS (or an SQS-compatible endpoint such as moto_server).

    ``endpoint_url`` defaults to ``$APIX_SQS_ENDPOINT_URL``, then AWS's own resolution;
    ``region`` to the AWS environment (``AWS_REGION``...), or ``us-east-1`` with an explicit
    endpoint. ``client`` is a ready boto3 SQS client (then boto3 is not configured here).
    ``dead_letter_queue`` names (logically, before the prefix) one dead-letter queue for every
    queue, overriding their redrive policies. ``receive_wait_seconds`` is the long-poll wait of
    a receive's first call (0-20; later calls of the same receive never wait).
    """

    name = "sqs"

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        queue_prefix: str = "",
        client: Any = None,
        dead_letter_queue: str | None = None,
        receive_wait_seconds: int = 1,
        scan_limit: int = DEFAULT_SCAN_LIMIT,
    ) -> None:
        if not 0 <= receive_wait_seconds <= 20:
            raise ConfigurationError("receive_wait_seconds must be between 0 and 20")
        self.endpoint_url = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
        self.region = region
        self.queue_prefix = queue_prefix
        self.dead_letter_queue = dead_letter_queue
        self.receive_wait_seconds = receive_wait_seconds
        self.scan_limit = scan_limit
        self._client: Any = client
        self._client_lock = threading.Lock()
        self._queue_attributes: dict[str, dict[str, str]] = {}  # by queue URL
        self._limits: dict[str, int] = {}  # MaximumMessageSize by apix queue name

    # -- names and URLs --------------------------------------------------------------------
    def sqs_name(self, queue: str) -> str:
        """The SQS queue name of apix queue ``queue`` (the prefix applied, checked)."""
        if queue.startswith(_SCHEDULE_QUEUE):
            queue = _SCHEDULE_SQS_QUEUE + queue[len(_SCHEDULE_QUEUE) :]
        name = self.queue_prefix + queue
        if not _QUEUE_NAME.fullmatch(name):
            raise InvalidQueueNameError(
                f"{name!r} is not a valid SQS queue name: 1-80 characters of letters, digits, "
                "'-' and '_', FIFO queues ending in '.fifo'"
            )
        return name

    def is_fifo(self, queue: str) -> bool:
        return queue.endswith(".fifo")

    async def queue_url(self, queue: str) -> str:
        """The URL of apix queue ``queue`` (``get_queue_url``, cached per process)."""
        return await self._url_of(self.sqs_name(queue), queue)

    async def _url_of(self, sqs_name: str, queue: str, owner: str | None = None) -> str:
        client = await self._get_client()
        key = _url_key(client, sqs_name if owner is None else f"{owner}/{sqs_name}")
        url = _QUEUE_URLS.get(key)
        if url is not None:
            return url
        kwargs: dict[str, Any] = {"QueueName": sqs_name}
        if owner:
            kwargs["QueueOwnerAWSAccountId"] = owner
        try:
            response = await self._call("get_queue_url", client=client, **kwargs)
        except SqsRequestRejectedError as exc:
            if exc.aws_code in _NOT_FOUND_CODES:
                raise QueueNotFoundError(queue, sqs_name) from None
            raise
        url = _QUEUE_URLS[key] = str(response["QueueUrl"])
        return url

    async def _attributes(self, url: str) -> dict[str, str]:
        attributes = self._queue_attributes.get(url)
        if attributes is None:
            response = await self._call(
                "get_queue_attributes",
                QueueUrl=url,
                AttributeNames=["MaximumMessageSize", "RedrivePolicy", "QueueArn", "FifoQueue"],
            )
            attributes = self._queue_attributes[url] = dict(response.get("Attributes") or {})
        return attributes

    async def prepare(self, queues: Sequence[str]) -> None:
        """Resolve the queues' URLs and size limits now (a cold start calls this once), so
        :meth:`max_message_bytes` answers with each queue's own limit from the first message."""
        await asyncio.gather(*(self._limit(q) for q in queues))

    async def _limit(self, queue: str) -> int:
        limit = self._limits.get(queue)
        if limit is None:
            attributes = await self._attributes(await self.queue_url(queue))
            limit = self._limits[queue] = _int(
                attributes.get("MaximumMessageSize"), DEFAULT_MAX_MESSAGE_BYTES
            )
        return limit

    # -- sizes -----------------------------------------------------------------------------
    def max_message_bytes(self, queue: str) -> int:
        """The queue's ``MaximumMessageSize`` once read (:meth:`prepare`, or any send), else
        1 MiB, SQS's maximum."""
        return self._limits.get(queue, DEFAULT_MAX_MESSAGE_BYTES)

    def encoded_size(self, body: str) -> int:
        """UTF-8 bytes of ``body`` plus :data:`ATTRIBUTE_RESERVE_BYTES` for the attributes apix
        adds at send (the exact size, attributes included, is checked by :meth:`send_batch`)."""
        return len(body.encode("utf-8")) + ATTRIBUTE_RESERVE_BYTES

    def check_size(self, queue: str, body: str) -> None:
        limit = self.max_message_bytes(queue)
        if len(body) * 4 + ATTRIBUTE_RESERVE_BYTES <= limit:
            return  # UTF-8 needs at most 4 bytes a character: no need to encode
        size = self.encoded_size(body)
        if size > limit:
            raise MessageTooLargeError(size, limit, f"{self.name}:{queue}")

    def message_size(self, message: OutgoingMessage, fifo: bool = False) -> int:
        """Bytes SQS counts for ``message``: its body and message attributes, as sent."""
        return _size(message.body, self._message_attributes(message, fifo))

    # -- sending -----------------------------------------------------------------------------
    async def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        url = await self.queue_url(queue)
        limit = await self._limit(queue)
        entries = [self._send_entry(queue, m, limit) for m in messages]
        await self._send_entries(queue, url, entries, limit)

    async def _send_entries(
        self, queue: str, url: str, entries: Sequence[tuple[str, dict[str, Any], int]], limit: int
    ) -> None:
        failures: list[tuple[str, str, str]] = []
        for chunk in _chunks(entries, limit):
            response = await self._call(
                "send_message_batch",
                QueueUrl=url,
                Entries=[{"Id": str(i), **entry} for i, (_, entry, _) in enumerate(chunk)],
            )
            for failed in response.get("Failed") or ():
                message_id = chunk[int(failed["Id"])][0]
                failures.append((message_id, failed.get("Code", ""), failed.get("Message", "")))
        if failures:
            raise SqsBatchError("SendMessageBatch", queue, failures)

    def _send_entry(
        self, queue: str, message: OutgoingMessage, limit: int, dedup_seed: str | None = None
    ) -> tuple[str, dict[str, Any], int]:
        """``(apix id, SendMessageBatch entry without Id, bytes)``; raises before any send."""
        fifo = self.is_fifo(queue)
        if _INVALID_CHARACTER.search(message.body):
            raise MalformedMessageError(
                f"message {message.message_id!r} contains characters SQS does not accept "
                "(control characters other than tab, newline and carriage return, or "
                "unpaired surrogates)"
            )
        attributes = self._message_attributes(message, fifo)
        size = _size(message.body, attributes)
        if size > limit:
            raise MessageTooLargeError(size, limit, f"{self.name}:{queue}")
        entry: dict[str, Any] = {"MessageBody": message.body}
        if attributes:
            entry["MessageAttributes"] = {
                k: {"DataType": _STRING, "StringValue": v} for k, v in attributes.items()
            }
        delay = _delay_seconds(message, fifo)
        if delay:
            entry["DelaySeconds"] = delay
        if fifo:
            entry["MessageGroupId"] = _group_id(message.attributes, message.body)
            entry["MessageDeduplicationId"] = _dedup_id(dedup_seed or message.message_id)
        return message.message_id, entry, size

    def _message_attributes(self, message: OutgoingMessage, fifo: bool) -> dict[str, str]:
        attributes = {k: v for k, v in message.attributes.items() if v != ""}
        if fifo:
            attributes.pop(GROUP_ATTRIBUTE, None)  # it is the MessageGroupId
        attributes.pop(MESSAGE_ID_ATTRIBUTE, None)
        return _fit_attributes({MESSAGE_ID_ATTRIBUTE: message.message_id}, attributes)

    # -- receiving ---------------------------------------------------------------------------
    async def receive(
        self, queue: str, max_messages: int = 10, visibility_timeout: float | None = None
    ) -> list[ReceivedMessage]:
        url = await self.queue_url(queue)
        received: list[ReceivedMessage] = []
        wait = self.receive_wait_seconds
        while len(received) < max_messages:
            wanted = min(MAX_BATCH_ENTRIES, max_messages - len(received))
            kwargs: dict[str, Any] = {
                "QueueUrl": url,
                "MaxNumberOfMessages": wanted,
                "AttributeNames": ["All"],
                "MessageAttributeNames": ["All"],
                "WaitTimeSeconds": wait,
            }
            if visibility_timeout is not None:
                kwargs["VisibilityTimeout"] = _visibility(visibility_timeout)
            response = await self._call("receive_message", **kwargs)
            messages = response.get("Messages") or []
            received.extend(_received(queue, m) for m in messages)
            if len(messages) < wanted:
                break
            wait = 0
        return received

    async def ack(self, queue: str, messages: Sequence[ReceivedMessage]) -> None:
        """Delete the messages. A stale receipt (the message was received again since) is
        logged and skipped: its new holder, or a redelivery, will meet the idempotency table."""
        held = [m for m in messages if m.receipt]
        if not held:
            return
        url = await self.queue_url(queue)
        failures: list[tuple[str, str, str]] = []
        for start in range(0, len(held), MAX_BATCH_ENTRIES):
            chunk = held[start : start + MAX_BATCH_ENTRIES]
            response = await self._call(
                "delete_message_batch",
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)],
            )
            for failed in response.get("Failed") or ():
                message = chunk[int(failed["Id"])]
                code = failed.get("Code", "")
                if code in _STALE_RECEIPT_CODES:
                    _log.warning(
                        "sqs ack of %s on %s skipped: stale receipt (%s)",
                        message.message_id,
                        queue,
                        code,
                    )
                else:
                    failures.append((message.message_id, code, failed.get("Message", "")))
        if failures:
            raise SqsBatchError("DeleteMessageBatch", queue, failures)

    async def release(self, queue: str, message: ReceivedMessage, delay_seconds: float) -> None:
        """Visible again after ``delay_seconds`` (rounded up to whole seconds, at most 12 h,
        which SQS counts from the first receive)."""
        url = await self.queue_url(queue)
        try:
            await self._call(
                "change_message_visibility",
                QueueUrl=url,
                ReceiptHandle=message.receipt,
                VisibilityTimeout=_visibility(delay_seconds),
            )
        except SqsRequestRejectedError as exc:
            if exc.aws_code not in _STALE_RECEIPT_CODES:
                raise
            _log.warning(
                "sqs release of %s on %s skipped: stale receipt", message.message_id, queue
            )

    # -- dead letters ----------------------------------------------------------------------
    async def dead_letter_queue_url(self, queue: str) -> str:
        """The dead-letter queue of ``queue``: the ``dead_letter_queue`` override, else the
        target of the queue's ``RedrivePolicy``."""
        if self.dead_letter_queue:
            return await self.queue_url(self.dead_letter_queue)
        attributes = await self._attributes(await self.queue_url(queue))
        target = _redrive_target(attributes.get("RedrivePolicy"))
        if target is None:
            raise DeadLetterQueueNotConfiguredError(
                f"SQS queue {self.sqs_name(queue)!r} has no dead-letter queue: give it a "
                "RedrivePolicy {deadLetterTargetArn, maxReceiveCount} (apix deploy aws does; "
                "SqsTransport.ensure_queue(name, dlq=True) for local use), or name one with "
                "dead_letter_queue= (URL: sqs://?dlq=NAME)"
            )
        return await self._url_of_arn(target, queue)

    async def _url_of_arn(self, arn: str, queue: str) -> str:
        parts = arn.split(":")
        if len(parts) != 6 or parts[2] != "sqs":
            raise ConfigurationError(f"{arn!r} (the redrive target of {queue!r}) is no SQS ARN")
        return await self._url_of(parts[5], queue, owner=parts[4])

    async def dead_letter(self, queue: str, message: ReceivedMessage, info: DeadLetterInfo) -> None:
        """Send the message to the queue's dead-letter queue with its error as ``apix_error_*``
        attributes (its other attributes packed in ``apix_attributes``), then delete it."""
        dlq_url = await self.dead_letter_queue_url(queue)
        dlq_attributes = await self._attributes(dlq_url)
        limit = _int(dlq_attributes.get("MaximumMessageSize"), DEFAULT_MAX_MESSAGE_BYTES)
        body = (
            message.body.decode("utf-8", "replace")
            if isinstance(message.body, bytes)
            else message.body
        )
        original = {
            k: v
            for k, v in message.attributes.items()
            if v != "" and k not in _DEAD_LETTER_ATTRIBUTES and k != MESSAGE_ID_ATTRIBUTE
        }
        tenant = info.tenant_id or original.pop(TENANT_ATTRIBUTE, None)
        original.pop(TENANT_ATTRIBUTE, None)
        group = original.get(GROUP_ATTRIBUTE)
        attributes = {
            MESSAGE_ID_ATTRIBUTE: message.message_id,
            ERROR_CODE_ATTRIBUTE: info.error_code[:100],
            ERROR_CATEGORY_ATTRIBUTE: info.error_category,
            ERROR_MESSAGE_ATTRIBUTE: _valid_text(info.error_message[:_ERROR_MESSAGE_CHARS]),
            ATTEMPTS_ATTRIBUTE: str(info.attempts),
            SOURCE_QUEUE_ATTRIBUTE: queue,
        }
        if info.processor:
            attributes[PROCESSOR_ATTRIBUTE] = info.processor
        if tenant:
            attributes[TENANT_ATTRIBUTE] = tenant
        if original:
            attributes[PACKED_ATTRIBUTE] = json.dumps(original, separators=(",", ":"))
        attributes = {k: v for k, v in attributes.items() if v != ""}
        overflow = _size(body, attributes) - limit
        if overflow > 0 and ERROR_MESSAGE_ATTRIBUTE in attributes:
            # Keep the message whole: the error text gives way first.
            text = attributes[ERROR_MESSAGE_ATTRIBUTE].encode("utf-8")
            text = text[: max(0, len(text) - overflow)]
            attributes[ERROR_MESSAGE_ATTRIBUTE] = text.decode("utf-8", "ignore") or "-"
        size = _size(body, attributes)
        if size > limit:
            raise MessageTooLargeError(size, limit, f"{self.name}:{dlq_url.rsplit('/', 1)[-1]}")
        request: dict[str, Any] = {
            "QueueUrl": dlq_url,
            "MessageBody": body,
            "MessageAttributes": {
                k: {"DataType": _STRING, "StringValue": v} for k, v in attributes.items()
            },
        }
        if dlq_url.endswith(".fifo"):
            request["MessageGroupId"] = group or tenant or "default"
            request["MessageDeduplicationId"] = _dedup_id(f"dead-letter\0{message.message_id}")
        await self._call("send_message", **request)
        if message.receipt:
            await self.ack(queue, [message])

    async def list_dead_letters(
        self, queue: str | None = None, limit: int = 50
    ) -> list[DeadLetterRecord]:
        """Up to ``limit`` messages of the dead-letter queue of ``queue`` (of every prefixed
        queue with one when ``queue`` is None).

        SQS has no read-only listing: this *peeks*. It receives the dead-letter queue's
        messages with a short visibility timeout (:data:`PEEK_VISIBILITY_SECONDS`, so the
        scan sees each message once), then makes them visible again at once
        (``ChangeMessageVisibility`` 0). Meanwhile they are invisible to other readers, and
        every peek adds one to their ``ApproximateReceiveCount`` (give a dead-letter queue no
        redrive policy of its own). Messages SQS itself moved there (``maxReceiveCount``
        reached) carry no apix error: they are listed as ``MAX_RECEIVES_EXCEEDED``. A receive
        samples the queue, so a listing may miss messages of a large queue; ``depth`` of the
        dead-letter queue gives the count.
        """
        targets: list[tuple[str, str]] = []  # (source queue, dead-letter queue URL)
        if queue is not None:
            targets.append((queue, await self.dead_letter_queue_url(queue)))
        else:
            seen_urls: set[str] = set()
            for name in await self.queues():
                try:
                    url = await self.dead_letter_queue_url(name)
                except (DeadLetterQueueNotConfiguredError, QueueNotFoundError):
                    continue
                if url not in seen_urls:
                    seen_urls.add(url)
                    targets.append((name, url))
        records: list[DeadLetterRecord] = []
        for source, url in targets:
            raw, _ = await self._peek(url, limit - len(records))
            for m in raw:
                record = self._record(m, source, url)
                if queue is None or record.queue == queue:
                    records.append(record)
            if len(records) >= limit:
                break
        return records[:limit]

    async def get_dead_letter(self, dead_letter_id: str) -> DeadLetterRecord:
        source, dlq_name, sqs_id = _parse_dead_letter_id(dead_letter_id)
        url = await self._url_of(dlq_name, source)
        raw, _ = await self._peek(url, self.scan_limit, want=sqs_id)
        for m in raw:
            if m["MessageId"] == sqs_id:
                return self._record(m, source, url)
        raise DeadLetterNotFoundError(
            f"no dead letter {dead_letter_id!r} among the first {self.scan_limit} messages of "
            f"SQS queue {dlq_name!r}"
        )

    async def replay_dead_letter(self, dead_letter_id: str) -> str:
        """Send the dead letter's body back to its source queue with its attributes (minus
        the ``apix_error_*`` ones), then delete it from the dead-letter queue. On a FIFO queue
        the replay gets its own deduplication id (the original send's may still be in SQS's
        5-minute window)."""
        source, dlq_name, sqs_id = _parse_dead_letter_id(dead_letter_id)
        dlq_url = await self._url_of(dlq_name, source)
        raw, kept = await self._peek(dlq_url, self.scan_limit, want=sqs_id, keep=sqs_id)
        found = next((m for m in raw if m["MessageId"] == sqs_id), None)
        if found is None:
            raise DeadLetterNotFoundError(
                f"no dead letter {dead_letter_id!r} among the first {self.scan_limit} messages "
                f"of SQS queue {dlq_name!r}"
            )
        record = self._record(found, source, dlq_url)
        receipt = kept[sqs_id]
        try:
            url = await self.queue_url(record.queue)
            limit = await self._limit(record.queue)
            outgoing = OutgoingMessage(record.message_id, record.body, 0.0, dict(record.attributes))
            entry = self._send_entry(
                record.queue, outgoing, limit, dedup_seed=f"replay\0{record.message_id}\0{sqs_id}"
            )
            await self._send_entries(record.queue, url, [entry], limit)
        except BaseException:
            with contextlib.suppress(ApixError):
                await self._show([(dlq_url, receipt)])
            raise
        await self._call("delete_message", QueueUrl=dlq_url, ReceiptHandle=receipt)
        return record.message_id

    async def _peek(
        self, url: str, limit: int, *, want: str | None = None, keep: str | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Receive up to ``limit`` distinct messages of ``url`` (stopping early at ``want``),
        then make them visible again, except ``keep``: its receipt handle is returned."""
        seen: dict[str, dict[str, Any]] = {}
        kept: dict[str, str] = {}
        hidden: list[tuple[str, str]] = []
        try:
            while len(seen) < limit and (want is None or want not in seen):
                response = await self._call(
                    "receive_message",
                    QueueUrl=url,
                    MaxNumberOfMessages=min(MAX_BATCH_ENTRIES, limit - len(seen)),
                    VisibilityTimeout=PEEK_VISIBILITY_SECONDS,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                    WaitTimeSeconds=0,
                )
                messages = response.get("Messages") or []
                new = 0
                for m in messages:
                    if keep is not None and m["MessageId"] == keep:
                        kept[keep] = m["ReceiptHandle"]
                    else:
                        hidden.append((url, m["ReceiptHandle"]))
                    if m["MessageId"] not in seen:
                        seen[m["MessageId"]] = m
                        new += 1
                if not new:
                    break
        finally:
            await self._show(hidden)
        return list(seen.values()), kept

    async def _show(self, receipts: Sequence[tuple[str, str]]) -> None:
        """Make received messages visible again (visibility timeout 0)."""
        for start in range(0, len(receipts), MAX_BATCH_ENTRIES):
            chunk = receipts[start : start + MAX_BATCH_ENTRIES]
            await self._call(
                "change_message_visibility_batch",
                QueueUrl=chunk[0][0],
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": 0}
                    for i, (_, r) in enumerate(chunk)
                ],
            )

    def _record(self, m: Mapping[str, Any], source: str, dlq_url: str) -> DeadLetterRecord:
        system = m.get("Attributes") or {}
        attributes = _string_attributes(m)
        message_id = attributes.pop(MESSAGE_ID_ATTRIBUTE, None) or m["MessageId"]
        source_arn = system.get("DeadLetterQueueSourceArn")
        if SOURCE_QUEUE_ATTRIBUTE in attributes:
            source = attributes.pop(SOURCE_QUEUE_ATTRIBUTE)
        elif source_arn:
            sqs_source = str(source_arn).rsplit(":", 1)[-1]
            if sqs_source.startswith(self.queue_prefix):
                source = _apix_name(sqs_source[len(self.queue_prefix) :])
        code = attributes.pop(ERROR_CODE_ATTRIBUTE, None)
        category = attributes.pop(ERROR_CATEGORY_ATTRIBUTE, None)
        error_message = attributes.pop(ERROR_MESSAGE_ATTRIBUTE, None)
        attempts = attributes.pop(ATTEMPTS_ATTRIBUTE, None)
        processor = attributes.pop(PROCESSOR_ATTRIBUTE, None)
        if "MessageGroupId" in system:
            attributes.setdefault(GROUP_ATTRIBUTE, str(system["MessageGroupId"]))
        receives = _int(system.get("ApproximateReceiveCount"), 1)
        sent = system.get("SentTimestamp")
        return DeadLetterRecord(
            id=f"{source}:{dlq_url.rsplit('/', 1)[-1]}:{m['MessageId']}",
            queue=source,
            message_id=message_id,
            body=str(m.get("Body", "")),
            error_code=code or "MAX_RECEIVES_EXCEEDED",
            error_category=category or "unexpected",
            error_message=error_message
            or "moved to the dead-letter queue by the SQS redrive policy (maxReceiveCount)",
            # Without apix's count: SQS's receive count, less this peek's own receive.
            attempts=_int(attempts, max(receives - 1, 0)),
            created_at=datetime.fromtimestamp(int(sent) / 1000, UTC) if sent else None,
            processor=processor,
            tenant_id=attributes.get(TENANT_ATTRIBUTE),
            attributes=attributes,
        )

    # -- admin ---------------------------------------------------------------------------------
    async def depth(self, queue: str) -> QueueDepth:
        response = await self._call(
            "get_queue_attributes",
            QueueUrl=await self.queue_url(queue),
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        attributes = response.get("Attributes") or {}
        return QueueDepth(
            visible=_int(attributes.get("ApproximateNumberOfMessages"), 0),
            in_flight=_int(attributes.get("ApproximateNumberOfMessagesNotVisible"), 0),
            delayed=_int(attributes.get("ApproximateNumberOfMessagesDelayed"), 0),
        )

    async def queues(self) -> list[str]:
        """apix names of the SQS queues that carry this transport's prefix."""
        return sorted(name for name, _ in await self._listed())

    async def _listed(self) -> list[tuple[str, str]]:
        """(apix name, URL) of the SQS queues that carry this transport's prefix."""
        found: list[tuple[str, str]] = []
        kwargs: dict[str, Any] = {"MaxResults": 1000}
        if self.queue_prefix:
            kwargs["QueueNamePrefix"] = self.queue_prefix
        while True:
            response = await self._call("list_queues", **kwargs)
            for url in response.get("QueueUrls") or ():
                name = str(url).rsplit("/", 1)[-1]
                if name.startswith(self.queue_prefix):
                    found.append((_apix_name(name[len(self.queue_prefix) :]), str(url)))
            token = response.get("NextToken")
            if not token:
                return found
            kwargs["NextToken"] = token

    async def dead_letter_queues(self) -> set[str]:
        """apix names of this prefix's queues that receive dead letters: the
        ``dead_letter_queue`` override, the queues named as :meth:`ensure_queue` names them
        (``NAME-dlq``, ``NAME-dlq.fifo``) and the targets of the other queues'
        ``RedrivePolicy``. No processor consumes them: ``apix dlq`` reads them."""
        found: set[str] = set()
        if self.dead_letter_queue:
            found.add(self.dead_letter_queue)
        for name, url in await self._listed():
            if name.endswith(_DEAD_LETTER_SUFFIXES):
                found.add(name)
                continue
            try:
                attributes = await self._attributes(url)
            except SqsRequestRejectedError as exc:
                if exc.aws_code in _NOT_FOUND_CODES:
                    continue  # deleted since it was listed
                raise
            target = _redrive_target(attributes.get("RedrivePolicy"))
            sqs_target = target.rsplit(":", 1)[-1] if target else ""
            if sqs_target and sqs_target.startswith(self.queue_prefix):
                found.add(_apix_name(sqs_target[len(self.queue_prefix) :]))
        return found

    async def ensure_queue(
        self,
        name: str,
        *,
        dlq: bool = True,
        max_receive_count: int = 5,
        fifo: bool | None = None,
        visibility_timeout: int | None = None,
        max_message_bytes: int | None = None,
    ) -> str:
        """Create queue ``name`` if missing (and its dead-letter queue ``NAME-dlq``, or
        ``NAME-dlq.fifo``, with a redrive policy after ``max_receive_count`` receives); returns
        its URL. For tests and local use: deployments create queues with ``apix deploy``.
        FIFO follows the ``.fifo`` suffix unless ``fifo`` says otherwise (then the name must
        agree)."""
        is_fifo = self.is_fifo(name) if fifo is None else fifo
        if is_fifo != self.is_fifo(name):
            raise InvalidQueueNameError(
                f"queue {name!r}: FIFO queue names end in '.fifo', others must not"
            )
        attributes: dict[str, str] = {}
        if is_fifo:
            attributes["FifoQueue"] = "true"
        if visibility_timeout is not None:
            attributes["VisibilityTimeout"] = str(visibility_timeout)
        if max_message_bytes is not None:
            attributes["MaximumMessageSize"] = str(max_message_bytes)
        if dlq:
            dlq_name = f"{name[:-5]}-dlq.fifo" if is_fifo else f"{name}-dlq"
            dlq_url = await self._create(dlq_name, {"FifoQueue": "true"} if is_fifo else {})
            arn = (
                await self._call(
                    "get_queue_attributes", QueueUrl=dlq_url, AttributeNames=["QueueArn"]
                )
            )["Attributes"]["QueueArn"]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receive_count)}
            )
        return await self._create(name, attributes)

    async def _create(self, name: str, attributes: dict[str, str]) -> str:
        sqs_name = self.sqs_name(name)
        client = await self._get_client()
        response = await self._call(
            "create_queue", client=client, QueueName=sqs_name, Attributes=attributes
        )
        url = str(response["QueueUrl"])
        _QUEUE_URLS[_url_key(client, sqs_name)] = url
        self._queue_attributes.pop(url, None)
        self._limits.pop(name, None)
        return url

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            await asyncio.to_thread(client.close)

    # -- the SDK ---------------------------------------------------------------------------
    async def _get_client(self) -> Any:
        if self._client is None:
            await asyncio.to_thread(self._make_client)
        return self._client

    def _make_client(self) -> None:
        with self._client_lock:
            if self._client is not None:
                return
            import boto3
            from botocore.config import Config

            session = boto3.session.Session()
            region = (
                self.region or session.region_name or ("us-east-1" if self.endpoint_url else None)
            )
            if not region:
                raise ConfigurationError(
                    "no AWS region for SQS: set AWS_REGION (or AWS_DEFAULT_REGION), or pass "
                    "region= (URL: sqs://?region=eu-west-1)"
                )
            self._client = session.client(
                "sqs",
                region_name=region,
                endpoint_url=self.endpoint_url,
                config=Config(
                    retries={"mode": "standard", "max_attempts": 3},
                    connect_timeout=5,
                    read_timeout=30,  # above the longest long poll (20 s)
                ),
            )

    async def _call(self, operation: str, client: Any = None, **kwargs: Any) -> dict[str, Any]:
        if client is None:
            client = await self._get_client()
        try:
            return cast(
                dict[str, Any], await asyncio.to_thread(getattr(client, operation), **kwargs)
            )
        except ApixError:
            raise
        except Exception as exc:
            translated = _translate(exc, operation)
            if translated is None:
                raise
            raise translated from exc


# -- the registry's factory ---------------------------------------------------------------

_URL_PARAMETERS = {
    "region": "region",
    "endpoint": "endpoint_url",
    "prefix": "queue_prefix",
    "dlq": "dead_letter_queue",
    "wait": "receive_wait_seconds",
}


def _apix_name(sqs_name: str) -> str:
    """The apix queue of an SQS name without its prefix (the inverse of ``sqs_name``)."""
    if sqs_name.startswith(_SCHEDULE_SQS_QUEUE):
        return _SCHEDULE_QUEUE + sqs_name[len(_SCHEDULE_SQS_QUEUE) :]
    return sqs_name


def from_url(url: str, **kwargs: object) -> SqsTransport:
    """An :class:`SqsTransport` from a transport URL; ``kwargs`` override the URL.

    Forms::

        sqs://                      AWS's endpoint, the region of the environment (AWS_REGION)
        sqs://?region=eu-west-1&endpoint=http://127.0.0.1:5000&prefix=dev-
        sqs://?prefix=prod-&dlq=apix-dead-letters&wait=5

    ``region``, ``endpoint`` (an SQS-compatible endpoint; ``$APIX_SQS_ENDPOINT_URL`` when not
    given), ``prefix`` (prepended to every queue name), ``dlq`` (one dead-letter queue for all
    queues instead of their redrive policies), ``wait`` (long-poll seconds of a receive, 0-20).
    """
    parts = urlsplit(url)
    if parts.scheme != "sqs":
        raise ConfigurationError(f"not an SQS transport URL (sqs://?...): {url!r}")
    if parts.netloc or parts.path not in ("", "/"):
        raise ConfigurationError(
            f"an SQS transport URL takes its settings as query parameters, e.g. "
            f"sqs://?region=eu-west-1&prefix=dev- (got {url!r})"
        )
    options: dict[str, Any] = {}
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        if key not in _URL_PARAMETERS:
            raise ConfigurationError(
                f"unknown SQS transport URL parameter {key!r}: expected one of "
                + ", ".join(sorted(_URL_PARAMETERS))
            )
        if len(values) != 1:
            raise ConfigurationError(f"SQS transport URL parameter {key!r} given twice")
        options[_URL_PARAMETERS[key]] = values[0]
    if "receive_wait_seconds" in options:
        try:
            options["receive_wait_seconds"] = int(options["receive_wait_seconds"])
        except ValueError:
            raise ConfigurationError(
                "SQS transport URL parameter 'wait' must be an integer"
            ) from None
    options.update(kwargs)
    try:
        return SqsTransport(**options)
    except TypeError as exc:
        raise ConfigurationError(f"SQS transport options: {exc}") from None


# -- helpers ---------------------------------------------------------------------------------


def _int(value: object, default: int) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


def _size(body: str, attributes: Mapping[str, str]) -> int:
    size = len(body.encode("utf-8"))
    for name, value in attributes.items():
        size += len(name.encode("utf-8")) + len(_STRING) + len(value.encode("utf-8"))
    return size


def _valid_text(text: str) -> str:
    return _INVALID_CHARACTER.sub("\ufffd", text)


def _fit_attributes(fixed: dict[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``fixed`` plus ``extra``, packing what exceeds SQS's ten attributes into one JSON
    attribute; names SQS would refuse and values with characters it refuses raise."""
    for name, value in extra.items():
        if not _ATTRIBUTE_NAME.fullmatch(name) or name.endswith("."):
            raise InvalidMessageAttributeError(
                f"message attribute name {name!r} is not valid on SQS: 1-256 letters, digits, "
                "'_', '-', '.', not starting with 'AWS.' or 'Amazon.', no '..'"
            )
        if _INVALID_CHARACTER.search(value):
            raise InvalidMessageAttributeError(
                f"message attribute {name!r} has characters SQS does not accept"
            )
    attributes = dict(fixed)
    room = MAX_MESSAGE_ATTRIBUTES - len(attributes)
    if len(extra) <= room:
        attributes.update(extra)
        return attributes
    ordered = sorted(extra, key=lambda k: (k not in _PREFERRED_ATTRIBUTES, k))
    for name in ordered[: room - 1]:
        attributes[name] = extra[name]
    packed = {name: extra[name] for name in ordered[room - 1 :]}
    attributes[PACKED_ATTRIBUTE] = json.dumps(packed, separators=(",", ":"))
    return attributes


def _string_attributes(m: Mapping[str, Any]) -> dict[str, str]:
    attributes = {
        str(name): str(value["StringValue"])
        for name, value in (m.get("MessageAttributes") or {}).items()
        if "StringValue" in value  # Binary attributes have no apix meaning
    }
    packed = attributes.pop(PACKED_ATTRIBUTE, None)
    if packed:
        with contextlib.suppress(ValueError):
            unpacked = json.loads(packed)
            if isinstance(unpacked, dict):
                for k, v in unpacked.items():
                    attributes.setdefault(str(k), str(v))
    return attributes


def _received(queue: str, m: Mapping[str, Any]) -> ReceivedMessage:
    system = m.get("Attributes") or {}
    attributes = _string_attributes(m)
    message_id = attributes.pop(MESSAGE_ID_ATTRIBUTE, None) or str(m["MessageId"])
    if "MessageGroupId" in system:
        attributes.setdefault(GROUP_ATTRIBUTE, str(system["MessageGroupId"]))
    sent = system.get("SentTimestamp")
    return ReceivedMessage(
        queue=queue,
        message_id=message_id,
        body=str(m.get("Body", "")),
        receipt=str(m["ReceiptHandle"]),
        receive_count=_int(system.get("ApproximateReceiveCount"), 1),
        attributes=attributes,
        enqueued_at=int(sent) / 1000 if sent else None,
    )


def _chunks(
    entries: Sequence[tuple[str, dict[str, Any], int]], max_bytes: int
) -> Iterator[Sequence[tuple[str, dict[str, Any], int]]]:
    """Batches of at most ten entries whose sizes add up to at most ``max_bytes`` (SQS's
    limit on a batch's total payload equals its limit on one message)."""
    start, total = 0, 0
    for i, (_, _, size) in enumerate(entries):
        if i > start and (i - start == MAX_BATCH_ENTRIES or total + size > max_bytes):
            yield entries[start:i]
            start, total = i, 0
        total += size
    if start < len(entries):
        yield entries[start:]


def _delay_seconds(message: OutgoingMessage, fifo: bool) -> int:
    if message.delay_seconds <= 0:
        return 0
    delay = math.ceil(message.delay_seconds - 1e-6)  # whole seconds, never early
    if fifo and delay:
        raise DelayTooLongError(
            f"message {message.message_id!r}: FIFO queues cannot delay one message "
            "(only the queue's DelaySeconds applies)"
        )
    if delay > MAX_DELAY_SECONDS:
        raise DelayTooLongError(
            f"message {message.message_id!r}: a delay of {message.delay_seconds:g} s exceeds "
            f"SQS's maximum of {MAX_DELAY_SECONDS} s"
        )
    return delay


def _visibility(seconds: float) -> int:
    return min(MAX_VISIBILITY_SECONDS, max(0, math.ceil(seconds - 1e-6)))


def _group_id(attributes: Mapping[str, str], body: str) -> str:
    group = attributes.get(GROUP_ATTRIBUTE) or attributes.get(TENANT_ATTRIBUTE)
    if not group and body.startswith("{") and '"tenant_id"' in body:
        with contextlib.suppress(ValueError):
            data = json.loads(body)
            if isinstance(data, dict) and isinstance(data.get("tenant_id"), str):
                group = data["tenant_id"]
    return (group or "default")[:128]


def _dedup_id(seed: str) -> str:
    """A deduplication id SQS accepts (at most 128 of its characters): a SHA-256 in hex."""
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()


def _redrive_target(policy: str | None) -> str | None:
    if not policy:
        return None
    try:
        target = json.loads(policy).get("deadLetterTargetArn")
    except (ValueError, AttributeError):
        return None
    return str(target) if target else None


def _parse_dead_letter_id(dead_letter_id: str) -> tuple[str, str, str]:
    parts = dead_letter_id.split(":")
    if len(parts) != 3 or not all(parts):
        raise DeadLetterNotFoundError(
            f"{dead_letter_id!r} is not an SQS dead-letter id (QUEUE:DLQ:MESSAGE_ID, as "
            "listed by list_dead_letters)"
        )
    return parts[0], parts[1], parts[2]


def _translate(exc: Exception, operation: str) -> ApixError | None:
    """The apix error for a botocore failure; None for anything else (a bug: re-raised)."""
    from botocore import exceptions as bex

    if isinstance(exc, bex.ClientError):
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "")
        query_code = str(error.get("QueryErrorCode") or "")
        aws_code = query_code if query_code in _NOT_FOUND_CODES | _STALE_RECEIPT_CODES else code
        status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        message = f"SQS {operation} failed: {code}: {error.get('Message', '')}"
        if status >= 500 or code in _RETRYABLE_CODES or query_code in _RETRYABLE_CODES:
            return SqsRequestError(message, aws_code)
        return SqsRequestRejectedError(message, aws_code)
    if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError, bex.NoRegionError)):
        return ConfigurationError(f"SQS {operation}: {exc}")
    if isinstance(exc, bex.ParamValidationError):
        return SqsRequestRejectedError(f"SQS {operation}: {exc}")
    if isinstance(exc, bex.BotoCoreError):
        return SqsRequestError(f"SQS {operation} failed: {exc}")
    return None
