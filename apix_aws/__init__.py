"""apix on AWS: the Lambda entry point (:func:`lambda_handler`) and the SQS queue transport
(``apix_aws.transport.sqs``).

Importing this package imports no AWS SDK: boto3 loads when a transport first talks to AWS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apix_aws.handler import lambda_handler

__all__ = ["lambda_handler"]


def __getattr__(name: str) -> Any:
    # Lazy: the `apix deploy aws` CLI plugin imports apix_aws.deploy on every `apix --help`,
    # which must not pull in the app, store and runtime that the handler needs.
    if name == "lambda_handler":
        from apix_aws.handler import lambda_handler

        return lambda_handler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
