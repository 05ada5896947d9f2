"""Output handlers (where a successful result sends data next) and the kinds behind them.

Every handler is turned into outbox rows inside the processing transaction and dispatched
after commit, so outputs are part of the exactly-once effect (``outputs/base.py``).
"""

from apix_core.outputs.base import (
    NoOpOutputHandler,
    OutboxRow,
    OutputHandler,
    OutputKind,
    RowContext,
    kind_of,
    output_kind,
    register_output_kind,
)
from apix_core.outputs.file import FileOutputHandler
from apix_core.outputs.queue import QueueOutputHandler

__all__ = [
    "FileOutputHandler",
    "NoOpOutputHandler",
    "OutboxRow",
    "OutputHandler",
    "OutputKind",
    "QueueOutputHandler",
    "RowContext",
    "kind_of",
    "output_kind",
    "register_output_kind",
]
