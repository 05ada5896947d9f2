"""The metadata store's values, without the store: what a processor's context buffers and reads.

Kept apart from the SQL modules so that a processor's import path (and a cold start) does not
load SQLAlchemy. The column lengths below are the schema's (``models.py``; a test keeps them
equal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

INITIAL_STATE = "received"

#: Lengths of the entity columns a processor fills (``persist_entity``, ``transition``).
EXTERNAL_ID_LENGTH = 255
CANONICAL_TYPE_LENGTH = 100
SOURCE_LENGTH = 100
STATE_LENGTH = 64
REASON_LENGTH = 255


class Entity(BaseModel):
    """An entity's metadata (never its content)."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant_id: str
    external_id: str
    canonical_type: str
    source: str
    version: int
    content_hash: str
    attributes: dict[str, Any]
    state: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class EntityPage:
    """One page of entities, newest first; ``next_cursor`` (opaque) fetches the next page, None
    on the last."""

    items: list[Entity]
    next_cursor: str | None


class EntityVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    entity_id: str
    version: int
    content_hash: str
    attributes: dict[str, Any]
    processor: str | None
    message_id: str | None
    created_at: datetime


class StateTransition(BaseModel):
    model_config = ConfigDict(frozen=True)

    entity_id: str | None
    message_id: str | None
    processor: str | None
    from_state: str | None
    to_state: str
    reason: str | None
    created_at: datetime


@dataclass(slots=True)
class PendingEntity:
    """A buffered ``persist_entity`` call, written when the processor has succeeded."""

    id: str
    external_id: str
    canonical_type: str
    source: str
    content_hash: str
    attributes: dict[str, Any]
    state: str | None
    processor: str
    message_id: str


@dataclass(slots=True)
class PendingTransition:
    entity_id: str
    to_state: str
    reason: str | None
    processor: str
    message_id: str


@dataclass(slots=True)
class EntityWriteResult:
    entity_id: str
    version: int
    created: bool
    duplicate: bool


@dataclass(slots=True)
class EntityWriteBatch:
    """What one message's processor asked to persist."""

    entities: list[PendingEntity] = field(default_factory=list)
    transitions: list[PendingTransition] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.entities or self.transitions)
