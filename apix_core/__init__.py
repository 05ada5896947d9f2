"""apix-core: serverless data-integration pipelines with exactly-once effect.

Write a processor once, register it with one decorator, and run it locally, on AWS Lambda or on
Azure Functions. See ``docs/architecture.md`` for the map of the package.
"""

from apix_core.app import App, HttpResponse
from apix_core.config import Settings
from apix_core.context import ProcessorContext
from apix_core.errors import ErrorCategory, ErrorInfo
from apix_core.exceptions import (
    ApixError,
    ConcurrentDeliveryError,
    ConfigurationError,
    EnvelopeError,
    MalformedMessageError,
    MessageTooLargeError,
    MissingTenantError,
    PayloadValidationError,
    TenantRequiredError,
    TopologyError,
    TransientError,
    UnsupportedEnvelopeVersionError,
    ValidationError,
)
from apix_core.handler import Outcome, OutcomeKind, ProcessorHandler, create_processor_handler
from apix_core.message import EntityReference, Message, MessageType
from apix_core.observability import configure_logging, get_logger, operation
from apix_core.outputs import (
    FileOutputHandler,
    NoOpOutputHandler,
    OutputHandler,
    QueueOutputHandler,
)
from apix_core.processor import BackoffPolicy, ProcessorConfig, ProcessorInterface
from apix_core.result import ProcessingResult, ProcessingStatus
from apix_core.store.entities import Entity
from apix_core.tenancy import current_tenant, tenant_context

__version__ = "0.1.0"

__all__ = [
    "ApixError",
    "App",
    "BackoffPolicy",
    "ConcurrentDeliveryError",
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
    "ProcessingResult",
    "ProcessingStatus",
    "ProcessorConfig",
    "ProcessorContext",
    "ProcessorHandler",
    "ProcessorInterface",
    "QueueOutputHandler",
    "Settings",
    "TenantRequiredError",
    "TopologyError",
    "TransientError",
    "UnsupportedEnvelopeVersionError",
    "ValidationError",
    "__version__",
    "configure_logging",
    "create_processor_handler",
    "current_tenant",
    "get_logger",
    "operation",
    "tenant_context",
]
