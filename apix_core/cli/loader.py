"""Load the ``App`` of a user's module from a file path (``path/to/app.py[:attr]``)."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

from apix_core.app import App
from apix_core.errors import ConfigurationError

_counter = itertools.count(1)


def split_target(target: str) -> tuple[Path, str | None]:
    """``app.py:attr`` → (path, attr); a drive letter or a bare path has no attribute."""
    head, sep, tail = target.rpartition(":")
    if sep and head and tail.isidentifier() and len(head) > 1:
        return Path(head), tail
    return Path(target), None


def load_app(target: str) -> App:
    """Import the module at ``target`` and return its ``App`` (the named one, or the only one)."""
    path, attr = split_target(target)
    if not path.is_file():
        raise ConfigurationError(f"no such file: {path}")
    # A unique module name: loading the same file twice (tests, reloads) must not collide.
    module_name = f"_apix_app_{path.stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, path.resolve())
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Sibling imports of the app module (``import models``) resolve like ``python app.py`` would.
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    if attr is not None:
        if not hasattr(module, attr):
            raise ConfigurationError(f"{path} has no attribute {attr!r}")
        found = getattr(module, attr)
        if not isinstance(found, App):
            raise ConfigurationError(f"{path}:{attr} is a {type(found).__name__}, not an apix App")
        return found
    apps: dict[int, tuple[str, App]] = {}
    for name, value in vars(module).items():
        if isinstance(value, App) and id(value) not in apps:
            apps[id(value)] = (name, value)
    if not apps:
        raise ConfigurationError(f"{path} defines no apix App (expected e.g. `app = App(...)`)")
    if len(apps) > 1:
        names = ", ".join(sorted(n for n, _ in apps.values()))
        raise ConfigurationError(
            f"{path} defines several Apps ({names}): pick one with {path}:<name>"
        )
    return next(iter(apps.values()))[1]
