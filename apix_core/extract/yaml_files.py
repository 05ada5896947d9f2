"""YAML configuration files (pipelines, chains): read and parse them, and turn a validation
error into one :class:`ExtractConfigError` naming each bad key, its line and its value."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel, ValidationError

from apix_core.extract.config import _did_you_mean, _short
from apix_core.extract.exceptions import ExtractConfigError, missing_extra


def read_yaml(source: str | Path, what: str, shape: str) -> tuple[str, Any, Any]:
    """``(where, root node, data)`` of YAML text or a ``.yaml``/``.yml`` file; ``what`` names
    the document in errors ("pipeline"), ``shape`` says what its top level must hold."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ModuleNotFoundError as exc:
        raise (missing_extra(exc) or exc) from None

    where, text = what, source
    if isinstance(source, Path) or (
        isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml"))
    ):
        path = Path(source)
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ExtractConfigError(f"{where}: cannot read the {what} file: {exc}") from None
    assert isinstance(text, str)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ExtractConfigError(f"{where}{line}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ExtractConfigError(
            f"{where}: a {what} is a mapping with {shape}, not {type(data).__name__}"
        )
    return where, root, expand_env(data, root, where)


#: ``${NAME}``, ``${NAME:-default}``; ``$${`` is a literal ``${``.
_ENV_REF = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(data: Any, root: Any = None, where: str = "config") -> Any:
    """``data`` with ``${NAME}`` / ``${NAME:-default}`` in string values replaced from the
    environment, so secrets and addresses stay out of the file. A variable that is not set
    and has no default is an :class:`ExtractConfigError` naming it, its key and its line."""

    def walk(value: Any, loc: list[Any]) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, [*loc, k]) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, [*loc, i]) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            return _ENV_REF.sub(lambda m: substitute(m, loc), value)
        return value

    def substitute(match: re.Match[str], loc: list[Any]) -> str:
        escaped, name, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        found = os.environ.get(name)
        if found is not None:
            return found
        if default is not None:
            return default
        key = ".".join(map(str, loc))
        line_no = line_of(root, loc) if root is not None else None
        at = f" (line {line_no})" if line_no else ""
        raise ExtractConfigError(
            f"{where}: {key}{at}: environment variable {name} is not set (set it, or give a "
            f"default: ${{{name}:-value}})",
            key=key,
            value=None,
        )

    return walk(data, [])


def line_of(node: Any, loc: list[Any]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or of its nearest parent)."""
    import yaml

    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(part)), None)
            key_node = next((k for k, v in node.value if k.value == str(part)), None)
            if match is None:
                return line
            line = (key_node or match).start_mark.line + 1
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def raise_invalid(
    exc: ValidationError,
    root: Any,
    where: str,
    what: str,
    *,
    as_written: Callable[[list[Any]], list[Any]] = lambda loc: loc,
    empty_key: str = "",
    model: type[BaseModel] | None = None,
) -> NoReturn:
    """Raise one :class:`ExtractConfigError` for every problem of ``exc`` (key, line, value);
    ``as_written`` maps a model location back to the keys the YAML used (aliases)."""
    problems = []
    first: tuple[str, Any] = ("", None)
    for i, err in enumerate(exc.errors(include_url=False)):
        # pydantic adds tagged-union labels like "function-after[...]" to locations
        loc = as_written([p for p in err["loc"] if not (isinstance(p, str) and "[" in p)])
        key = ".".join(map(str, loc)) or empty_key
        line_no = line_of(root, loc)
        at = f" (line {line_no})" if line_no else ""
        value = err.get("input")
        if err["type"] == "missing":
            problems.append(f"{key}{at}: required and missing")
        elif err["type"] == "extra_forbidden":
            hint = _did_you_mean(model, [str(p) for p in loc]) if model else None
            also = f" (did you mean {hint!r}?)" if hint else ""
            problems.append(f"{key}{at}: unknown key{also}")
        else:
            problems.append(f"{key}{at}: {err['msg']} (got {_short(value)})")
        if i == 0:
            first = (key, value)
    raise ExtractConfigError(
        f"{where}: invalid {what}: " + "; ".join(problems), key=first[0], value=first[1]
    ) from None
