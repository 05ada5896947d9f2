"""Deprecated location: the handler is :mod:`apix_core.processing` now."""

from apix_core.processing.handler import ProcessorHandler, create_processor_handler
from apix_core.processing.outcomes import Outcome, OutcomeKind

__all__ = ["Outcome", "OutcomeKind", "ProcessorHandler", "create_processor_handler"]
