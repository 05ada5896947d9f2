"""apix-core: serverless data-integration pipelines with exactly-once effect.

Write a processor once, register it with one decorator, and run it locally, on AWS Lambda or on
Azure Functions. See ``docs/architecture.md`` for the map of the package.

Names are imported on first use (PEP 562): ``import apix_core`` stays cheap for cold starts, and
``from apix_core import App`` loads what an app needs — the store and SQLAlchemy load only when
an app starts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "App": "apix_core.app",
    "HttpResponse": "apix_core.result",
    "Settings": "apix_core.config",
    "ProcessorContext": "apix_core.context",
    "ErrorCategory": "apix_core.errors",
    "ErrorInfo": "apix_core.errors",
    "ApixError": "apix_core.errors",
    "ConfigurationError": "apix_core.errors",
    "ReadOnlyRouteError": "apix_core.errors",
    "EnvelopeError": "apix_core.errors",
    "MalformedMessageError": "apix_core.errors",
    "MessageTooLargeError": "apix_core.errors",
    "MissingTenantError": "apix_core.errors",
    "PayloadValidationError": "apix_core.errors",
    "PermanentError": "apix_core.errors",
    "ProcessingError": "apix_core.errors",
    "TenantRequiredError": "apix_core.errors",
    "TopologyError": "apix_core.errors",
    "TransientError": "apix_core.errors",
    "UnsupportedEnvelopeVersionError": "apix_core.errors",
    "Outcome": "apix_core.processing.outcomes",
    "OutcomeKind": "apix_core.processing.outcomes",
    "ProcessorHandler": "apix_core.processing.handler",
    "create_processor_handler": "apix_core.processing.handler",
    "EntityReference": "apix_core.message",
    "Message": "apix_core.message",
    "MessageType": "apix_core.message",
    "configure_logging": "apix_core.observability",
    "get_logger": "apix_core.observability",
    "operation": "apix_core.observability",
    "FileOutputHandler": "apix_core.outputs",
    "NoOpOutputHandler": "apix_core.outputs",
    "OutputHandler": "apix_core.outputs",
    "QueueOutputHandler": "apix_core.outputs",
    "BackoffPolicy": "apix_core.processor",
    "ProcessorConfig": "apix_core.processor",
    "ProcessorInterface": "apix_core.processor",
    "ProcessingResult": "apix_core.result",
    "ProcessingStatus": "apix_core.result",
    "Entity": "apix_core.store.types",
    "current_tenant": "apix_core.tenancy",
    "tenant_context": "apix_core.tenancy",
}

#: Old names kept importable, with a DeprecationWarning from their module.
_DEPRECATED = {"ValidationError": "apix_core.errors"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name) or _DEPRECATED.get(name)
    if module is None:
        raise AttributeError(f"module 'apix_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    if name in _EXPORTS:
        globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from apix_core.app import App
    from apix_core.config import Settings
    from apix_core.context import ProcessorContext
    from apix_core.errors import (
        ApixError,
        ConfigurationError,
        EnvelopeError,
        ErrorCategory,
        ErrorInfo,
        MalformedMessageError,
        MessageTooLargeError,
        MissingTenantError,
        PayloadValidationError,
        PermanentError,
        ProcessingError,
        ReadOnlyRouteError,
        TenantRequiredError,
        TopologyError,
        TransientError,
        UnsupportedEnvelopeVersionError,
    )
    from apix_core.message import EntityReference, Message, MessageType
    from apix_core.observability import configure_logging, get_logger, operation
    from apix_core.outputs import (
        FileOutputHandler,
        NoOpOutputHandler,
        OutputHandler,
        QueueOutputHandler,
    )
    from apix_core.processing.handler import ProcessorHandler, create_processor_handler
    from apix_core.processing.outcomes import Outcome, OutcomeKind
    from apix_core.processor import BackoffPolicy, ProcessorConfig, ProcessorInterface
    from apix_core.result import HttpResponse, ProcessingResult, ProcessingStatus
    from apix_core.store.types import Entity
    from apix_core.tenancy import current_tenant, tenant_context

__all__ = [
    "ApixError",
    "App",
    "BackoffPolicy",
    "ConfigurationError",
    "Entity",
    "EntityReference",
    "EnvelopeError",
    "ErrorCategory",
    "ErrorInfo",
    "FileOutputHandler",
    "HttpResponse",
    "MalformedMessageError",
    "Message",
    "MessageTooLargeError",
    "MessageType",
    "MissingTenantError",
    "NoOpOutputHandler",
    "Outcome",
    "OutcomeKind",
    "OutputHandler",
    "PayloadValidationError",
    "PermanentError",
    "ProcessingError",
    "ProcessingResult",
    "ProcessingStatus",
    "ProcessorConfig",
    "ProcessorContext",
    "ProcessorHandler",
    "ProcessorInterface",
    "QueueOutputHandler",
    "ReadOnlyRouteError",
    "Settings",
    "TenantRequiredError",
    "TopologyError",
    "TransientError",
    "UnsupportedEnvelopeVersionError",
    "__version__",
    "configure_logging",
    "create_processor_handler",
    "current_tenant",
    "get_logger",
    "operation",
    "tenant_context",
]
