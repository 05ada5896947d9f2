"""Typed configs of the extraction engine (extractors, pagination, auth, limits, batches).

Every model forbids unknown keys, so a typo is an error, not a silently ignored setting.
:func:`parse_config` turns pydantic's errors into one :class:`ExtractConfigError` that names
the bad key (dotted path) and the value given. Durations accept ``"90s"``, ``"5m"``, ``"1h"``,
``"1d"``, ``"1h30m"``, a number of seconds or a ``timedelta``. Secrets are ``SecretStr``:
they print as ``**********`` in reprs, logs and errors.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from apix_core.extract.exceptions import ExtractConfigError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> timedelta:
    """``"1h30m"`` / ``"90s"`` / ``90`` / ``timedelta`` → ``timedelta``; ValueError otherwise."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '5m'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text and _DURATION.sub("", text) == "":
            return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text)))
    raise ValueError(
        "not a duration: write seconds (90) or a string like '90s', '5m', '1h', '1d', '1h30m'"
    )


#: A duration field: accepts "5m", 300, timedelta; holds a ``timedelta``.
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# -- pagination -----------------------------------------------------------------------------
PaginationType = Literal[
    "single_page", "page_number", "offset", "cursor", "link_header", "next_url"
]
_PAGINATION_ALIASES = {
    "single": "single_page",
    "none": "single_page",
    "page": "page_number",
    "offset_limit": "offset",
    "link": "link_header",
    "header_link": "link_header",
    "json_link": "next_url",
    "next": "next_url",
}


class PaginationConfig(_Config):
    """How to reach the next page and when to stop.

    ``type``: ``single_page``, ``page_number`` (``?page=1&per_page=100``), ``offset``
    (``?offset=100&limit=50``), ``cursor`` (token from the body at ``cursor_path`` or from the
    ``cursor_header`` response header, sent as ``cursor_param``), ``link_header`` (RFC 8288
    ``rel="next"``), ``next_url`` (a URL in the body at ``next_url_path``).

    Stops, whichever comes first: an empty page (``stop_on_empty``), ``total_path`` (total
    record count) or ``total_pages_path`` reached, ``has_more_path`` false, ``max_pages``
    pages, no next token/URL. A token or URL seen twice is an error, never an endless loop.
    """

    type: PaginationType = "single_page"
    # page_number
    page_param: str = "page"
    start_page: int = Field(1, ge=0)
    page_size_param: str | None = "per_page"
    page_size: int | None = Field(None, gt=0)
    # offset
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = Field(100, gt=0)
    start_offset: int = Field(0, ge=0)
    # cursor
    cursor_path: str | None = "next_cursor"
    cursor_header: str | None = None
    cursor_param: str = "cursor"
    # next_url
    next_url_path: str = "next"
    # stop conditions
    total_path: str | None = None
    total_pages_path: str | None = None
    has_more_path: str | None = None
    max_pages: int | None = Field(None, gt=0)
    stop_on_empty: bool = True

    @model_validator(mode="before")
    @classmethod
    def _alias_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("type"), str):
            kind = data["type"].strip().lower().replace("-", "_")
            data = {**data, "type": _PAGINATION_ALIASES.get(kind, kind)}
        return data


# -- auth -------------------------------------------------------------------------------------
class ApiKeyAuthConfig(_Config):
    """An API key sent as a header (default ``X-API-Key``) or a query parameter."""

    type: Literal["api_key"] = "api_key"
    name: str = "X-API-Key"
    value: SecretStr
    location: Literal["header", "query"] = "header"


class BearerAuthConfig(_Config):
    """``Authorization: Bearer <token>`` with a fixed token."""

    type: Literal["bearer"] = "bearer"
    token: SecretStr


class BasicAuthConfig(_Config):
    """HTTP basic auth."""

    type: Literal["basic"] = "basic"
    username: str
    password: SecretStr


class OAuth2ClientCredentialsConfig(_Config):
    """OAuth2 client credentials; the token is shared by every instance through the core's
    ``ApiTokenService`` (one refresh across instances, stored encrypted) under ``operation``."""

    type: Literal["oauth2_client_credentials"] = "oauth2_client_credentials"
    token_url: str
    client_id: str
    client_secret: SecretStr
    scope: str | None = None
    operation: str | None = None
    timeout: float = Field(5.0, gt=0)


AuthConfig = Annotated[
    ApiKeyAuthConfig | BearerAuthConfig | BasicAuthConfig | OAuth2ClientCredentialsConfig,
    Field(discriminator="type"),
]


# -- limits, retries, batches -----------------------------------------------------------------
class RetryConfig(_Config):
    """Retries of one request: on ``retry_statuses``, timeouts and connection errors, with
    exponential backoff (``initial_backoff`` × ``multiplier``^n, capped at ``max_backoff``)
    plus random jitter. A ``Retry-After`` up to ``max_retry_after`` is honoured instead."""

    max_attempts: int = Field(5, ge=1)
    initial_backoff: float = Field(0.5, ge=0)
    max_backoff: float = Field(30.0, ge=0)
    multiplier: float = Field(2.0, ge=1)
    jitter: float = Field(0.5, ge=0)
    retry_statuses: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})
    respect_retry_after: bool = True
    max_retry_after: float = Field(300.0, ge=0)


