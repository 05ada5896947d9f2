"""Helpers shared by the benchmarks: timing, SQS-shaped events, result rows."""

from __future__ import annotations

import gc
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    name: str
    value: float
    unit: str
    goal: str = ""
    note: str = ""

    def row(self) -> str:
        return f"{self.name:<58} {self.value:>12,.2f} {self.unit:<10} {self.goal:<14} {self.note}"


def best_of(runs: int, fn: Callable[[], float]) -> tuple[float, list[float]]:
    """Run ``fn`` (which returns a per-item time) several times; the minimum is the least noisy."""
    samples = []
    for _ in range(runs):
        gc.collect()
        samples.append(fn())
    return min(samples), samples


def spread(samples: list[float]) -> str:
    if len(samples) < 2:
        return ""
    return f"median {statistics.median(samples):.2f}, max {max(samples):.2f}"


def sqs_record(body: str, *, receive_count: int = 1) -> dict[str, Any]:
    """An SQS record shaped as AWS documents it for a Lambda event source mapping."""
    now_ms = str(int(time.time() * 1000))
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": "AQEB" + uuid.uuid4().hex,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": now_ms,
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": now_ms,
        },
        "messageAttributes": {
            "tenant_id": {"stringValue": "bench", "dataType": "String"},
        },
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bench-queue",
        "awsRegion": "us-east-1",
    }
