"""Canonical JSON and content hashes (duplicate detection compares hashes, never content)."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

#: Namespace of every deterministic id apix derives (entity ids, outgoing message ids).
APIX_NAMESPACE = uuid.UUID("6f1c2d4e-8a3b-5c7d-9e0f-a1b2c3d4e5f6")


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace: equal content gives equal text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_hash(data: Any) -> str:
    """sha256 hex digest of the canonical JSON of ``data``."""
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


def deterministic_id(*parts: str) -> str:
    """A UUID5 of the parts: the same inputs give the same id on every redelivery."""
    return str(uuid.uuid5(APIX_NAMESPACE, "\x1f".join(parts)))
