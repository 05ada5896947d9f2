"""Transports by URL scheme: ``APIX_QUEUE_URL`` names the transport, for ``App.start`` and the CLI.

Built in: the local SQL transport for database URLs (``sqlite``, ``sqlite+aiosqlite``,
``postgresql``, ``postgresql+asyncpg``). Adapters add schemes through the ``apix.transports``
entry-point group (``sqs = "apix_aws.transport.sqs:from_url"``), loaded on first use, or at
run time with :func:`register_transport`.

A factory is called as ``factory(url)`` and returns a
:class:`~apix_core.transport.base.Producer` (or an awaitable of one). It also gets, when its
signature names them as keyword parameters, ``settings`` (the app's :class:`Settings`) and
``database`` (the metadata store's open database, which a transport keeping its queues in the
same database shares, and then joins its transactions).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from apix_core.errors import ConfigurationError

if TYPE_CHECKING:
    from apix_core.config import Settings
    from apix_core.store.database import Database
    from apix_core.transport.base import Producer

ENTRY_POINT_GROUP = "apix.transports"

TransportFactory = Callable[..., Any]

_LOCAL_SCHEMES = ("sqlite", "sqlite+aiosqlite", "postgresql", "postgresql+asyncpg", "postgres")
#: Where a scheme's transport comes from, for the error when it is not installed.
_EXTRAS = {"sqs": "aws", "azure-queue": "azure", "servicebus": "azure"}

_factories: dict[str, TransportFactory] = {}


def register_transport(scheme: str, factory: TransportFactory, *, replace: bool = True) -> None:
    """Serve ``scheme://`` URLs with ``factory`` (overrides an entry point of that name);
    ``replace=False`` keeps a factory registered before (an adapter's default)."""
    if replace or scheme.lower() not in _factories:
        _factories[scheme.lower()] = factory


def scheme_of(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ConfigurationError(
            f"queue URL {url!r} has no scheme: use e.g. sqlite:///path/queues.db, "
            "postgresql://..., sqs://, azure-queue://"
        )
    return scheme.lower()


def factory_for(scheme: str) -> TransportFactory:
    """The factory of ``scheme``: registered, built in, or from an installed entry point."""
    if scheme in _factories:
        return _factories[scheme]
    if scheme in _LOCAL_SCHEMES:
        from apix_core.transport.local import from_url

        return from_url
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name.lower() == scheme:
            try:
                factory = ep.load()
            except Exception as exc:
                raise ConfigurationError(
                    f"transport {scheme!r} ({ep.value}) failed to load: {exc}"
                ) from exc
            _factories[scheme] = factory
            return factory  # type: ignore[no-any-return]
    hint = f"; pip install 'apix-core[{_EXTRAS[scheme]}]'" if scheme in _EXTRAS else ""
    raise ConfigurationError(
        f"no transport for {scheme}:// URLs (known: {', '.join(sorted(known_schemes()))}){hint}"
    )


def known_schemes() -> set[str]:
    from importlib.metadata import entry_points

    return {
        *_LOCAL_SCHEMES,
        *_factories,
        *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)),
    }


async def open_transport(
    url: str, *, settings: Settings, database: Database | None = None
) -> Producer:
    """Build the transport ``url`` names."""
    factory = factory_for(scheme_of(url))
    offered = {"settings": settings, "database": database}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    context = {
        k: v
        for k, v in offered.items()
        if k in params
        and params[k].kind in (params[k].KEYWORD_ONLY, params[k].POSITIONAL_OR_KEYWORD)
    }
    made = factory(url, **context)
    if inspect.isawaitable(made):
        made = await made
    return made  # type: ignore[no-any-return]
