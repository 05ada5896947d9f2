"""The immutable state a chain passes from step to step.

A :class:`ChainState` never changes: a step reads it and :meth:`ChainState.updated` returns a
new one with the step's outputs. Values are frozen on the way in (lists become tuples, dicts
read-only mappings), so a step — or user code holding the state — cannot change what another
step sees. :meth:`ChainState.to_dict` gives plain JSON-ready data back (for messages, reports).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any


def freeze(value: Any) -> Any:
    """``value`` with its lists as tuples and its dicts as read-only mappings, recursively."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The plain (mutable, JSON-ready) copy of a frozen value."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


class ChainState(Mapping[str, Any]):
    """Read-only mapping of state keys to frozen values; ``updated`` makes the next state."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._values: Mapping[str, Any] = freeze(dict(values or {}))

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"ChainState({dict(self._values)!r})"

    def updated(self, values: Mapping[str, Any]) -> ChainState:
        """A new state: this one with ``values`` set (this one is unchanged)."""
        new = ChainState.__new__(ChainState)
        new._values = MappingProxyType({**self._values, **freeze(dict(values))})
        return new

    def lookup(self, path: str) -> Any:
        """The value at ``path`` (``key`` or ``key.sub.key``); ``KeyError`` names the path."""
        node: Any = self._values
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise KeyError(path)
            node = node[part]
        return node

    def to_dict(self) -> dict[str, Any]:
        """Plain, mutable, JSON-ready data (a copy)."""
        return {k: thaw(v) for k, v in self._values.items()}


__all__ = ["ChainState", "freeze", "thaw"]
