"""Generate an Azure Functions project folder from an apix ``App``'s topology.

The app is imported (its processors register) but never started: no store, no transport.
Files written into the output folder:

- ``function_app.py``: imports the user's module and builds ``app = function_app(pipeline)``;
- ``host.json``: queue extension settings (``maxDequeueCount`` from the processors'
  ``max_attempts``), Service Bus settings when that is the trigger, the extension bundle, and
  the logging that reaches Application Insights;
- ``requirements.txt``: ``apix-core[azure]`` (``[azure,postgres]`` for a PostgreSQL URL);
- ``local.settings.json.example``: the app settings, with Azurite's development storage.

A per-customer TOML file (:func:`load_customer_config`) overrides tenant, database URL, queue
name prefix and host.json scaling, one output folder per customer.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apix_core.errors import ConfigurationError

if TYPE_CHECKING:
    from apix_core.app import App

#: Azurite's documented development storage (not a secret), as ``func start`` expects it.
AZURITE_CONNECTION = "UseDevelopmentStorage=true"
EXTENSION_BUNDLE = {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
TRIGGERS = ("storage", "servicebus")
SETTLEMENTS = ("host", "apix")
#: The Functions SDK-type bindings whose settlement client apix settles Service Bus through.
SERVICEBUS_SDK_TYPES = "azurefunctions-extensions-bindings-servicebus"
_TIMESPAN_HELP = "a TimeSpan like 00:00:30"


@dataclass(frozen=True)
class DeployOptions:
    """What the generated project looks like; every field has a CLI option or a TOML key."""

    module: str | None = None
    batch_size: int = 16
    visibility_timeout: str = "00:00:30"
    max_dequeue_count: int | None = None
    trigger: str = "storage"
    max_concurrent_calls: int = 16
    servicebus_settlement: str = "host"
    database_url: str | None = None
    tenant_id: str | None = None
    queue_url: str | None = None
    queue_prefix: str | None = None
    settings: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        if self.trigger not in TRIGGERS:
            raise ConfigurationError(f"trigger {self.trigger!r}: use 'storage' or 'servicebus'")
        if self.servicebus_settlement not in SETTLEMENTS:
            raise ConfigurationError(
                f"servicebus_settlement {self.servicebus_settlement!r}: use 'host' or 'apix'"
            )
        for name in ("batch_size", "max_concurrent_calls", "max_dequeue_count"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ConfigurationError(f"{name} must be a positive integer, not {value!r}")
        if self.batch_size > 32:
            raise ConfigurationError(f"batch_size {self.batch_size} exceeds Azure's maximum 32")
        if not _is_timespan(self.visibility_timeout):
            raise ConfigurationError(
                f"visibility_timeout {self.visibility_timeout!r}: expected {_TIMESPAN_HELP}"
            )
        if self.queue_prefix is not None:
            from apix_azure.transport._settings import queue_prefix

            queue_prefix(self.queue_prefix)
        if self.module is not None and not all(
            part.isidentifier() for part in self.module.split(".")
        ):
            raise ConfigurationError(f"module {self.module!r} is not a dotted Python module path")


def _is_timespan(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 3 and all(p.isdigit() and len(p) == 2 for p in parts)


# TOML keys of a customer file → DeployOptions fields ([host] table keys are host.json names).
_TOP_KEYS = {
    "tenant": "tenant_id",
    "tenant_id": "tenant_id",
    "database_url": "database_url",
    "queue_url": "queue_url",
    "queue_prefix": "queue_prefix",
    "trigger": "trigger",
    "servicebus_settlement": "servicebus_settlement",
    "module": "module",
}
_STR_FIELDS = {
    "tenant_id",
    "database_url",
    "queue_url",
    "queue_prefix",
    "trigger",
    "servicebus_settlement",
    "module",
    "visibility_timeout",
}
_HOST_KEYS = {
    "batchSize": "batch_size",
    "maxDequeueCount": "max_dequeue_count",
    "visibilityTimeout": "visibility_timeout",
    "maxConcurrentCalls": "max_concurrent_calls",
}


def load_customer_config(path: Path, base: DeployOptions | None = None) -> DeployOptions:
    """``base`` overridden by a customer's TOML file: ``tenant``, ``database_url``,
    ``queue_url``, ``queue_prefix``, ``trigger``, ``module``; a ``[host]`` table with host.json
    names (``batchSize``, ``maxDequeueCount``, ``visibilityTimeout``, ``maxConcurrentCalls``);
    a ``[settings]`` table of extra app settings (docs/azure.md, "Deploy")."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"no such deployment config: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TOP_KEYS:
            changes[_TOP_KEYS[key]] = value
        elif key == "host" and isinstance(value, dict):
            for host_key, host_value in value.items():
                if host_key not in _HOST_KEYS:
                    known = ", ".join(_HOST_KEYS)
                    raise ConfigurationError(f"{path}: [host] {host_key!r} is not one of {known}")
                changes[_HOST_KEYS[host_key]] = host_value
        elif key == "settings" and isinstance(value, dict):
            changes["settings"] = {str(k): str(v) for k, v in value.items()}
        else:
            known = ", ".join([*_TOP_KEYS, "[host]", "[settings]"])
            raise ConfigurationError(f"{path}: unknown key {key!r} (known: {known})")
    for name, value in changes.items():
        if name in _STR_FIELDS and not isinstance(value, str):
            raise ConfigurationError(f"{path}: {name} must be a string, not {value!r}")
    options = replace(base or DeployOptions(), **changes)
    options.check()
    return options


