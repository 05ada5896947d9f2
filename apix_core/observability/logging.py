"""Structured JSON logs with tenant, correlation id, message id, operation and duration.

Fields come from a context variable that the handler and ``@operation`` fill, so every log line
emitted inside a processor carries them. Values of secret-looking keys and bearer tokens are
redacted before a line is written.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from apix_core.constants import LOG_FORMAT_ENV, LOG_LEVEL_ENV

_log_fields: ContextVar[Mapping[str, Any]] = ContextVar(
    "apix_log_fields", default=MappingProxyType({})
)

_SECRET_KEY = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|authorization|credential|private[_-]?key|cookie)",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"
    r"|\b(eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+)"
    r"|((?:access_token|refresh_token|id_token|client_secret|api_?key|password|secret|token)=)[^&\s\"']+"
)
# A quoted value after a secret-looking key, as in JSON text or a repr'd dict:
# ``"password": "..."``, ``'api_key': '...'``, ``client_secret="..."``.
_SECRET_PAIR = re.compile(
    r"""(?i)(["']?[\w-]*(?:pass(?:word)?|secret|token|api[_-]?key|authorization|credential"""
    r"""|private[_-]?key|cookie)[\w-]*["']?\s*[:=]\s*)(["'])(?:\\.|(?!\2).)*\2"""
)
REDACTED = "***"

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


def redact(value: Any, key: str | None = None) -> Any:
    """Replace secrets in a log value (recursively for dicts and lists)."""
    if key is not None and _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str):
        value = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}{m.group(2)}", value)
        return _SECRET_VALUE.sub(_redact_match, value)
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def _redacted_record(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of ``record`` whose ``%`` arguments are redacted (a dict arg keeps its keys)."""
    if not record.args:
        return record
    clone = copy.copy(record)
    args = record.args
    clone.args = redact(args) if isinstance(args, Mapping) else tuple(redact(a) for a in args)
    return clone


def _redact_match(match: re.Match[str]) -> str:
    if match.group(3):
        return match.group(3) + REDACTED
    if match.group(1):
        return f"{match.group(1)} {REDACTED}"
    return REDACTED


class log_context:  # used like a function: `with log_context(tenant_id=...)`
    """Add fields to every log line written inside the block.

    A class rather than ``@contextmanager``: it wraps every message, and a generator-based
    context manager costs several times more.
    """

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        self._token = _log_fields.set({**_log_fields.get(), **self._fields})

    def __exit__(self, *exc: object) -> None:
        _log_fields.reset(self._token)


#: The context variable behind :func:`push_log_fields` (the invoker sets it inline: two calls
#: less per message).
LOG_FIELDS = _log_fields


def push_log_fields(fields: dict[str, Any]) -> Token[Mapping[str, Any]]:
    """Add ``fields`` until :func:`pop_log_fields` (the handler's per-message fast form of
    :class:`log_context`; ``fields`` is taken over, not copied)."""
    base = _log_fields.get()
    if base:
        fields = {**base, **fields}
    return _log_fields.set(fields)


def pop_log_fields(token: Token[Mapping[str, Any]]) -> None:
    _log_fields.reset(token)


def current_log_fields() -> Mapping[str, Any]:
    return _log_fields.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per line; context fields, ``extra=`` fields and exceptions included."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(_redacted_record(record).getMessage()),
        }
        for key, value in _log_fields.get().items():
            if value is not None:
                entry[key] = redact(value, key)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = redact(value, key)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, separators=(",", ":"))


class _ContextTextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = redact(super().format(_redacted_record(record)))
        fields = {k: v for k, v in _log_fields.get().items() if v is not None}
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                fields[key] = value
        ctx = " ".join(f"{k}={redact(v, k)}" for k, v in fields.items())
        return f"{base} [{ctx}]" if ctx else str(base)


def get_logger(name: str = "apix") -> logging.Logger:
    """A logger under the ``apix`` hierarchy."""
    return logging.getLogger(name if name.startswith("apix") else f"apix.{name}")


def configure_logging(
    level: str | int | None = None, fmt: str | None = None, stream: Any = None
) -> logging.Handler:
    """Attach one handler to the ``apix`` logger (idempotent: replaces the previous one)."""
    logger = logging.getLogger("apix")
    level = level or os.environ.get(LOG_LEVEL_ENV, "INFO")
    fmt = fmt or os.environ.get(LOG_FORMAT_ENV, "json")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else _ContextTextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    handler._apix = True  # type: ignore[attr-defined]
    for old in [h for h in logger.handlers if getattr(h, "_apix", False)]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler
