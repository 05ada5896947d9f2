"""Typed configs of the extraction engine (extractors, pagination, auth, limits, batches).

Every model forbids unknown keys, so a typo is an error, not a silently ignored setting.
:func:`parse_config` turns pydantic's errors into one :class:`ExtractConfigError` that names
the bad key (dotted path) and the value given. Durations accept ``"90s"``, ``"5m"``, ``"1h"``,
``"1d"``, ``"1h30m"``, a number of seconds or a ``timedelta``. Secrets are ``SecretStr``:
they print as ``**********`` in reprs, logs and errors.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
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


def parse_config(
    model: type[C],
    data: Any,
    *,
    where: str = "",
    source: str = "",
    line_of: Callable[[list[Any]], int | None] | None = None,
) -> C:
    """``data`` (a mapping or an instance) validated as ``model``; an error names key and value.

    A config read from a file passes ``source`` (the file, or what the text was) and
    ``line_of`` (a location in ``model`` → its line in the file), so a nested error names its
    file and line as a top-level one does."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _config_error(model, exc, where, source, line_of) from None


def _config_error(
    model: type[BaseModel],
    exc: ValidationError,
    where: str,
    source: str = "",
    line_of: Callable[[list[Any]], int | None] | None = None,
) -> ExtractConfigError:
    lines = []
    first_key, first_value = "", None
    for i, err in enumerate(exc.errors(include_url=False)):
        raw_loc = [p for p in err["loc"] if not _is_union_tag(p)]
        loc = [str(p) for p in raw_loc]
        key = ".".join(([where] if where else []) + loc) or (where or model.__name__)
        line_no = line_of(raw_loc) if line_of is not None else None
        at = f" (line {line_no})" if line_no else ""
        value = err.get("input")
        shown = "<secret>" if _looks_secret(key) else _short(value)
        if err["type"] == "missing":
            lines.append(f"{key}{at}: required and missing")
        elif err["type"] == "extra_forbidden":
            # Never the value: a misspelled secret key ("tokn") must not print the secret.
            hint = _did_you_mean(model, loc)
            also = f" (did you mean {hint!r}?)" if hint else ""
            lines.append(f"{key}{at}: unknown key{also}")
        else:
            lines.append(f"{key}{at}: {err['msg']} (got {shown})")
        if i == 0:
            hidden = _looks_secret(key) or err["type"] == "extra_forbidden"
            first_key, first_value = key, None if hidden else value
    title = f"{source}: invalid {model.__name__}" if source else f"invalid {model.__name__}"
    return ExtractConfigError(f"{title}: " + "; ".join(lines), key=first_key, value=first_value)


def _did_you_mean(model: type[BaseModel], loc: list[str]) -> str | None:
    """The field name closest to the unknown key at ``loc`` among its siblings, if any."""
    import difflib

    candidates: list[type[BaseModel]] = [model]
    for part in loc[:-1]:
        found: list[type[BaseModel]] = []
        for m in candidates:
            field = m.model_fields.get(part)
            if field is not None:
                found.extend(_models_in(field.annotation))
        if not found and not part.isdigit():
            return None
        candidates = found or candidates
    names = {n for m in candidates for n in m.model_fields}
    close = difflib.get_close_matches(loc[-1], sorted(names), n=1, cutoff=0.6) if loc else []
    return close[0] if close else None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    # The models a field can hold: X, X | None, list[X], dict[str, X], Annotated[...], unions.
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


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


# -- windows and parallel fetching (issue 16) -------------------------------------------------
def _positive_duration(value: Any) -> timedelta:
    duration = parse_duration(value)
    if duration <= timedelta(0):
        raise ValueError("must be a positive duration such as '30m', '1h' or '7d'")
    return duration


#: A duration that must be above zero (window sizes, session gaps).
PositiveDuration = Annotated[timedelta, BeforeValidator(_positive_duration)]

WindowType = Literal["fixed", "sliding", "session", "global"]


