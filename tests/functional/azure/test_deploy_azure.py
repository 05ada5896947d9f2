"""`apix deploy azure`: the generated Azure Functions project, loaded by a fresh interpreter as
the Python worker would, per-customer configs, and the CLI plugin in the shared deploy group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from apix_azure.deploy.cli import DEPLOY_GROUP, deploy_group, register
from apix_azure.deploy.generate import DeployOptions, generate, load_customer_config
from apix_core.errors import ConfigurationError

PIPELINE = """
from apix_core import App, Message, ProcessorContext

shop = App("shop", tenant_id="acme")


@shop.processor("ingest", consumes="raw.orders", max_attempts=7)
async def ingest(message: Message, ctx: ProcessorContext) -> None:
    pass


@shop.processor("enrich", consumes="clean_orders")
async def enrich(message: Message, ctx: ProcessorContext) -> None:
    pass


@shop.processor("nightly", schedule="30 2 * * *")
async def nightly(message: Message, ctx: ProcessorContext) -> None:
    pass


@shop.processor("orders_api", route="POST /orders/{order_id}")
async def orders_api(message: Message, ctx: ProcessorContext) -> None:
    pass
"""

# Reads the generated function_app.py as the worker does (by file) and prints its functions.
PROBE = """
import importlib.util, json
import azure.functions as func
spec = importlib.util.spec_from_file_location("function_app", "function_app.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
out = {}
for f in module.app.get_functions():
    out[f.get_function_name()] = json.loads(f.get_function_json())["bindings"]
print(json.dumps(out))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "pipeline.py").write_text(textwrap.dedent(PIPELINE))
    return src / "pipeline.py"


def load_functions(out: Path, pythonpath: Path, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": f"{out}{os.pathsep}{pythonpath}",
            **(env or {}),
        },
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_generated_project_loads_with_one_function_per_processor(
    project: Path, tmp_path: Path
) -> None:
    # GIVEN an app with two queue processors, a schedule and an HTTP route
    out = tmp_path / "azure"
    # WHEN the project is generated and a fresh interpreter loads its function_app.py
    written = generate(str(project), out)
    functions = load_functions(out, project.parent)
    # THEN the four files exist and each processor has its trigger binding
    assert sorted(p.name for p in written) == [
        "function_app.py",
        "host.json",
        "local.settings.json.example",
        "requirements.txt",
    ]
    assert "from pipeline import shop as pipeline" in (out / "function_app.py").read_text()
    assert set(functions) == {"ingest", "enrich", "nightly", "orders_api"}
    (ingest,) = functions["ingest"]
    assert (ingest["type"], ingest["queueName"]) == ("queueTrigger", "raw-orders")
    assert functions["enrich"][0]["queueName"] == "clean-orders"
    (timer,) = functions["nightly"]
    assert (timer["type"], timer["schedule"]) == ("timerTrigger", "0 30 2 * * *")
    http = next(b for b in functions["orders_api"] if b["type"] == "httpTrigger")
    assert http["route"] == "orders/{order_id}"
    assert http["methods"] == ["POST"]


def test_host_json_takes_the_largest_max_attempts_and_the_options(
    project: Path, tmp_path: Path
) -> None:
    # GIVEN processors with max_attempts 7 and the app default
    # WHEN generated with the defaults, then with options
    generate(str(project), tmp_path / "a")
    generate(
        str(project),
        tmp_path / "b",
        DeployOptions(batch_size=4, visibility_timeout="00:01:30", max_dequeue_count=9),
    )
    # THEN maxDequeueCount is the largest max_attempts unless given; the rest as documented
    a = json.loads((tmp_path / "a" / "host.json").read_text())
    assert a == {
        "version": "2.0",
        "logging": {
            "logLevel": {
                "default": "Warning",
                "Function": "Information",
                "Host.Results": "Information",
                "Host.Aggregator": "Trace",
            },
            "applicationInsights": {
                "samplingSettings": {"isEnabled": True, "excludedTypes": "Request;Exception"}
            },
        },
        "extensions": {
            "queues": {
                "maxDequeueCount": 7,
                "batchSize": 16,
                "messageEncoding": "base64",
                "visibilityTimeout": "00:00:30",
            }
        },
        "extensionBundle": {
            "id": "Microsoft.Azure.Functions.ExtensionBundle",
            "version": "[4.*, 5.0.0)",
        },
    }
    b = json.loads((tmp_path / "b" / "host.json").read_text())["extensions"]["queues"]
    assert (b["maxDequeueCount"], b["batchSize"], b["visibilityTimeout"]) == (9, 4, "00:01:30")


