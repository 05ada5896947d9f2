"""What a processor returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from apix_core.outputs import OutputHandler


class ProcessingStatus(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"


@dataclass
class ProcessingResult:
    """Outcome of one processor call, with its routing (output handlers)."""

    success: bool = True
    status: ProcessingStatus = ProcessingStatus.SUCCESS
    error_message: str | None = None
    error_code: str | None = None
    can_retry: bool = False
    retry_after_seconds: float | None = None
    entities_created: list[str] = field(default_factory=list)
    entities_updated: list[str] = field(default_factory=list)
    output_handlers: list[OutputHandler] = field(default_factory=list)
    processing_metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create_success(
        cls,
        *,
        entities_created: list[str] | None = None,
        entities_updated: list[str] | None = None,
        processing_metadata: dict[str, Any] | None = None,
        output_handlers: list[OutputHandler] | None = None,
    ) -> ProcessingResult:
        return cls(
            entities_created=list(entities_created or ()),
            entities_updated=list(entities_updated or ()),
            processing_metadata=dict(processing_metadata or {}),
            output_handlers=list(output_handlers or ()),
        )

    @classmethod
    def create_failure(
        cls,
        error_message: str,
        error_code: str = "PROCESSING_ERROR",
        can_retry: bool = True,
        *,
        retry_after_seconds: float | None = None,
        processing_metadata: dict[str, Any] | None = None,
    ) -> ProcessingResult:
        return cls(
            success=False,
            status=ProcessingStatus.FAILED,
            error_message=error_message,
            error_code=error_code,
            can_retry=can_retry,
            retry_after_seconds=retry_after_seconds,
            processing_metadata=dict(processing_metadata or {}),
        )

    def add_output_handler(self, handler: OutputHandler) -> ProcessingResult:
        self.output_handlers.append(handler)
        return self

    def add_entity_created(self, entity_id: str) -> ProcessingResult:
        self.entities_created.append(entity_id)
        return self

    def add_entity_updated(self, entity_id: str) -> ProcessingResult:
        self.entities_updated.append(entity_id)
        return self
