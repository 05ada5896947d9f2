"""EventBridge events: scheduled rules and EventBridge Scheduler (→ TIMER messages), custom
events (→ QUEUE deliveries whose payload is ``detail``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from apix_aws.errors import MalformedEventError
from apix_core.hashing import deterministic_id
from apix_core.transport.base import ReceivedMessage


def is_eventbridge(event: Mapping[str, Any]) -> bool:
    return "detail-type" in event and "source" in event and "id" in event


def is_schedule(event: Mapping[str, Any]) -> bool:
    source = event.get("source")
    if source == "aws.scheduler":
        return True
    return source == "aws.events" and event.get("detail-type") == "Scheduled Event"


def fire_time(event: Mapping[str, Any]) -> datetime:
    """The scheduled time (``time``, UTC) of a schedule event."""
    raw = event.get("time")
    if not isinstance(raw, str):
        raise MalformedEventError("schedule event without a time")
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise MalformedEventError(f"schedule event time {raw[:40]!r} is not ISO 8601") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def custom_delivery(queue: str, event: Mapping[str, Any]) -> ReceivedMessage:
    """A custom event as a foreign queue delivery: ``detail`` is the body; the id derives from
    the event id, so a re-delivered event is a duplicate."""
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise MalformedEventError("EventBridge event without an id")
    detail = event.get("detail")
    body = detail if isinstance(detail, str) else json.dumps(detail, separators=(",", ":"))
    return ReceivedMessage(
        queue=queue,
        message_id=deterministic_id("eventbridge", event_id),
        body=body,
    )
