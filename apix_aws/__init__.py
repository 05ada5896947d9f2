"""apix on AWS: the SQS queue transport (``apix_aws.transport.sqs``), later the Lambda handler.

Importing this package imports no AWS SDK: boto3 loads when a transport first talks to AWS.
"""

from __future__ import annotations

__all__: list[str] = []
