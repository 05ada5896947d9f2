"""The exactly-once path of a message, top to bottom.

``handler`` orchestrates; ``invoke`` runs user code; ``unit_of_work`` is what a metadata backend
does in one transaction (``apix_core.store.unit_of_work`` for SQL); ``outcomes`` are the
boundary to ``settle``.
"""

from apix_core.processing.handler import ProcessorHandler, create_processor_handler
from apix_core.processing.outcomes import Outcome, OutcomeKind, RetryPolicy, dead_letter_info
from apix_core.processing.settle import ConsumerSettler, Settler

__all__ = [
    "ConsumerSettler",
    "Outcome",
    "OutcomeKind",
    "ProcessorHandler",
    "RetryPolicy",
    "Settler",
    "create_processor_handler",
    "dead_letter_info",
]
