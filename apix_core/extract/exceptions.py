"""The extraction engine's typed errors, all inside apix's one hierarchy (``apix_core.errors``).

Each names what failed (the URL without its query string, the config key and value) and never a
secret: query strings can carry API keys, so errors show the path only.
"""

from __future__ import annotations

from apix_core.errors import ApixError, ConfigurationError, PermanentError, TransientError


class ExtractError(ApixError):
    """Base of every extraction error."""

    code = "EXTRACT_ERROR"


class ExtractConfigError(ExtractError, ConfigurationError):
    """An extractor, output or pipeline config is invalid; ``key`` and ``value`` name it."""

    code = "EXTRACT_CONFIG_ERROR"

    def __init__(self, message: str, *, key: str = "", value: object = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


class UnknownComponentError(ExtractConfigError):
    """No extractor or output is registered under that name."""

    code = "EXTRACT_UNKNOWN_COMPONENT"


class ExtractDependencyError(ExtractConfigError, ImportError):
    """A package of the ``[extract]`` extra (httpx, h2, orjson, PyYAML) is not installed."""

    code = "EXTRACT_MISSING_DEPENDENCY"


#: Modules the ``[extract]`` extra brings (import name -> package name).
EXTRA_MODULES = {"httpx": "httpx", "h2": "h2", "orjson": "orjson", "yaml": "pyyaml"}


def missing_extra(exc: ModuleNotFoundError) -> ExtractDependencyError | None:
    """The clear error for ``exc`` when it is a missing ``[extract]`` package, else ``None``."""
    top = (exc.name or "").partition(".")[0]
    if top not in EXTRA_MODULES:
        return None
    return ExtractDependencyError(
        f"apix_core.extract needs {EXTRA_MODULES[top]}, which is not installed: "
        "pip install 'apix-core[extract]'",
        key=top,
    )


class ExtractRequestError(ExtractError, TransientError):
    """A request still failed after the last attempt (5xx, 429, timeout, connection error).

    ``url`` is the request URL without its query string; ``status`` the last HTTP status
    (``None`` for a timeout or connection error); ``attempts`` how many were made.
    """

    code = "EXTRACT_REQUEST_FAILED"

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int | None = None,
        attempts: int = 1,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.url = url
        self.status = status
        self.attempts = attempts


class ExtractHTTPStatusError(ExtractError, PermanentError):
    """The API answered with a status that retrying cannot fix (400, 403, 404...)."""

    code = "EXTRACT_HTTP_STATUS"

    def __init__(self, message: str, *, url: str, status: int) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class ExtractAuthError(ExtractHTTPStatusError):
    """401 even after one token refresh, or the credentials could not be used at all."""

    code = "EXTRACT_AUTH_FAILED"


class MalformedResponseError(ExtractError, PermanentError):
    """A response body is not the JSON the config expects (bad JSON, selector hits no list)."""

    code = "EXTRACT_MALFORMED_RESPONSE"

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class PaginationLoopError(ExtractError, PermanentError):
    """The API handed back a page token or next URL it had already handed back."""

    code = "EXTRACT_PAGINATION_LOOP"

    def __init__(self, message: str, *, url: str = "", token: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.token = token


__all__ = [
    "ExtractAuthError",
    "ExtractConfigError",
    "ExtractDependencyError",
    "ExtractError",
    "ExtractHTTPStatusError",
    "ExtractRequestError",
    "MalformedResponseError",
    "PaginationLoopError",
    "UnknownComponentError",
]
