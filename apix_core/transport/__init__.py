"""Queue transports: one interface, implemented by the local SQL queue and the cloud adapters."""

from apix_core.transport.base import (
    DeadLetterInfo,
    DeadLetterRecord,
    OutgoingMessage,
    QueueDepth,
    QueueTransport,
    ReceivedMessage,
)

__all__ = [
    "DeadLetterInfo",
    "DeadLetterRecord",
    "OutgoingMessage",
    "QueueDepth",
    "QueueTransport",
    "ReceivedMessage",
]
