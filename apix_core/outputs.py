"""Output handlers: where a successful result sends data next.

Every handler is turned into outbox rows inside the processing transaction and dispatched
after commit, so outputs are part of the exactly-once effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apix_core.message import EntityReference


@dataclass
class OutputHandler:
    """Base class: a destination and free-form configuration."""

    destination: str
    config: dict[str, Any] = field(default_factory=dict)

    kind = "noop"


@dataclass
class QueueOutputHandler(OutputHandler):
    """Send a message to a queue declared in the processor's ``produces``.

    The message carries ``payload`` if given, else the processed message's payload. ``entity``
    links it to an entity; a source processor's handler persists that entity's metadata.
    """

    payload: dict[str, Any] | None = None
    entity: EntityReference | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    delay_seconds: float = 0.0

    kind = "queue"


@dataclass
class FileOutputHandler(OutputHandler):
    """Write the payload as JSON to a file under ``destination`` (a directory).

    ``config``: ``file_pattern`` (default ``"{message_id}.json"``; fields ``{message_id}``,
    ``{tenant_id}``, ``{processor}``, ``{timestamp}``, ``{date}``) and ``compress`` (gzip).
    The name derives from the outbox row, so a re-dispatch rewrites the same file.
    """

    payload: dict[str, Any] | None = None

    kind = "file"


@dataclass
class NoOpOutputHandler(OutputHandler):
    """Terminal stage: nothing is sent."""

    destination: str = ""

    kind = "noop"
