"""``apix deploy azure``: the ``apix.cli`` plugin (entry point ``deploy-azure``).

Several plugins (``apix deploy aws``, ``apix deploy azure``) share one ``deploy`` group: each
``register(app)`` reuses the group already registered on ``app`` under that name, or adds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from apix_core.cli._common import AppTarget, command_group, handle_errors

DEPLOY_GROUP = "deploy"
DEPLOY_HELP = "Generate deployment projects (Azure Functions, AWS Lambda) from an app."


def deploy_group(app: typer.Typer) -> typer.Typer:
    """The ``deploy`` group of ``app``: the one a plugin registered already, or a new one."""
    for info in app.registered_groups:
        if info.name == DEPLOY_GROUP and info.typer_instance is not None:
            return info.typer_instance
    group = command_group(DEPLOY_HELP)
    app.add_typer(group, name=DEPLOY_GROUP)
    return group


def register(app: typer.Typer) -> None:
    """Add ``azure`` to the ``deploy`` group of ``app``."""
    deploy_group(app).command("azure")(azure)


@handle_errors
def azure(
    target: AppTarget,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the project into.")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Per-customer TOML (tenant, database_url, queue_prefix, [host], [settings]).",
        ),
    ] = None,
    module: Annotated[
        str | None,
        typer.Option(
            "--module",
            help="How the deployed package imports the app module (default: its path "
            "relative to --out, or its file name).",
        ),
    ] = None,
    trigger: Annotated[
        str | None,
        typer.Option("--trigger", help="storage or servicebus (default: APIX_AZURE_TRIGGER)."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="host.json queues.batchSize (16).")
    ] = None,
    visibility_timeout: Annotated[
        str | None,
        typer.Option("--visibility-timeout", help="host.json queues.visibilityTimeout."),
    ] = None,
    max_dequeue_count: Annotated[
        int | None,
        typer.Option(
            "--max-dequeue-count",
            help="host.json queues.maxDequeueCount (default: the largest max_attempts).",
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="APIX_DATABASE_URL (PostgreSQL adds [postgres])."),
    ] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="APIX_TENANT_ID.")] = None,
    queue_url: Annotated[str | None, typer.Option("--queue-url", help="APIX_QUEUE_URL.")] = None,
    servicebus_settlement: Annotated[
        str | None,
        typer.Option(
            "--servicebus-settlement",
            help="host (default) or apix: who settles Service Bus messages.",
        ),
    ] = None,
    queue_prefix: Annotated[
        str | None,
        typer.Option("--queue-prefix", help="APIX_AZURE_QUEUE_PREFIX: before every queue name."),
    ] = None,
) -> None:
    """Generate an Azure Functions project (function_app.py, host.json, requirements.txt,
    local.settings.json.example) for APP into --out."""
    import os
    from dataclasses import replace

    from apix_azure.deploy.generate import DeployOptions, generate, load_customer_config
    from apix_azure.functions import TRIGGER_ENV

    options = DeployOptions(trigger=os.environ.get(TRIGGER_ENV, "").strip().lower() or "storage")
    if config is not None:
        options = load_customer_config(config, options)
    given: dict[str, Any] = {
        "module": module,
        "trigger": trigger,
        "batch_size": batch_size,
        "visibility_timeout": visibility_timeout,
        "max_dequeue_count": max_dequeue_count,
        "database_url": database_url,
        "tenant_id": tenant,
        "queue_url": queue_url,
        "queue_prefix": queue_prefix,
        "servicebus_settlement": servicebus_settlement,
    }
    options = replace(options, **{k: v for k, v in given.items() if v is not None})
    for path in generate(target, out, options):
        typer.echo(str(path))
