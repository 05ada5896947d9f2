"""What every ``apix`` command shares: console, error handling, options, transport and store.

Kept cheap to import (typer and apix's light modules only): ``apix --help`` imports it. rich,
SQLAlchemy and the store are imported inside the functions that need them.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import MarkupMode, TyperArgument, TyperCommand, TyperGroup, TyperOption

from apix_core.config import Settings
from apix_core.constants import TENANT_ID_ENV
from apix_core.errors import (
    ApixError,
    ConfigurationError,
    MalformedMessageError,
    UnsupportedOperationError,
)

if TYPE_CHECKING:
    from rich.console import Console
    from typer._click import Context, Parameter

    from apix_core.store.database import Database
    from apix_core.store.repositories import Store
    from apix_core.transport.base import DeadLetterAdmin, Producer, QueueAdmin

T = TypeVar("T")

#: Exit code of every apix error (and of usage errors, as click does).
EXIT_ERROR = 2

#: Help is plain click text, not rich panels: typer's rich help imports rich, markdown-it and
#: pygments-style machinery, which nearly doubled the time of ``apix --help`` (benchmarks/
#: bench_cli_start.py). rich still draws every command's output. "rich" brings the panels back.
HELP_MARKUP: MarkupMode = None


# -- help display ----------------------------------------------------------------------------
def _tidy_params(params: list[Parameter]) -> None:
    """Flags show no ``<bool>`` placeholder; arguments are named in capitals (``APP``)."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""  # typer's rich help otherwise prints <bool> after every flag
        elif isinstance(param, TyperArgument) and param.metavar is None and param.name:
            param.metavar = param.name.upper()


def _usage_pieces(pieces: list[str]) -> list[str]:
    # typer writes a required argument as {name}; the usual form is a bare NAME.
    return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


def _tidy_help_option(option: TyperOption | None) -> TyperOption | None:
    if option is not None:
        _tidy_params([option])
    return option


class ApixCommand(TyperCommand):
    """A command whose help has no ``<bool>`` on flags and no ``{name}`` in its usage line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _tidy_params(self.params)

    def get_help_option(self, ctx: Context) -> TyperOption | None:
        return _tidy_help_option(super().get_help_option(ctx))

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        return _usage_pieces(super().collect_usage_pieces(ctx))


class ApixGroup(TyperGroup):
    """A command group with the same help display as :class:`ApixCommand`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _tidy_params(self.params)

    def get_help_option(self, ctx: Context) -> TyperOption | None:
        return _tidy_help_option(super().get_help_option(ctx))

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        return _usage_pieces(super().collect_usage_pieces(ctx))


def command_group(help: str) -> typer.Typer:
    """A sub-command group (``apix entities``, ``apix dlq``...): help when called bare."""
    return typer.Typer(cls=ApixGroup, help=help, no_args_is_help=True, rich_markup_mode=HELP_MARKUP)


# -- options shared by several commands ------------------------------------------------------
AppTarget = Annotated[
    str,
    typer.Argument(metavar="APP", help="Python file defining the App: path/to/app.py[:attr]"),
]
LogLevel = Annotated[
    str | None,
    typer.Option("--log-level", help="apix log level (default: APIX_LOG_LEVEL or WARNING)."),
]
TenantOpt = Annotated[
    str | None, typer.Option("--tenant", "-t", help=f"Tenant (default: {TENANT_ID_ENV}).")
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON document on stdout (shapes: docs/cli.md)."),
]
AppOpt = Annotated[
    str | None,
    typer.Option(
        "--app", help="Use this app's transport (default: local queues on APIX_QUEUE_URL)."
    ),
]
TransportOpt = Annotated[
    str | None,
    typer.Option(
        "--transport",
        metavar="URL",
        help="Queue transport: a URL (sqs://?prefix=dev-) or a scheme (sqs, azure-queue); "
        "sets APIX_QUEUE_URL for this command.",
    ),
]


# -- output and errors -----------------------------------------------------------------------
def console(stderr: bool = False) -> Console:
    """A rich console on the current stdout (or stderr)."""
    from rich.console import Console

    # Resolved per call so the console writes to the current stdout (CliRunner swaps it); wide
    # when not a terminal so ids and error codes are never wrapped in logs and pipes.
    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal:
        out = Console(stderr=stderr, highlight=False, width=max(out.width, 160))
    return out