class WindowConfig(_Config):
    """How a time range is cut into windows (see ``apix_core.extract.windows``).

    ``fixed``: back-to-back windows of ``window_size``, aligned on multiples of the size from
    the Unix epoch shifted by ``window_offset``. ``sliding``: windows of ``window_size`` that
    start every ``window_size - window_overlap``. ``session``: groups fetched records whose
    ``timestamp_field`` values are at most ``session_gap`` apart. ``global``: one window.
    ``start`` / ``end`` bound the range (``end`` defaults to now); with a watermark the next run
    starts at the watermark minus ``lookback``. A window is sent as ``start_param`` /
    ``end_param`` (ISO 8601 or Unix seconds, ``time_format``); ``end`` is exclusive.
    """

    window_type: WindowType = "fixed"
    window_size: PositiveDuration | None = None
    window_offset: Duration = timedelta(0)
    window_overlap: Duration = timedelta(0)
    session_gap: PositiveDuration | None = None
    timestamp_field: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    lookback: Duration = timedelta(0)
    start_param: str = "start"
    end_param: str = "end"
    time_format: Literal["iso", "epoch"] = "iso"

    @model_validator(mode="after")
    def _check_kind(self) -> WindowConfig:
        kind = self.window_type
        if kind in ("fixed", "sliding") and self.window_size is None:
            raise ValueError(f"window_type {kind!r} needs window_size (e.g. '1h')")
        if kind == "sliding":
            assert self.window_size is not None
            if not timedelta(0) < self.window_overlap < self.window_size:
                raise ValueError(
                    "sliding windows need 0 < window_overlap < window_size "
                    f"(got overlap {self.window_overlap}, size {self.window_size})"
                )
        elif self.window_overlap:
            raise ValueError(f"window_overlap applies to sliding windows, not {kind!r}")
        if kind == "session" and (self.session_gap is None or not self.timestamp_field):
            raise ValueError("session windows need session_gap (e.g. '30m') and timestamp_field")
        if self.start and self.end and _aware(self.end) <= _aware(self.start):
            raise ValueError("end must be after start")
        return self


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


ParallelStrategy = Literal["time_windows", "known_pages", "calculated_offsets"]


class ParallelConfig(_Config):
    """Fetch the tasks of one endpoint in parallel (see ``apix_core.extract.parallel``).

    ``strategy``: ``time_windows`` (one task per window of ``window``, each paginated),
    ``known_pages`` (pages 1..N of page-number pagination; N from ``total_pages`` or from the
    first page's ``pagination.total_pages_path`` / ``total_path``), ``calculated_offsets`` (a
    count request first — ``count_params`` added, the count at ``count_path`` — then one task
    per ``pagination.limit`` offset). ``speculative_pages`` (known_pages without
    ``total_pages``): that many pages after the first are requested together with it, before
    the count is known; those past the end are cancelled or dropped. Every task shares ONE
    budget: at most ``max_concurrency`` requests in flight and the extractor's
    ``rate_limit``. A failed task is retried alone up to ``max_task_attempts`` times; then
    ``on_error`` ``fail`` stops the extraction and ``continue`` reports it and goes on. Output
    keeps task order when ``ordered``.
    """

    strategy: ParallelStrategy
    max_concurrency: int = Field(16, ge=1)
    total_pages: int | None = Field(None, ge=0)
    speculative_pages: int = Field(0, ge=0)
    count_path: str | None = None
    count_params: dict[str, Any] = Field(default_factory=dict)
    window: WindowConfig | None = None
    max_task_attempts: int = Field(2, ge=1)
    on_error: Literal["fail", "continue"] = "fail"
    ordered: bool = True

    @model_validator(mode="before")
    @classmethod
    def _lower_strategy(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("strategy"), str):
            data = {**data, "strategy": data["strategy"].strip().lower().replace("-", "_")}
        return data

    @model_validator(mode="after")
    def _check_window(self) -> ParallelConfig:
        if self.strategy == "time_windows":
            if self.window is None:
                raise ValueError("strategy time_windows needs a window (window_type, window_size)")
            if self.window.window_type == "session":
                raise ValueError(
                    "session windows group records after fetching; for time_windows use "
                    "window_type fixed, sliding or global"
                )
        return self


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
    "ParallelConfig",
    "PositiveDuration",
    "RateLimitConfig",
    "RetryConfig",
    "WatermarkConfig",
    "WindowConfig",
    "parse_config",
    "parse_duration",
]
