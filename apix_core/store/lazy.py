"""Modules bound at import, loaded on first attribute access.

The store's modules name SQLAlchemy (and the table definitions built with it) at module level,
but a SQLite write transaction that only claims ids and commits needs none of it: a Lambda's
first batch then pays no SQLAlchemy import (~200 ms of a cold start). ``sa = lazy_module(
"sqlalchemy")`` keeps ``sa.select(...)`` working everywhere; the first such use imports it.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """A stand-in for module ``target``: the first attribute read imports it, and each name
    read is then kept on the stand-in (later reads cost a plain attribute lookup)."""

    def __init__(self, target: str) -> None:
        super().__init__(f"lazy:{target}")
        self.__dict__["_lazy_target"] = target

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = getattr(importlib.import_module(self.__dict__["_lazy_target"]), name)
        self.__dict__[name] = value
        return value


def lazy_module(target: str) -> Any:
    """A :class:`LazyModule` for ``target`` (typed ``Any``: annotate the real module under
    ``TYPE_CHECKING``)."""
    return LazyModule(target)