def max_dequeue_count(pipeline: App) -> int:
    """The largest ``max_attempts`` of the queue processors (the app's default for unset ones),
    so the host never poisons a message before apix has used up its attempts."""
    default = pipeline.settings.max_attempts
    counts = [spec.config.max_attempts or default for spec in pipeline.topology if spec.consumes]
    return max(counts, default=default)


def host_json(pipeline: App, options: DeployOptions) -> dict[str, Any]:
    extensions: dict[str, Any] = {
        "queues": {
            "maxDequeueCount": options.max_dequeue_count or max_dequeue_count(pipeline),
            "batchSize": options.batch_size,
            "messageEncoding": "base64",
            "visibilityTimeout": options.visibility_timeout,
        }
    }
    if options.trigger == "servicebus":
        extensions["serviceBus"] = {
            "prefetchCount": 0,
            # Host settlement: return completes, raise abandons. Under apix settlement each
            # trigger binding turns this off for its function (autoCompleteMessages: false).
            "autoCompleteMessages": not _apix_settles(options),
            "maxConcurrentCalls": options.max_concurrent_calls,
            "maxAutoLockRenewalDuration": "00:05:00",
        }
    return {
        "version": "2.0",
        "logging": host_logging(),
        "extensions": extensions,
        "extensionBundle": dict(EXTENSION_BUNDLE),
    }


def host_logging() -> dict[str, Any]:
    """host.json ``logging``: what reaches Application Insights (when the function app has an
    ``APPLICATIONINSIGHTS_CONNECTION_STRING``). apix's JSON log lines are the worker's
    ``Function`` category (table ``traces``); ``Host.Results`` feeds ``requests`` (one row per
    invocation) and ``Host.Aggregator`` the ``customMetrics`` of counts and durations. Sampling
    keeps every failed invocation and exception: a dead letter is never sampled away."""
    return {
        "logLevel": {
            "default": "Warning",
            "Function": "Information",
            "Host.Results": "Information",
            "Host.Aggregator": "Trace",
        },
        "applicationInsights": {
            "samplingSettings": {"isEnabled": True, "excludedTypes": "Request;Exception"}
        },
    }


def _apix_settles(options: DeployOptions) -> bool:
    return options.trigger == "servicebus" and options.servicebus_settlement == "apix"


