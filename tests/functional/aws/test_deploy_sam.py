"""``apix deploy aws``: the SAM template of a 3-processor app (queue, schedule, HTTP), checked
resource by resource, by cfn-lint and by the SAM translator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from apix_aws.deploy.sam import DeployError, DeploySettings, dump_template, sam_template
from apix_core import App
from apix_core.cli.app import cli

APP_SOURCE = textwrap.dedent(
    """
    from apix_core import App

    app = App("shop")


    @app.processor(route="POST /orders/{order_id}", produces="orders")
    def ingest(message, ctx):
        return message


    @app.processor(consumes="orders", produces="clean", max_attempts=3)
    def normalize(message, ctx):
        return message


    @app.processor(schedule="0 30 2 * * 1-5", produces="clean")
    def nightly(message, ctx):
        return None
    """
)


def _app() -> App:
    app = App("shop")

    @app.processor(route="POST /orders/{order_id}", produces="orders")
    def ingest(message: Any, ctx: Any) -> Any:
        return message

    @app.processor(consumes="orders", produces="clean", max_attempts=3)
    def normalize(message: Any, ctx: Any) -> Any:
        return message

    @app.processor(schedule="0 30 2 * * 1-5", produces="clean")
    def nightly(message: Any, ctx: Any) -> None:
        return None

    return app


def _of_type(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_template_has_queues_dead_letter_queues_and_event_sources() -> None:
    # GIVEN a queue, a schedule and an HTTP processor
    # WHEN the template is generated with a queue prefix
    t = sam_template(_app(), DeploySettings(name_prefix="acme-", timeout=20))
    r = t["Resources"]

    # THEN every queue has a DLQ, redrive after the consumer's max_attempts, 6x visibility
    assert t["Transform"] == "AWS::Serverless-2016-10-31"
    assert t["Parameters"]["DatabaseUrl"]["NoEcho"] is True
    queues = _of_type(t, "AWS::SQS::Queue")
    assert {q["Properties"]["QueueName"] for q in queues.values()} == {
        "acme-orders",
        "acme-orders-dlq",
        "acme-clean",
        "acme-clean-dlq",
    }
    orders = r["QueueOrders"]["Properties"]
    assert orders["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueueOrders", "Arn"]},
        "maxReceiveCount": 3,
    }
    assert orders["VisibilityTimeout"] == 120
    # "clean" has no consumer: the app's default max_attempts
    assert r["QueueClean"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] == 5

    # AND the consumer reads its queue with partial batch responses
    normalize = r["FunctionNormalize"]["Properties"]
    assert normalize["Handler"] == "apix_handlers.handler_normalize"
    assert normalize["Events"]["Queue"]["Properties"] == {
        "Queue": {"Fn::GetAtt": ["QueueOrders", "Arn"]},
        "BatchSize": 10,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
    }
    env = normalize["Environment"]["Variables"]
    assert env["APIX_QUEUE_URL"] == "sqs://?prefix=acme-"
    assert env["APIX_DATABASE_URL"] == {"Ref": "DatabaseUrl"}

    # AND the 6-field NCRONTAB schedule became an EventBridge cron (Mon-Fri = 2-6)
    nightly = r["FunctionNightly"]["Properties"]["Events"]["Schedule"]
    assert nightly == {
        "Type": "Schedule",
        "Properties": {"Schedule": "cron(30 2 ? * 2-6 *)", "Enabled": True},
    }
    # AND the route is an HTTP API event with its path parameter
    ingest = r["FunctionIngest"]["Properties"]["Events"]["Http"]
    assert ingest == {
        "Type": "HttpApi",
        "Properties": {"Path": "/orders/{order_id}", "Method": "POST"},
    }


def _queue_refs(policies: list[Any]) -> set[str]:
    """Logical ids of every queue a function's policies name."""
    text = json.dumps(policies)
    return {
        q
        for q in ("QueueOrders", "QueueClean", "DeadLetterQueueOrders", "DeadLetterQueueClean")
        if f'"{q}"' in text
    }


