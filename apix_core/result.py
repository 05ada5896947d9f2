"""What a processor returns."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from apix_core.outputs import OutputHandler


def _json_headers() -> dict[str, str]:
    return {"Content-Type": "application/json"}


@dataclass
class HttpResponse:
    """An HTTP answer: a status, a JSON body (object or array) and headers.

    Every HTTP trigger (``apix serve``, ``App.handle_http``, API Gateway, Azure Functions)
    answers with one. An HTTP processor chooses its own by returning one (or
    ``ProcessingResult.respond(...)``); otherwise apix maps the outcome to one."""

    status_code: int
    body: Any
    headers: dict[str, str] = field(default_factory=_json_headers)

    def __post_init__(self) -> None:
        if type(self.status_code) is not int or not 100 <= self.status_code <= 599:
            raise ValueError(
                f"HTTP status must be an int from 100 to 599, not {self.status_code!r}"
            )
        if not isinstance(self.body, dict | list):
            raise TypeError(
                f"HTTP body must be a JSON object or array (dict or list), "
                f"not {type(self.body).__name__}"
            )
        if not any(k.lower() == "content-type" for k in self.headers):
            self.headers = {**self.headers, "Content-Type": "application/json"}

    def text(self) -> str:
        return json.dumps(self.body, separators=(",", ":"), default=str)


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
    #: The HTTP answer an HTTP processor chose (None: apix maps the outcome to one).
    http: HttpResponse | None = None

    @classmethod
    def respond(
        cls,
        body: Any,
        status: int = 200,
        *,
        headers: Mapping[str, str] | None = None,
        output_handlers: list[OutputHandler] | None = None,
        processing_metadata: dict[str, Any] | None = None,
    ) -> ProcessingResult:
        """Success, answered to an HTTP request with ``body`` (JSON) and ``status``."""
        return cls(
            output_handlers=list(output_handlers or ()),
            processing_metadata=dict(processing_metadata or {}),
            http=HttpResponse(status, body, dict(headers) if headers else _json_headers()),
        )

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