def requirements(options: DeployOptions) -> str:
    url = (options.database_url or "").lower()
    extras = "azure,postgres" if url.startswith("postgres") else "azure"
    lines = [f"apix-core[{extras}]"]
    if _apix_settles(options):
        lines.append(SERVICEBUS_SDK_TYPES)
    return "".join(f"{line}\n" for line in lines)


def local_settings(pipeline: App, options: DeployOptions) -> dict[str, Any]:
    from apix_azure.functions import MAX_DEQUEUE_ENV, SERVICEBUS_SETTLEMENT_ENV, TRIGGER_ENV
    from apix_azure.transport._settings import QUEUE_PREFIX_ENV
    from apix_core.constants import DATABASE_URL_ENV, QUEUE_URL_ENV, TENANT_ID_ENV

    values: dict[str, str] = {
        "AzureWebJobsStorage": AZURITE_CONNECTION,
        "FUNCTIONS_WORKER_RUNTIME": "python",
        DATABASE_URL_ENV: options.database_url or "",
        TENANT_ID_ENV: options.tenant_id or pipeline.settings.tenant_id or "",
        QUEUE_URL_ENV: options.queue_url or "",
        TRIGGER_ENV: options.trigger,
        MAX_DEQUEUE_ENV: str(options.max_dequeue_count or max_dequeue_count(pipeline)),
    }
    if options.queue_prefix:
        values[QUEUE_PREFIX_ENV] = options.queue_prefix
    if options.trigger == "servicebus":
        values["AzureWebJobsServiceBus"] = "<Service Bus connection string>"
        values[SERVICEBUS_SETTLEMENT_ENV] = options.servicebus_settlement
    values.update(options.settings)
    return {"IsEncrypted": False, "Values": values}


def module_path(app_file: Path, out_dir: Path, module: str | None) -> str:
    """How the deployed package imports the user's module: ``module`` when given, else its path
    relative to the output folder, else (outside it) its file name, importable from a sibling."""
    if module:
        return module
    app_file, out_dir = app_file.resolve(), out_dir.resolve()
    try:
        relative = app_file.with_suffix("").relative_to(out_dir)
    except ValueError:
        return app_file.stem
    parts = relative.parts
    if not all(p.isidentifier() for p in parts):
        raise ConfigurationError(
            f"{app_file} is not importable as a module from {out_dir}: pass --module"
        )
    return ".".join(parts)


def app_attribute(target: str, pipeline: App) -> str:
    """The module-level name of ``pipeline`` in the user's file (``path.py:attr`` or found)."""
    from apix_core.cli.loader import split_target

    path, attr = split_target(target)
    if attr:
        return attr
    wanted = str(path.resolve())
    for mod in list(sys.modules.values()):
        if getattr(mod, "__file__", None) == wanted:
            for name, value in vars(mod).items():
                if value is pipeline:
                    return name
    return "app"  # pragma: no cover - load_app found it under some module-level name


FUNCTION_APP_TEMPLATE = '''"""Generated by `apix deploy azure`: regenerate, do not edit."""

from {module} import {attribute} as pipeline

from apix_azure import function_app

app = function_app(pipeline)
'''


def generate(target: str, out_dir: Path, options: DeployOptions | None = None) -> list[Path]:
    """Write the project files for the app at ``target`` (``app.py[:attr]``) into ``out_dir``;
    returns the files written."""
    from apix_core.cli.loader import load_app, split_target

    options = options or DeployOptions()
    options.check()
    pipeline = load_app(target)
    if not list(pipeline.topology):
        raise ConfigurationError(f"{target} registers no processor: nothing to deploy")
    app_file, _ = split_target(target)
    module = module_path(app_file, out_dir, options.module)
    attribute = app_attribute(target, pipeline)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "function_app.py": FUNCTION_APP_TEMPLATE.format(module=module, attribute=attribute),
        "host.json": _dump(host_json(pipeline, options)),
        "requirements.txt": requirements(options),
        "local.settings.json.example": _dump(local_settings(pipeline, options)),
    }
    written = []
    for name, text in files.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + os.linesep