def print_json(document: Any) -> None:
    """``document`` as one JSON document on stdout (datetimes as ISO 8601)."""

    def default(value: Any) -> Any:
        if isinstance(value, datetime):
            return iso_time(value)
        return str(value)

    typer.echo(json.dumps(document, indent=2, default=default))


def iso_time(value: datetime | float | None) -> str | None:
    """A timestamp (datetime or epoch seconds) as ISO 8601 in UTC, or None."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def body_json(body: str) -> Any:
    """A message body as JSON when it parses, else the text."""
    try:
        return json.loads(body)
    except ValueError:
        return body


def escape(text: str) -> str:
    """``text`` with rich markup escaped (ids, queue names and messages are data, not markup)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` in red on stderr; the caller raises the returned exit (code 2)."""
    # soft_wrap: one line, whatever the width (scripts grep it; terminals wrap it anyway).
    console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(EXIT_ERROR)


def handle_errors(func: Callable[..., T]) -> Callable[..., T]:
    """apix errors become a red one-line message and exit code 2, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return func(*args, **kwargs)
        except ApixError as exc:
            raise fail(str(exc)) from None
        except Exception as exc:
            message = user_error_message(exc)
            if message is None:
                raise
            raise fail(message) from None

    return wrapper


def user_error_message(exc: BaseException) -> str | None:
    """One line for an error the user caused (bad input, missing extra, database setup), or
    None for a bug, whose traceback must show.

    The typed errors of the store (``apix_core.store.database``) cover the usual paths; this
    catches what escapes them: pydantic validation of a value the user typed, a driver that is
    not installed, PostgreSQL's "database/role does not exist"."""
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "asyncpg":
        return "PostgreSQL needs the asyncpg driver: pip install 'apix-core[postgres]'"
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(exc, pydantic.ValidationError):
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        return f"invalid input: {problems}"
    if "sqlalchemy" in sys.modules:
        from apix_core.store.database import explain_database_error

        found = explain_database_error(exc)
        if found is not None:
            return str(found)
    return None


def arun(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on apix's event loop (uvloop when installed)."""
    from apix_core.runtime.loop import run

    return run(coro)


class _StderrProxy:
    """Log to whatever ``sys.stderr`` is now, so rich's Live can redirect log lines above it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str | None) -> None:
    """Text logs on stderr at ``level``, else ``APIX_LOG_LEVEL``, else WARNING."""
    import os

    from apix_core.constants import LOG_FORMAT_ENV, LOG_LEVEL_ENV
    from apix_core.observability import configure_logging as configure

    # A human runs the CLI: text logs and WARNING unless the environment says otherwise.
    configure(
        level=(level or os.environ.get(LOG_LEVEL_ENV) or "WARNING").upper(),
        fmt=os.environ.get(LOG_FORMAT_ENV) or "text",
        stream=_StderrProxy(),
    )


# -- inputs ----------------------------------------------------------------------------------
def transport_url(given: str) -> str:
    """``--transport``: a transport URL as given, a bare scheme (``sqs``) as ``sqs://``."""
    text = given.strip()
    if not text:
        raise ConfigurationError("--transport is empty: give a URL (sqs://?prefix=dev-) or sqs")
    return text if "://" in text else f"{text.rstrip(':')}://"


def use_transport(given: str | None) -> None:
    """Apply ``--transport``: check its scheme has a transport (a clear error, exit code 2,
    when not), then set ``APIX_QUEUE_URL`` for this process, before the app is loaded or the
    transport opened, so ``Settings`` reads it (an app's own settings included)."""
    if given is None:
        return
    import os

    from apix_core.constants import QUEUE_URL_ENV
    from apix_core.transport.registry import factory_for, scheme_of

    url = transport_url(given)
    factory_for(scheme_of(url))
    os.environ[QUEUE_URL_ENV] = url


def transport_option(given: str | None) -> str:
    """`` --transport VALUE`` to repeat in a command apix suggests (its password masked), or
    ``""`` when ``--transport`` was not given (the environment still applies)."""
    if given is None:
        return ""
    import shlex

    return f" --transport {shlex.quote(masked_url(given.strip()))}"


def masked_url(url: str) -> str:
    """``url`` with its password (if any) as ``***``, fit to print."""
    from urllib.parse import urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return url
    return url.replace(f":{password}@", ":***@", 1) if password else url


def resolve_tenant(given: str | None) -> str:
    """``--tenant``, else ``APIX_TENANT_ID``, else a :class:`ConfigurationError`."""
    if given:
        from apix_core.tenancy import TENANT_ID_RULE, is_valid_tenant_id

        if not is_valid_tenant_id(given):
            raise ConfigurationError(f"tenant id {given!r} (--tenant) must be {TENANT_ID_RULE}")
        return given
    found = Settings.from_env().tenant_id
    if not found:
        raise ConfigurationError(f"no tenant: pass --tenant or set {TENANT_ID_ENV}")
    return found


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``24h``, ``7d``, ``2w`` → seconds."""
    match = _DURATION.match(text.lower())
    if not match:
        raise ConfigurationError(f"{text!r} is not a duration (examples: 30s, 15m, 24h, 7d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ConfigurationError(f"duration {text!r} must be positive")
    return seconds


def json_object(text: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object, else a :class:`MalformedMessageError`."""
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise MalformedMessageError(f"payload is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedMessageError(
            f"payload must be a JSON object ({{...}}), not {type(obj).__name__}"
        )
    return obj


def fmt_time(value: datetime | None) -> str:
    """A UTC timestamp to the second, or ``-``."""
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


# -- store and transport ---------------------------------------------------------------------
async def open_database(url: str, settings: Settings) -> Database:
    """A database with the schema in place (migrated when auto-migrate is on, else checked)."""
    from apix_core.store.database import Database

    db = Database(url, timeout=settings.db_timeout)
    try:
        if settings.auto_migrate:
            await db.upgrade()
        elif await db.current_revision() is None:
            raise ConfigurationError(
                f"the database {db.safe_url} has no apix schema: run `apix db upgrade`"
            )
    except BaseException:
        await db.dispose()
        raise
    return db


@asynccontextmanager
async def store() -> AsyncIterator[Store]:
    """The metadata store on ``APIX_DATABASE_URL``."""
    from apix_core.store.repositories import Store

    settings = Settings.from_env()
    db = await open_database(settings.database_url, settings)
    try:
        yield Store(db)
    finally:
        await db.dispose()


async def open_transport(settings: Settings) -> Producer:
    """The transport ``APIX_QUEUE_URL`` names (``apix_core.transport.registry``), as
    ``App.start`` builds it. The caller closes it (``await transport.close()``)."""
    from apix_core.transport.registry import open_transport as open_by_url

    return await open_by_url(settings.queue_url, settings=settings)


def dead_letter_admin(transport: Producer) -> DeadLetterAdmin:
    """``transport`` as a dead-letter admin, or a clear error for one that has no such thing."""
    from apix_core.transport.base import DeadLetterAdmin

    if not isinstance(transport, DeadLetterAdmin):
        raise UnsupportedOperationError(
            f"the {transport.name!r} transport cannot list or replay dead letters"
        )
    return transport


def queue_admin(transport: Producer) -> QueueAdmin:
    """``transport`` as a queue admin (depths, queue names), or a clear error."""
    from apix_core.transport.base import QueueAdmin

    if not isinstance(transport, QueueAdmin):
        raise UnsupportedOperationError(
            f"the {transport.name!r} transport cannot list its queues or their depth"
        )
    return transport


@asynccontextmanager
async def transport(app_path: str | None) -> AsyncIterator[Producer]:
    """The app's transport (``--app``), else :func:`open_transport` on the environment."""
    if app_path:
        from apix_core.cli.loader import load_app

        app = load_app(app_path)
        await app.start()
        try:
            assert app.transport is not None
            yield app.transport
        finally:
            await app.close()
        return
    opened = await open_transport(Settings.from_env())
    try:
        yield opened
    finally:
        await opened.close()
