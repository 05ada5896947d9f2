"""Connection settings the way the Functions host reads them, and transport URL parsing."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, urlsplit

from apix_azure.errors import AzureConnectionError
from apix_core.errors import ConfigurationError


def resolve_connection_string(
    explicit: str | None, settings: Sequence[str], env: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """``(connection string, where it came from)``: ``explicit`` if given, else the first of
    ``settings`` (app-setting names, read from the environment as the Functions host does)
    that is set and not blank."""
    if explicit is not None:
        if not explicit.strip():
            raise AzureConnectionError("the connection string is blank")
        return explicit, "the connection string given"
    source = os.environ if env is None else env
    for name in settings:
        value = source.get(name, "")
        if value.strip():
            return value, f"app setting {name}"
    raise AzureConnectionError(
        "no connection string: set the app setting "
        + " or ".join(repr(s) for s in settings)
        + " (a connection string), or pass one"
    )


#: App setting of a per-customer queue name prefix (``apix deploy azure`` writes it); the
#: transports and ``function_app``'s trigger bindings put it before every apix queue name.
QUEUE_PREFIX_ENV = "APIX_AZURE_QUEUE_PREFIX"
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")


def queue_prefix(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The queue name prefix: ``explicit`` if given, else the app setting, else none. A prefix
    is 1-40 letters, digits, ``.``, ``_``, ``-`` starting with a letter or digit."""
    source = os.environ if env is None else env
    value = explicit if explicit is not None else source.get(QUEUE_PREFIX_ENV, "").strip()
    if value and not _PREFIX.fullmatch(value):
        raise ConfigurationError(
            f"queue prefix {value!r}: use 1-40 letters, digits, '.', '_' or '-' starting "
            "with a letter or digit, e.g. 'cust-a-'"
        )
    return value


def parse_url(url: str, scheme: str, allowed: Sequence[str]) -> dict[str, str]:
    """Query parameters of ``<scheme>://?name=value&...``; anything else is a clear error."""
    parts = urlsplit(url)
    if parts.scheme != scheme:
        raise ConfigurationError(f"expected a {scheme}:// URL, got {url!r}")
    if parts.netloc or parts.path not in ("", "/") or parts.fragment:
        raise ConfigurationError(
            f"{url!r}: a {scheme}:// URL names no host or path; the account comes from a "
            f"connection string, e.g. {scheme}://?connection=SETTING_NAME"
        )
    params: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key not in allowed:
            raise ConfigurationError(
                f"{url!r}: unknown parameter {key!r} (known: {', '.join(allowed)})"
            )
        if not value:
            raise ConfigurationError(f"{url!r}: parameter {key!r} is empty")
        params[key] = value
    return params
