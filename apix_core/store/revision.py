"""The newest migration's revision id, known without importing Alembic (cold starts)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

VERSIONS_DIR = Path(__file__).with_name("migrations") / "versions"
_NAME = re.compile(r"(\d{4})_\w+\.py")


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The head revision: migrations are files ``NNNN_what.py`` declaring ``revision = "NNNN"``,
    each revising the one before (tests/unit check this against Alembic's own view)."""
    numbers = [m.group(1) for p in VERSIONS_DIR.iterdir() if (m := _NAME.fullmatch(p.name))]
    return max(numbers)
