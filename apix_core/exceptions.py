"""Deprecated location of apix's errors: import them from :mod:`apix_core.errors`."""

from __future__ import annotations

from typing import Any

from apix_core import errors as _errors
from apix_core.errors import *  # noqa: F403


def __getattr__(name: str) -> Any:
    return getattr(_errors, name)  # ValidationError: the deprecated alias, with its warning
