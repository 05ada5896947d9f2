"""A Service Bus trigger's delivery, and apix's own settlement of it.

Two message shapes reach a Service Bus–triggered function: ``azure.functions.ServiceBusMessage``
(the default binding; the host settles) and ``azure.servicebus.ServiceBusReceivedMessage`` (the
SDK-type binding of ``azurefunctions-extensions-bindings-servicebus``, which comes with a
settlement client). Both become one :class:`ReceivedMessage`.

With a settlement client apix settles itself: ``complete`` on success or duplicate, ``abandon``
on a retryable failure (Service Bus counts the delivery and dead-letters after its
``MaxDeliveryCount``), ``deadletter`` on a failure apix will not retry, with the error code as
the dead-letter reason and the error as its description. Two client shapes are accepted, as
their SDKs name them: the Functions ``ServiceBusMessageActions`` (``complete``, ``abandon``,
``deadletter(message, deadletter_reason=, deadletter_error_description=)``) and the
``azure.servicebus`` ``ServiceBusReceiver`` (``complete_message``, ``abandon_message``,
``dead_letter_message(message, reason=, error_description=)``), sync or async.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from apix_core.errors import PermanentError, TransportError
from apix_core.transport.base import ReceivedMessage

if TYPE_CHECKING:
    from apix_core.processing.outcomes import Outcome

SESSION_ATTRIBUTE = "session_id"
CORRELATION_ATTRIBUTE = "correlation_id"
# Service Bus keeps both as message properties; a short reason stays readable in the portal.
MAX_REASON_CHARS = 128
MAX_DESCRIPTION_CHARS = 1024


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _body(msg: Any) -> bytes | str:
    get_body = getattr(msg, "get_body", None)
    if callable(get_body):  # azure.functions.ServiceBusMessage
        body: bytes | str = get_body()
        return body
    raw = getattr(msg, "body", b"")  # azure.servicebus: bytes, or an iterable of sections
    if isinstance(raw, bytes | str):
        return raw
    if isinstance(raw, Iterable):
        parts = list(raw)
        if all(isinstance(p, bytes) for p in parts):
            return b"".join(parts)
    raise PermanentError(f"Service Bus message body of type {type(raw).__name__} is not data")


def servicebus_delivery(queue: str, msg: Any) -> ReceivedMessage:
    """The delivery of a Service Bus message of either shape: properties (application, then
    the Functions binding's user properties) become attributes (tenant, traceparent...), plus
    ``session_id`` and ``correlation_id``; ``delivery_count`` is the attempt. Odd values
    (bytes keys, ``None``, a missing or non-positive count) are normalised, never raised on."""
    props: dict[Any, Any] = {}
    for name in ("application_properties", "user_properties"):
        value = getattr(msg, name, None)
        if isinstance(value, dict):
            props |= value
    attributes = {_text(k): _text(v) for k, v in props.items() if v is not None}
    for attr in (SESSION_ATTRIBUTE, CORRELATION_ATTRIBUTE):
        value = getattr(msg, attr, None)
        if value:
            attributes.setdefault(attr, _text(value))
    count = getattr(msg, "delivery_count", None)
    try:
        body = _body(msg)
    except PermanentError as exc:
        body = str(exc)  # not an envelope: the core rejects it as garbage, with this text
    return ReceivedMessage(
        queue=queue,
        message_id=_text(getattr(msg, "message_id", None) or ""),
        body=body,
        receive_count=count if type(count) is int and count > 0 else 1,
        attributes=attributes,
    )


def dead_letter_reason(outcome: Outcome) -> tuple[str, str]:
    """``(reason, description)`` for Service Bus: the apix error code and its message."""
    error = outcome.error
    reason = error.code if error else "UNKNOWN"
    description = f"{error.category.value}: {error.message}" if error else ""
    return reason[:MAX_REASON_CHARS], description[:MAX_DESCRIPTION_CHARS]


def settlement_call(actions: Any, verb: str, outcome: Outcome) -> tuple[Any, dict[str, str]]:
    """The settlement client's method for ``verb`` (complete, abandon, deadletter) and its
    keyword arguments, for either client shape (module docstring)."""
    functions_style = callable(getattr(actions, "deadletter", None))
    names = {
        "complete": ("complete", "complete_message"),
        "abandon": ("abandon", "abandon_message"),
        "deadletter": ("deadletter", "dead_letter_message"),
    }[verb]
    method = getattr(actions, names[0] if functions_style else names[1], None)
    if not callable(method):
        raise TransportError(
            f"{type(actions).__name__} is no Service Bus settlement client: it has no "
            f"{names[0]!r} (ServiceBusMessageActions) or {names[1]!r} (ServiceBusReceiver)"
        )
    kwargs: dict[str, str] = {}
    if verb == "deadletter":
        reason, description = dead_letter_reason(outcome)
        kwargs = (
            {"deadletter_reason": reason, "deadletter_error_description": description}
            if functions_style
            else {"reason": reason, "error_description": description}
        )
    return method, kwargs


async def settle_servicebus(actions: Any, msg: Any, outcome: Outcome) -> str:
    """Settle ``msg`` through ``actions`` according to ``outcome``; returns the verb used.
    A failing settlement raises :class:`TransportError` (the lock then expires and Service Bus
    redelivers: the idempotency table absorbs a repeat)."""
    from apix_core.processing.outcomes import OutcomeKind

    verb = {
        OutcomeKind.COMPLETED: "complete",
        OutcomeKind.DUPLICATE: "complete",
        OutcomeKind.RETRY: "abandon",
    }.get(outcome.kind, "deadletter")
    method, kwargs = settlement_call(actions, verb, outcome)
    try:
        result = method(msg, **kwargs)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        raise TransportError(
            f"Service Bus {verb} of {outcome.delivery.message_id!r} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return verb


__all__ = [
    "dead_letter_reason",
    "servicebus_delivery",
    "settle_servicebus",
    "settlement_call",
]