def test_policies_are_scoped_to_the_queues_each_function_uses() -> None:
    r = sam_template(_app())["Resources"]

    ingest = r["FunctionIngest"]["Properties"]["Policies"]
    normalize = r["FunctionNormalize"]["Properties"]["Policies"]
    nightly = r["FunctionNightly"]["Properties"]["Policies"]

    assert _queue_refs(ingest) == {"QueueOrders"}
    assert {
        "SQSSendMessagePolicy": {"QueueName": {"Fn::GetAtt": ["QueueOrders", "QueueName"]}}
    } in ingest
    assert _queue_refs(nightly) == {"QueueClean"}
    assert _queue_refs(normalize) == {"QueueOrders", "QueueClean", "DeadLetterQueueOrders"}
    assert {
        "SQSPollerPolicy": {"QueueName": {"Fn::GetAtt": ["QueueOrders", "QueueName"]}}
    } in normalize
    actions = json.dumps(normalize)
    assert "sqs:ChangeMessageVisibility" in actions
    # only the consumer may receive, only from its own queue
    assert "SQSPollerPolicy" not in json.dumps(ingest) + json.dumps(nightly)


def _alarms(t: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Single-metric alarms by (namespace, metric, the logical id their dimension names)."""
    found = {}
    for alarm in _of_type(t, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        if "MetricName" not in props:
            continue
        value = props["Dimensions"][0]["Value"]
        target = value["Ref"] if "Ref" in value else value["Fn::GetAtt"][0]
        found[(props["Namespace"], props["MetricName"], target)] = props
    return found


def _dashboard_metrics(t: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """(namespace, metric, dimension, value) of every dashboard widget line."""
    (dashboard,) = _of_type(t, "AWS::CloudWatch::Dashboard").values()
    body = json.loads(dashboard["Properties"]["DashboardBody"]["Fn::Sub"])
    assert all(w["type"] == "metric" and w["width"] <= 24 for w in body["widgets"])
    return {tuple(line[:4]) for w in body["widgets"] for line in w["properties"]["metrics"]}


def test_monitoring_covers_the_api_every_function_and_every_queue() -> None:
    # GIVEN an app with an HTTP, a queue and a schedule processor
    # WHEN its template is generated (HTTP API, 30 s timeout)
    t = sam_template(_app())
    alarms = _alarms(t)
    functions = {"FunctionIngest", "FunctionNormalize", "FunctionNightly"}
    queues = {"QueueOrders", "QueueClean"}
    dlqs = {"DeadLetterQueueOrders", "DeadLetterQueueClean"}

    # THEN every function has its errors, throttles and duration alarms
    for fid in functions:
        assert alarms[("AWS/Lambda", "Errors", fid)]["Threshold"] == 0
        assert alarms[("AWS/Lambda", "Throttles", fid)]["Threshold"] == 0
        duration = alarms[("AWS/Lambda", "Duration", fid)]
        assert (duration["Statistic"], duration["Threshold"]) == ("Maximum", 24_000)
    # AND every queue its age-of-oldest-message alarm, every dead-letter queue its depth alarm
    for qid in queues:
        assert alarms[("AWS/SQS", "ApproximateAgeOfOldestMessage", qid)]["Threshold"] == 900
    for did in dlqs:
        dlq = alarms[("AWS/SQS", "ApproximateNumberOfMessagesVisible", did)]
        assert (dlq["Threshold"], dlq["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    # AND the HTTP API its 5xx and p99 latency alarms, by ApiId (HTTP API metric names)
    server = alarms[("AWS/ApiGateway", "5xx", "ServerlessHttpApi")]
    assert server["Dimensions"][0]["Name"] == "ApiId"
    latency = alarms[("AWS/ApiGateway", "Latency", "ServerlessHttpApi")]
    assert (latency["ExtendedStatistic"], latency["Threshold"]) == ("p99", 3000)
    assert "Statistic" not in latency
    # AND a 4xx alarm on the share of refused requests (metric math)
    client = t["Resources"]["ApiClientErrorAlarm"]["Properties"]
    stats = {m["Id"]: m.get("MetricStat", {}).get("Metric", {}) for m in client["Metrics"]}
    assert stats["refused"]["MetricName"] == "4xx"
    assert stats["requests"]["MetricName"] == "Count"
    assert client["Metrics"][-1]["Expression"] == "refused / requests"
    assert len(alarms) == 3 * 3 + 2 + 2 + 2

    # AND every alarm notifies the SNS topic: the stack's own, or AlarmTopicArn when given
    action = {"Fn::If": ["CreateAlarmTopic", {"Ref": "AlarmTopic"}, {"Ref": "AlarmTopicArn"}]}
    for alarm in _of_type(t, "AWS::CloudWatch::Alarm").values():
        assert alarm["Properties"]["AlarmActions"] == [action]
    assert t["Resources"]["AlarmTopic"]["Condition"] == "CreateAlarmTopic"
    assert t["Parameters"]["AlarmTopicArn"]["Default"] == ""

    # AND the dashboard shows the same metrics for every function, queue and the API
    shown = _dashboard_metrics(t)
    for fid in functions:
        for metric in ("Invocations", "Errors", "Throttles", "Duration"):
            assert ("AWS/Lambda", metric, "FunctionName", f"${{{fid}}}") in shown
    for qid in queues:
        for metric in ("ApproximateAgeOfOldestMessage", "ApproximateNumberOfMessagesVisible"):
            assert ("AWS/SQS", metric, "QueueName", f"${{{qid}.QueueName}}") in shown
    for did in dlqs:
        assert (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            "QueueName",
            f"${{{did}.QueueName}}",
        ) in shown
    for metric in ("Count", "4xx", "5xx", "Latency"):
        assert ("AWS/ApiGateway", metric, "ApiId", "${ServerlessHttpApi}") in shown


def test_a_rest_api_is_monitored_by_api_name_with_its_own_metric_names() -> None:
    # GIVEN the routes served by a REST API
    t = sam_template(_app(), DeploySettings(api="rest", timeout=10, latency_alarm_ms=800))

    # THEN the route is an Api event and the API metrics are REST's: ApiName, 4XXError/5XXError
    ingest = t["Resources"]["FunctionIngest"]["Properties"]["Events"]["Http"]
    assert ingest["Type"] == "Api"
    alarms = _alarms(t)
    server = alarms[("AWS/ApiGateway", "5XXError", "AWS::StackName")]
    assert server["Dimensions"][0]["Name"] == "ApiName"
    assert alarms[("AWS/ApiGateway", "Latency", "AWS::StackName")]["Threshold"] == 800
    assert alarms[("AWS/Lambda", "Duration", "FunctionIngest")]["Threshold"] == 8000
    shown = _dashboard_metrics(t)
    for metric in ("Count", "4XXError", "5XXError", "Latency"):
        assert ("AWS/ApiGateway", metric, "ApiName", "${AWS::StackName}") in shown
    assert "ServerlessRestApi" in t["Outputs"]["HttpApiUrl"]["Value"]["Fn::Sub"]


def test_an_app_without_routes_has_no_api_alarms() -> None:
    app = App("batch")

    @app.processor(consumes="in")
    def work(message: Any, ctx: Any) -> None:
        return None

    t = sam_template(app)
    assert not any(k.startswith("Api") for k in t["Resources"])
    assert "AWS/ApiGateway" not in json.dumps(t)
    assert "HttpApiUrl" not in t["Outputs"]


@pytest.mark.parametrize("api", ["http", "rest"])
def test_cfn_lint_accepts_the_monitoring_of_either_api(tmp_path: Path, api: str) -> None:
    # GIVEN the template of an HTTP + SQS + schedule app
    path = tmp_path / "template.yaml"
    path.write_text(dump_template(sam_template(_app(), DeploySettings(api=api))), "utf-8")
    # THEN cfn-lint (which applies the SAM transform: ServerlessHttpApi/ServerlessRestApi
    # exist) finds no error in the alarms, the topic and the dashboard's Fn::Sub
    assert _lint(path) == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"api": "graphql"}, "api 'graphql'"),
        ({"message_age_alarm": 5}, "message age alarm 5 s"),
        ({"latency_alarm_ms": 0}, "latency alarm 0 ms"),
    ],
)
def test_bad_monitoring_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match=message):
        DeploySettings(**settings)


def test_a_schedule_with_seconds_is_refused() -> None:
    app = App("fast")

    @app.processor(schedule="*/10 * * * * *")
    def tick(message: Any, ctx: Any) -> None:
        return None

    with pytest.raises(DeployError, match=r"processor 'tick' cannot be scheduled on AWS.*second"):
        sam_template(app)


def test_eventbridge_style_schedules_deploy_as_eventbridge_expressions() -> None:
    # GIVEN schedules written as AWS users write them: rate() and EventBridge cron()
    app = App("aws-style")

    @app.processor(schedule="rate(5 minutes)")
    def every5(message: Any, ctx: Any) -> None:
        return None

    @app.processor(schedule="cron(0 9 ? * MON-FRI *)")
    def weekdays(message: Any, ctx: Any) -> None:
        return None

    # WHEN the template is generated
    r = sam_template(app)["Resources"]

    # THEN each becomes an EventBridge schedule firing when apix fires it locally
    def schedule_of(logical_id: str) -> str:
        event = r[logical_id]["Properties"]["Events"]["Schedule"]
        assert event["Type"] == "Schedule"
        return str(event["Properties"]["Schedule"])

    assert schedule_of("FunctionEvery5") == "cron(0/5 * * * ? *)"
    assert schedule_of("FunctionWeekdays") == "cron(0 9 ? * 2-6 *)"


def test_customer_settings_are_applied() -> None:
    t = sam_template(
        _app(),
        DeploySettings(
            name_prefix="cust1-",
            memory=512,
            timeout=60,
            reserved_concurrency=4,
            tenant_id="cust1",
            database_secret="cust1/db",
        ),
    )
    g = t["Globals"]["Function"]
    assert (g["MemorySize"], g["Timeout"]) == (512, 60)
    assert "DatabaseUrl" not in t["Parameters"]
    fn = t["Resources"]["FunctionIngest"]["Properties"]
    assert fn["ReservedConcurrentExecutions"] == 4
    env = fn["Environment"]["Variables"]
    assert env["APIX_TENANT_ID"] == "cust1"
    assert env["APIX_DATABASE_URL"] == "{{resolve:secretsmanager:cust1/db:SecretString}}"
    assert t["Resources"]["QueueOrders"]["Properties"]["VisibilityTimeout"] == 360


def _write_app(tmp_path: Path) -> Path:
    code = tmp_path / "src"
    code.mkdir()
    (code / "app.py").write_text(APP_SOURCE, encoding="utf-8")
    return code / "app.py"


def _lint(path: Path) -> list[Any]:
    pytest.importorskip("cfnlint.api")
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(path, config=ManualArgs(regions=["us-east-1"]))
    return [m for m in matches if m.rule.id.startswith("E")]


def test_cli_writes_a_template_that_cfn_lint_and_the_sam_translator_accept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an app file and a customer config
    app_path = _write_app(tmp_path)
    config = tmp_path / "customer.toml"
    config.write_text(
        'tenant = "acme"\nqueue_prefix = "acme-"\nmemory = 512\n'
        "timeout = 45\nreserved_concurrency = 2\n",
        encoding="utf-8",
    )
    out = tmp_path / "deploy" / "template.yaml"

    # WHEN apix deploy aws runs (the plugin found through its entry point)
    result = CliRunner().invoke(
        cli, ["deploy", "aws", str(app_path), "--out", str(out), "--config", str(config)]
    )

    # THEN the template and the handler module are written, with the customer's settings
    assert result.exit_code == 0, result.output
    t = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert t["Globals"]["Function"]["CodeUri"] == "../src"
    assert t["Globals"]["Function"]["MemorySize"] == 512
    assert t["Resources"]["QueueOrders"]["Properties"]["QueueName"] == "acme-orders"
    env = t["Resources"]["FunctionNightly"]["Properties"]["Environment"]["Variables"]
    assert env["APIX_TENANT_ID"] == "acme"
    handlers = (tmp_path / "src" / "apix_handlers.py").read_text(encoding="utf-8")
    assert "from app import app as _app" in handlers
    assert 'handler_ingest = lambda_handler(_app, "ingest")' in handlers.replace("'", '"')

    # AND the generated handlers import and build real Lambda handlers
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import apix_handlers; print(callable(apix_handlers.handler_nightly))",
        ],
        cwd=tmp_path / "src",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "src")},
    )
    assert check.stdout.strip() == "True", check.stderr

    # AND cfn-lint finds no error
    assert _lint(out) == []

    # AND the SAM translator expands it
    from samtranslator.translator.transform import transform

    class _Policies:
        def load(self) -> dict[str, str]:
            role = "AWSLambdaBasicExecutionRole"
            return {role: f"arn:aws:iam::aws:policy/service-role/{role}"}

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # the translator's pseudo parameters
    # as `sam package` leaves it: the local code folder uploaded to S3
    t["Globals"]["Function"]["CodeUri"] = "s3://artifacts/shop.zip"
    expanded = transform(t, {}, _Policies())
    kinds = {r["Type"] for r in expanded["Resources"].values()}
    assert {
        "AWS::Lambda::Function",
        "AWS::Lambda::EventSourceMapping",
        "AWS::ApiGatewayV2::Api",
        "AWS::Events::Rule",
        "AWS::IAM::Role",
    } <= kinds
    mappings = [
        r for r in expanded["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"
    ]
    assert mappings[0]["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_cli_refuses_a_seconds_schedule_with_exit_2(tmp_path: Path) -> None:
    app_path = tmp_path / "fast.py"
    app_path.write_text(
        "from apix_core import App\napp = App('fast')\n\n"
        "@app.processor(schedule='15 * * * * *')\ndef tick(message, ctx):\n    return None\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        cli, ["deploy", "aws", str(app_path), "--out", str(tmp_path / "t.yaml")]
    )
    assert result.exit_code == 2
    assert "cannot be scheduled on AWS" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "t.yaml").exists()


def test_apix_deploy_aws_help_in_a_subprocess() -> None:
    apix = Path(sys.executable).parent / "apix"
    result = subprocess.run(
        [str(apix), "deploy", "aws", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout
    assert "SAM" in result.stdout


def test_two_plugins_share_the_deploy_group() -> None:
    # GIVEN the aws plugin's deploy group and another plugin's deploy group (as an Azure
    # package would register it), each built on its own Typer as load_plugins does
    import typer

    from apix_aws.deploy.cli import register
    from apix_core.cli.app import _commands_of, _merge_groups

    def register_azure(app: typer.Typer) -> None:
        group = typer.Typer(name="deploy")

        @group.command("azure")
        def azure() -> None:
            """Azure."""

        @group.command("aws")
        def clash() -> None:
            """A second aws."""

        app.add_typer(group, name="deploy")

    aws_deploy = _commands_of(register)["deploy"]
    azure_deploy = _commands_of(register_azure)["deploy"]
    original_aws = aws_deploy.commands["aws"]  # type: ignore[attr-defined]

    # WHEN they are merged
    merged = _merge_groups(aws_deploy, azure_deploy, "test")

    # THEN deploy has both subcommands, and the first aws command is kept
    assert merged is True
    assert sorted(aws_deploy.commands) == ["aws", "azure"]  # type: ignore[attr-defined]
    assert aws_deploy.commands["aws"] is original_aws  # type: ignore[attr-defined]
    # AND a plain command is not merged into a group
    assert _merge_groups(aws_deploy, original_aws, "test") is False


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('tenant = "a"\nqueue_size = 3\n', "unknown key(s) queue_size"),
        ('memory = "big"\n', "memory must be an integer"),
        ("memory = 64\n", "memory 64 MB: Lambda takes 128-10240"),
        ('queue_prefix = "a.b"\n', "queue name prefix 'a.b'"),
        ("tenant = \n", "is not valid TOML"),
    ],
)
def test_a_bad_customer_config_is_one_line_and_exit_2(
    tmp_path: Path, config: str, message: str
) -> None:
    app_path = _write_app(tmp_path)
    customer = tmp_path / "customer.toml"
    customer.write_text(config, encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        [
            "deploy",
            "aws",
            str(app_path),
            "--config",
            str(customer),
            "--out",
            str(tmp_path / "t.yaml"),
        ],
    )
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