def test_requirements_and_local_settings(project: Path, tmp_path: Path) -> None:
    # WHEN generated without a database URL, then with a PostgreSQL one
    generate(str(project), tmp_path / "lite")
    generate(
        str(project),
        tmp_path / "pg",
        DeployOptions(database_url="postgresql+asyncpg://u@db/apix", queue_url="azure-queue://"),
    )
    # THEN requirements add [postgres] only for PostgreSQL; settings name every app setting
    assert (tmp_path / "lite" / "requirements.txt").read_text() == "apix-core[azure]\n"
    assert (tmp_path / "pg" / "requirements.txt").read_text() == "apix-core[azure,postgres]\n"
    lite = json.loads((tmp_path / "lite" / "local.settings.json.example").read_text())
    assert lite["IsEncrypted"] is False
    values = lite["Values"]
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values["APIX_TENANT_ID"] == "acme"
    assert values["APIX_DATABASE_URL"] == ""
    assert values["APIX_AZURE_MAX_DEQUEUE_COUNT"] == "7"
    pg = json.loads((tmp_path / "pg" / "local.settings.json.example").read_text())["Values"]
    assert pg["APIX_DATABASE_URL"] == "postgresql+asyncpg://u@db/apix"
    assert pg["APIX_QUEUE_URL"] == "azure-queue://"


def test_servicebus_trigger_adds_service_bus_host_settings(project: Path, tmp_path: Path) -> None:
    # WHEN generated for the Service Bus trigger
    generate(str(project), tmp_path, DeployOptions(trigger="servicebus"))
    # THEN host.json configures the extension and the settings select the trigger
    host = json.loads((tmp_path / "host.json").read_text())
    assert host["extensions"]["serviceBus"]["maxConcurrentCalls"] == 16
    values = json.loads((tmp_path / "local.settings.json.example").read_text())["Values"]
    assert values["APIX_AZURE_TRIGGER"] == "servicebus"
    assert "AzureWebJobsServiceBus" in values


@pytest.mark.slow
def test_apix_servicebus_settlement_is_deployed_whole(project: Path, tmp_path: Path) -> None:
    # WHEN generated for Service Bus with apix settling through the settlement client
    options = DeployOptions(module="pipeline", trigger="servicebus", servicebus_settlement="apix")
    generate(str(project), tmp_path, options)
    # THEN the SDK-type bindings are a requirement, the setting is written, the host does not
    # auto-complete, and the loaded app's triggers say so too
    assert (tmp_path / "requirements.txt").read_text().splitlines() == [
        "apix-core[azure]",
        "azurefunctions-extensions-bindings-servicebus",
    ]
    values = json.loads((tmp_path / "local.settings.json.example").read_text())["Values"]
    assert values["APIX_AZURE_SERVICEBUS_SETTLEMENT"] == "apix"
    host = json.loads((tmp_path / "host.json").read_text())
    assert host["extensions"]["serviceBus"]["autoCompleteMessages"] is False
    settings = {"APIX_AZURE_TRIGGER": "servicebus", "APIX_AZURE_SERVICEBUS_SETTLEMENT": "apix"}
    functions = load_functions(tmp_path, project.parent, env=settings)
    triggers = [b for bs in functions.values() for b in bs if b["type"] == "serviceBusTrigger"]
    assert len(triggers) == 2
    assert all(b["autoCompleteMessages"] is False for b in triggers)


@pytest.mark.slow
def test_customer_config_changes_tenant_and_host_json(project: Path, tmp_path: Path) -> None:
    # GIVEN a customer's deployment file
    config = tmp_path / "customer-a.toml"
    config.write_text(
        'tenant = "customer-a"\n'
        'database_url = "postgresql+asyncpg://a@db/a"\n'
        "[host]\nbatchSize = 8\nmaxDequeueCount = 3\n"
        '[settings]\nAPIX_LOG_LEVEL = "INFO"\n'
    )
    out = tmp_path / "deployments" / "customer-a" / "azure"
    # WHEN the customer's folder is generated from it, with the module path given
    generate(str(project), out, load_customer_config(config, DeployOptions(module="pipeline")))
    # THEN tenant, host.json scaling and extra settings are the customer's, and it still loads
    values = json.loads((out / "local.settings.json.example").read_text())["Values"]
    assert values["APIX_TENANT_ID"] == "customer-a"
    assert values["APIX_LOG_LEVEL"] == "INFO"
    queues = json.loads((out / "host.json").read_text())["extensions"]["queues"]
    assert (queues["batchSize"], queues["maxDequeueCount"]) == (8, 3)
    assert (out / "requirements.txt").read_text() == "apix-core[azure,postgres]\n"
    assert set(load_functions(out, project.parent)) == {"ingest", "enrich", "nightly", "orders_api"}


@pytest.mark.slow
def test_customer_queue_prefix_reaches_the_bindings(project: Path, tmp_path: Path) -> None:
    # GIVEN customer A's deployment file with a queue name prefix
    config = tmp_path / "customer-a.toml"
    config.write_text('tenant = "customer-a"\nqueue_prefix = "cust-a-"\n')
    out = tmp_path / "deployments" / "customer-a" / "azure"
    # WHEN generated
    generate(str(project), out, load_customer_config(config, DeployOptions(module="pipeline")))
    # THEN the prefix is an app setting ...
    values = json.loads((out / "local.settings.json.example").read_text())["Values"]
    assert values["APIX_AZURE_QUEUE_PREFIX"] == "cust-a-"
    # ... and function_app, loaded with the customer's settings, binds the prefixed queues
    functions = load_functions(out, project.parent, env={"APIX_AZURE_QUEUE_PREFIX": "cust-a-"})
    queue_names = {
        name: b["queueName"] for name, bs in functions.items() for b in bs if "queueName" in b
    }
    assert queue_names == {"ingest": "cust-a-raw-orders", "enrich": "cust-a-clean-orders"}


