"""``apix deploy aws``: the ``apix.cli`` plugin that writes an AWS SAM template for an app.

The entry point's value is :func:`register`; it adds the ``aws`` command to a ``deploy``
group, finding the group if another ``register`` already created it on the same Typer.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from apix_aws.deploy.sam import (
    HANDLER_MODULE,
    DeployError,
    DeploySettings,
    dump_template,
    handler_module,
    sam_template,
)
from apix_core.cli._common import handle_errors

#: Keys of ``--config customer.toml`` → :class:`DeploySettings` fields.
CONFIG_KEYS = {
    "tenant": "tenant_id",
    "queue_prefix": "name_prefix",
    "memory": "memory",
    "timeout": "timeout",
    "reserved_concurrency": "reserved_concurrency",
    "database_secret": "database_secret",
    "api": "api",
    "alarm_message_age": "message_age_alarm",
    "alarm_latency_ms": "latency_alarm_ms",
}


def read_config(path: Path) -> dict[str, Any]:
    """Deployment settings of one customer from a TOML file (top level or an ``[aws]`` table)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeployError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DeployError(f"{path} is not valid TOML: {exc}") from None
    if isinstance(data.get("aws"), dict):
        data = data["aws"]
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise DeployError(
            f"{path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(CONFIG_KEYS)}"
        )
    types = {
        "memory": int,
        "timeout": int,
        "reserved_concurrency": int,
        "alarm_message_age": int,
        "alarm_latency_ms": int,
    }
    settings: dict[str, Any] = {}
    for key, value in data.items():
        expected = types.get(key, str)
        if not isinstance(value, expected) or isinstance(value, bool):
            kind = "an integer" if expected is int else "a string"
            raise DeployError(f"{path}: {key} must be {kind}, got {value!r}")
        settings[CONFIG_KEYS[key]] = value
    return settings


def _app_attribute(app: object, path: Path, attr: str | None) -> str:
    if attr:
        return attr
    target = str(path.resolve())
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == target:
            for name, value in vars(module).items():
                if value is app:
                    return name
    raise DeployError(f"cannot find the App's name in {path}; pass it as {path}:name")


@handle_errors
def aws(
    target: Annotated[str, typer.Argument(help="The app: path/to/app.py[:attribute].")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Template file to write.")] = Path(
        "template.yaml"
    ),
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Per-customer TOML: tenant, queue_prefix, memory, ..."),
    ] = None,
    prefix: Annotated[str | None, typer.Option(help="SQS queue name prefix.")] = None,
    memory: Annotated[int | None, typer.Option(help="Function memory, MB.")] = None,
    timeout: Annotated[int | None, typer.Option(help="Function timeout, seconds.")] = None,
    tenant: Annotated[str | None, typer.Option(help="APIX_TENANT_ID of the functions.")] = None,
    reserved_concurrency: Annotated[
        int | None, typer.Option(help="Reserved concurrency of every function.")
    ] = None,
    database_secret: Annotated[
        str | None,
        typer.Option(help="Secrets Manager secret holding the database URL (else a parameter)."),
    ] = None,
    api: Annotated[
        str | None,
        typer.Option(help="API Gateway kind of the routes: http (HTTP API) or rest (REST API)."),
    ] = None,
) -> None:
    """Write an AWS SAM template (and the handler module next to the app) for an app."""
    from apix_core.cli.loader import load_app, split_target

    options: dict[str, Any] = read_config(config) if config else {}
    given = {
        "name_prefix": prefix,
        "memory": memory,
        "timeout": timeout,
        "tenant_id": tenant,
        "reserved_concurrency": reserved_concurrency,
        "database_secret": database_secret,
        "api": api,
    }
    options.update({k: v for k, v in given.items() if v is not None})
    settings = DeploySettings(**options)
    app = load_app(target)
    path, attr = split_target(target)
    template = sam_template(app, settings)
    code_dir = path.resolve().parent
    out_dir = out.resolve().parent
    template["Globals"]["Function"]["CodeUri"] = Path(os.path.relpath(code_dir, out_dir)).as_posix()
    handlers = code_dir / f"{HANDLER_MODULE}.py"
    handlers.write_text(
        handler_module(app, path.stem, _app_attribute(app, path, attr)), encoding="utf-8"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump_template(template), encoding="utf-8")
    functions = sum(1 for r in template["Resources"].values() if r["Type"].endswith("::Function"))
    typer.echo(f"wrote {out} ({functions} functions) and {handlers}")


def register(app: typer.Typer) -> None:
    """Add ``deploy aws`` to ``app``, reusing its ``deploy`` group if one is registered."""
    for info in app.registered_groups:
        if info.name == "deploy" and info.typer_instance is not None:
            group = info.typer_instance
            break
    else:
        group = typer.Typer(name="deploy", help="Generate deployment artifacts for an app.")
        app.add_typer(group, name="deploy")
    group.command("aws")(aws)
