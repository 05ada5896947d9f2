"""Canonical JSON and content hashes (duplicate detection compares hashes, never content)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from apix_core.message import compact_encoder

#: Namespace of every deterministic id apix derives (entity ids, outgoing message ids).
APIX_NAMESPACE = uuid.UUID("6f1c2d4e-8a3b-5c7d-9e0f-a1b2c3d4e5f6")


#: Built once (see ``compact_encoder``): this runs for every ``persist_entity``.
_canonical = compact_encoder(sort_keys=True, ensure_ascii=False)


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace: equal content gives equal text."""
    return _canonical(data)


def content_hash(data: Any) -> str:
    """sha256 hex digest of the canonical JSON of ``data``."""
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


_NAMESPACE_BYTES = APIX_NAMESPACE.bytes


def deterministic_id(*parts: str) -> str:
    """A UUID5 of the parts: the same inputs give the same id on every redelivery.

    Equal to ``str(uuid.uuid5(APIX_NAMESPACE, "\\x1f".join(parts)))``, computed without
    building ``UUID`` objects (this runs once per outgoing message).
    """
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode("utf-8")).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def entity_id_for(tenant_id: str, canonical_type: str, source: str, external_id: str) -> str:
    """The id of an entity is derived from its natural key: the same on every redelivery."""
    return deterministic_id("entity", tenant_id, canonical_type, source, external_id)
