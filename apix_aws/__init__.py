"""apix on AWS: the Lambda entry point (:func:`lambda_handler`) and the SQS queue transport
(``apix_aws.transport.sqs``).

Importing this package imports no AWS SDK: boto3 loads when a transport first talks to AWS.
"""

from __future__ import annotations

from apix_aws.handler import lambda_handler

__all__ = ["lambda_handler"]