class RateLimitConfig(_Config):
    """Request budget shared by every task of one extraction: a token bucket refilled at
    ``requests_per_second / window_size`` per second holding at most ``burst`` tokens (so no
    burst above the rate at window edges), and at most ``max_concurrent`` requests in flight."""

    requests_per_second: float | None = Field(None, gt=0)
    max_concurrent: int = Field(10, ge=1)
    window_size: float = Field(1.0, gt=0)
    burst: int = Field(1, ge=1)
    fair_sharing: bool = True


class BatchConfig(_Config):
    """API-level batches: ``batch_size`` inputs per batch, ``max_concurrent_batches`` at once."""

    batch_size: int = Field(100, ge=1)
    max_concurrent_batches: int = Field(10, ge=1)
    retry_failed_batches: bool = True


class OutputBatchConfig(_Config):
    """Output batches: flushed at ``batch_size`` records, ``max_batch_bytes`` bytes or
    ``flush_interval`` seconds, whichever first."""

    batch_size: int = Field(1000, ge=1)
    flush_interval: float = Field(60.0, gt=0)
    max_batch_bytes: int = Field(5_000_000, ge=1)


class WatermarkConfig(_Config):
    """Incremental loads: the high-water mark of ``timestamp_field`` (alias ``field``).

    ``initial_value`` is the start when nothing is stored, ``end_value`` an optional upper bound;
    ``lookback`` re-reads that much before the stored mark; a record older than the mark minus
    ``max_lateness`` is late. ``param`` (optional) is the query parameter the mark is sent as.
    """

    enabled: bool = True
    timestamp_field: str = Field(alias="field")
    key: str | None = None
    param: str | None = None
    initial_value: Any = None
    end_value: Any = None
    lookback: Duration = timedelta(0)
    max_lateness: Duration = timedelta(hours=1)
    allowed_lateness: Duration = timedelta(minutes=30)
    watermark_interval: Duration = timedelta(minutes=5)
    window_size: Duration | None = None


# -- extractor --------------------------------------------------------------------------------
class ExtractorConfig(_Config):
    """One HTTP endpoint to extract.

    ``path`` and the values of ``params`` / ``headers`` are templates: ``{name}`` is replaced by
    the input's ``name`` (``/users/{user_id}/repos``). ``data_selector`` finds the records in a
    page: ``data.items``, ``$.data.items[*]``, ``results[0].rows``; without it the body itself
    (a list) or the first list-valued field of an object is used. ``timeout`` bounds each
    request (``connect_timeout`` its connection). ``http2``: HTTP/2 when the server offers it
    (TLS ALPN). ``verify``: TLS verification — ``False``, or the path of a CA bundle.
    """

    name: str | None = None
    base_url: str
    path: str = ""
    endpoints: dict[str, str] = Field(default_factory=dict)
    method: Literal["GET", "POST"] = "GET"
    params: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: dict[str, Any] | None = None
    data_selector: str | None = None
    pagination: PaginationConfig = Field(default_factory=PaginationConfig)
    auth: AuthConfig | None = None
    retry: RetryConfig = Field(default_factory=RetryConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    watermark: WatermarkConfig | None = None
    timeout: float = Field(30.0, gt=0)
    connect_timeout: float = Field(10.0, gt=0)
    http2: bool = True
    verify: bool | str = True
    stream_buffer_pages: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _check_url(self) -> ExtractorConfig:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return self


C = TypeVar("C", bound=BaseModel)


def parse_config(model: type[C], data: Any, *, where: str = "") -> C:
    """``data`` (a mapping or an instance) validated as ``model``; an error names key and value."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _config_error(model, exc, where) from None


def _config_error(model: type[BaseModel], exc: ValidationError, where: str) -> ExtractConfigError:
    lines = []
    first_key, first_value = "", None
    for i, err in enumerate(exc.errors(include_url=False)):
        loc = [str(p) for p in err["loc"] if not _is_union_tag(p)]
        key = ".".join(([where] if where else []) + loc) or (where or model.__name__)
        value = err.get("input")
        shown = "<secret>" if _looks_secret(key) else _short(value)
        if err["type"] == "missing":
            lines.append(f"{key}: required and missing")
        elif err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (value {shown})")
        else:
            lines.append(f"{key}: {err['msg']} (got {shown})")
        if i == 0:
            first_key, first_value = key, None if _looks_secret(key) else value
    title = f"invalid {model.__name__}"
    return ExtractConfigError(f"{title}: " + "; ".join(lines), key=first_key, value=first_value)


def _is_union_tag(part: object) -> bool:
    # A discriminated union adds the tag ("bearer") to the error location.
    return isinstance(part, str) and part in {
        "api_key",
        "bearer",
        "basic",
        "oauth2_client_credentials",
        "function-after[_check_url()]",
    }


def _looks_secret(key: str) -> bool:
    last = key.rsplit(".", 1)[-1].lower()
    return any(s in last for s in ("secret", "password", "token", "value")) and "url" not in last


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "ApiKeyAuthConfig",
    "AuthConfig",
    "BasicAuthConfig",
    "BatchConfig",
    "BearerAuthConfig",
    "Duration",
    "ExtractorConfig",
    "OAuth2ClientCredentialsConfig",
    "OutputBatchConfig",
    "PaginationConfig",
    "RateLimitConfig",
    "RetryConfig",
    "WatermarkConfig",
    "parse_config",
    "parse_duration",
]
