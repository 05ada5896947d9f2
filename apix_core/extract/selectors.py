"""Finding records (and cursors, totals, flags) inside a JSON body.

A selector is a dotted path, optionally JSONPath-like: ``data.items``, ``$.data.items[*]``,
``results[0].rows``, ``meta.next``. ``[*]`` and a trailing list mean "the items of this list".
Paths are compiled once per extraction (:func:`compile_path`), not parsed per page.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from apix_core.extract.exceptions import ExtractConfigError

_PART = re.compile(r"([^.\[\]]+)|\[(\d+|\*)\]|\[['\"]([^'\"]+)['\"]\]")
_MISSING = object()

Getter = Callable[[Any], Any]


def _steps(path: str) -> list[str | int]:
    text = path.strip()
    if text.startswith("$"):
        text = text[1:].lstrip(".")
    steps: list[str | int] = []
    pos = 0
    while pos < len(text):
        if text[pos] == ".":
            pos += 1
            continue
        match = _PART.match(text, pos)
        if match is None:
            raise ExtractConfigError(
                f"invalid selector {path!r} at position {pos}: write a dotted path like "
                "'data.items' or '$.data.items[*]'",
                key="selector",
                value=path,
            )
        name, index, quoted = match.groups()
        if index == "*":
            pass  # "[*]": the items of the list reached so far; a list is returned as is
        elif index is not None:
            steps.append(int(index))
        else:
            steps.append(quoted if quoted is not None else name)
        pos = match.end()
    return steps


def compile_path(path: str | None) -> Getter:
    """A function returning the value at ``path`` in a JSON body (``None`` when absent)."""
    if path is None or path.strip() in {"", "$"}:
        return lambda body: body
    steps = _steps(path)

    if len(steps) == 1 and isinstance(steps[0], str):
        key = steps[0]
        return lambda body: body.get(key) if isinstance(body, dict) else None

    def get(body: Any) -> Any:
        value = body
        for step in steps:
            if isinstance(step, int):
                if not isinstance(value, list) or not -len(value) <= step < len(value):
                    return None
                value = value[step]
            else:
                if not isinstance(value, dict):
                    return None
                value = value.get(step, _MISSING)
                if value is _MISSING:
                    return None
        return value

    return get


def select(body: Any, path: str | None) -> Any:
    """The value at ``path`` in ``body`` (``None`` when absent); compiles per call."""
    return compile_path(path)(body)


def default_records(body: Any) -> Any:
    """Records when no selector is configured: the body if it is a list, else the first
    list-valued field of an object (``{"data": [...], "next": ...}``), else the object itself
    as one record."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for value in body.values():
            if isinstance(value, list):
                return value
        return [body] if body else []
    return None


__all__ = ["Getter", "compile_path", "default_records", "select"]
