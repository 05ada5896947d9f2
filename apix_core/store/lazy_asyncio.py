"""Load SQLAlchemy's asyncio engine without its ORM session.

``sqlalchemy.ext.asyncio``'s package ``__init__`` imports ``AsyncSession`` and with it the whole
ORM (``sqlalchemy.orm``: a few hundred milliseconds at a cold start, much of it code it generates
and compiles at import). apix's store only needs the engine half (``AsyncEngine``,
``AsyncConnection``, ``AsyncTransaction``, ``create_async_engine``), whose modules import no ORM.

:func:`install` (run by ``apix_core.store``'s ``__init__``, importing nothing) makes the next
import of the package give a module whose names load on first use: an engine or
result name imports only its submodule; any other name (``AsyncSession``...) runs the real
``__init__``, so code that needs the session half (Alembic, users' own code) gets exactly what a
plain import gives. Nothing is done when the package is already imported, and another layout
than a package on disk falls back to the plain import.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from typing import Any

PACKAGE = "sqlalchemy.ext.asyncio"

#: Names of the package that its engine-side submodules define (no ORM behind them).
_LIGHT = {
    "AsyncConnection": "engine",
    "AsyncEngine": "engine",
    "AsyncTransaction": "engine",
    "create_async_engine": "engine",
    "async_engine_from_config": "engine",
    "create_async_pool_from_url": "engine",
    "AsyncMappingResult": "result",
    "AsyncResult": "result",
    "AsyncScalarResult": "result",
    "AsyncTupleResult": "result",
}


class _LazyPackage(types.ModuleType):
    """``sqlalchemy.ext.asyncio`` until its real ``__init__`` has run (see the module doc)."""

    _apix_complete = False
    _apix_real_loader: importlib.abc.Loader

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in self._apix_submodules():
            # ``from . import exc`` in a submodule: AttributeError lets the import system
            # import the submodule itself.
            raise AttributeError(name)
        submodule = _LIGHT.get(name)
        if submodule is not None and not self._apix_complete:
            _initialize_greenlet()
            value = getattr(importlib.import_module(f"{PACKAGE}.{submodule}"), name)
        else:
            self._complete()
            try:
                value = self.__dict__[name]
            except KeyError:
                raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}") from None
        setattr(self, name, value)
        return value

    def _apix_submodules(self) -> frozenset[str]:
        found: frozenset[str] | None = self.__dict__.get("_apix_submodule_names")
        if found is None:
            import pkgutil  # only when a name is first missed, not on the handler's import

            found = frozenset(info.name for info in pkgutil.iter_modules(self.__path__))
            self._apix_submodule_names = found
        return found

    def __dir__(self) -> list[str]:
        self._complete()
        return sorted(self.__dict__)

    def _complete(self) -> None:
        """Run the package's own ``__init__`` in this module (once)."""
        if self._apix_complete:
            return
        self._apix_complete = True
        self._apix_real_loader.exec_module(self)


def _initialize_greenlet() -> None:
    # What the package __init__ ends with (SQLAlchemy 2.1): set up the greenlet bridge that
    # the async engine's calls run through.
    from sqlalchemy.util import concurrency

    shim = getattr(concurrency, "_concurrency_shim", None)
    if shim is not None:
        shim._initialize()


class _Loader(importlib.abc.Loader):
    """Creates the lazy package; the real loader runs only when a session-side name is used."""

    def __init__(self, real: importlib.abc.Loader) -> None:
        self.real = real

    def create_module(self, spec: ModuleSpec) -> types.ModuleType:
        module = _LazyPackage(spec.name)
        module._apix_real_loader = self.real
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None  # deferred to _LazyPackage._complete


class _Finder(importlib.abc.MetaPathFinder):
    """Answers for ``sqlalchemy.ext.asyncio`` only, once (then leaves ``sys.meta_path``)."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname != PACKAGE:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return spec  # not the package on disk apix knows: import it as usual
        spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Make the next import of ``sqlalchemy.ext.asyncio`` lazy (nothing if already imported).

    Imports nothing itself: the handler module's import must not load SQLAlchemy.
    """
    if PACKAGE in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
