"""Queue transports on AWS."""

from __future__ import annotations

from apix_aws.transport.sqs import (
    DeadLetterQueueNotConfiguredError,
    QueueNotFoundError,
    SqsBatchError,
    SqsTransport,
    from_url,
)

__all__ = [
    "DeadLetterQueueNotConfiguredError",
    "QueueNotFoundError",
    "SqsBatchError",
    "SqsTransport",
    "from_url",
]