def test_app_inside_the_output_folder_is_imported_by_its_package_path(tmp_path: Path) -> None:
    # GIVEN the app module inside the project folder, in a package
    package = tmp_path / "proj" / "shop"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "pipeline.py").write_text(textwrap.dedent(PIPELINE))
    # WHEN generated into the project folder
    generate(str(package / "pipeline.py"), tmp_path / "proj")
    # THEN function_app.py imports it by its dotted path
    text = (tmp_path / "proj" / "function_app.py").read_text()
    assert "from shop.pipeline import shop as pipeline" in text


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('queue_prefix = "-a"\n', "queue prefix '-a'"),
        ("queue_prefix = 3\n", "must be a string"),
        ("colour = 1\n", "unknown key 'colour'"),
        ("[host]\nbatchSize = 64\n", "exceeds Azure's maximum 32"),
        ("[host]\nbatchSize = 0\n", "positive integer"),
        ("[host]\nprefetch = 1\n", "'prefetch' is not one of"),
        ('[host]\nvisibilityTimeout = "30s"\n', "TimeSpan"),
        ("tenant = 5\n", "must be a string"),
        ('trigger = "eventgrid"\n', "use 'storage' or 'servicebus'"),
        ('servicebus_settlement = "broker"\n', "use 'host' or 'apix'"),
        ("tenant = \n", "not valid TOML"),
    ],
)
def test_bad_customer_config_is_a_configuration_error(
    tmp_path: Path, toml: str, message: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(toml)
    with pytest.raises(ConfigurationError, match=message):
        load_customer_config(config)


def test_register_reuses_an_existing_deploy_group() -> None:
    # GIVEN an app where another plugin already added `deploy aws`
    app = typer.Typer()
    other = deploy_group(app)

    @other.command("aws")
    def aws() -> None:
        typer.echo("aws")

    # WHEN the azure plugin registers
    register(app)
    # THEN both commands live in the one deploy group
    groups = [g for g in app.registered_groups if g.name == DEPLOY_GROUP]
    assert len(groups) == 1
    commands = typer.main.get_group(app).commands[DEPLOY_GROUP].commands  # type: ignore[attr-defined]
    assert set(commands) == {"aws", "azure"}


@pytest.mark.slow
def test_cli_deploy_azure(project: Path, tmp_path: Path) -> None:
    # GIVEN the installed `apix` with its plugins
    apix = Path(sys.executable).with_name("apix")
    out = tmp_path / "out"
    # WHEN `apix deploy azure --help`, a generation, and a bad config run
    helped = subprocess.run(
        [str(apix), "deploy", "azure", "--help"], capture_output=True, text=True, check=False
    )
    made = subprocess.run(
        [str(apix), "deploy", "azure", str(project), "--out", str(out), "--batch-size", "5"],
        capture_output=True,
        text=True,
        check=False,
    )
    bad = subprocess.run(
        [str(apix), "deploy", "azure", str(project), "--out", str(out), "--config", "nope.toml"],
        capture_output=True,
        text=True,
        check=False,
    )
    # THEN help lists the options, files are written, and a bad config is one line, exit 2
    assert helped.returncode == 0, helped.stderr
    assert "--out" in helped.stdout and "--config" in helped.stdout
    assert "warning" not in helped.stderr
    assert made.returncode == 0, made.stderr
    assert json.loads((out / "host.json").read_text())["extensions"]["queues"]["batchSize"] == 5
    assert bad.returncode == 2
    assert "no such deployment config" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr


def test_cli_runner_generates_into_out(project: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(
        app, ["deploy", "azure", str(project), "--out", str(tmp_path), "--tenant", "t1"]
    )
    assert result.exit_code == 0, result.output
    values = json.loads((tmp_path / "local.settings.json.example").read_text())["Values"]
    assert values["APIX_TENANT_ID"] == "t1"


FAKE_AWS_PLUGIN = """
import typer
from apix_azure.deploy.cli import deploy_group


def register(app: typer.Typer) -> None:
    @deploy_group(app).command("gcp")
    def gcp() -> None:
        typer.echo("gcp")
"""


@pytest.mark.slow
def test_two_installed_plugins_share_one_deploy_group(tmp_path: Path) -> None:
    # GIVEN a third installed apix.cli plugin (a real dist-info on the path) adding `deploy gcp`
    (tmp_path / "fakeaws_plugin.py").write_text(textwrap.dedent(FAKE_AWS_PLUGIN))
    info = tmp_path / "fakeaws_plugin-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeaws-plugin\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[apix.cli]\ndeploy-gcp = fakeaws_plugin:register\n")
    # WHEN `apix deploy --help` runs
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("apix")), "deploy", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    # THEN both commands are in the one group, without a warning
    assert proc.returncode == 0, proc.stderr
    assert all(name in proc.stdout for name in ("aws", "azure", "gcp"))
    assert "already taken" not in proc.stderr
