"""An AWS SAM template from an app's topology, read without starting the app.

One ``AWS::Serverless::Function`` per processor (its handler is ``apix_handlers.handler_<name>``,
a module :func:`handler_module` writes), one SQS queue and dead-letter queue per apix queue
(``maxReceiveCount`` = the consuming processor's ``max_attempts``, visibility timeout 6 × the
function timeout), an SQS event source with ``ReportBatchItemFailures``, EventBridge schedules
converted from apix's cron/NCRONTAB, API routes (an HTTP API, or a REST API), IAM policies
scoped to the queues each function uses, and monitoring: CloudWatch alarms on the API (5xx, 4xx
rate, p99 latency), every function (errors, throttles, duration near its timeout) and every
queue (age of the oldest message, dead-letter depth), sent to an SNS topic (created, or an
existing one given as a parameter), and a dashboard of the same metrics.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from apix_core import constants as c
from apix_core.errors import ConfigurationError
from apix_core.schedule import Schedule

if TYPE_CHECKING:
    from apix_core.app import App
    from apix_core.processor import ProcessorSpec

#: The module the generated handlers live in (``Handler: apix_handlers.handler_<name>``).
HANDLER_MODULE = "apix_handlers"
RUNTIME = "python3.12"
#: AWS's guidance: a queue's visibility timeout ≥ 6 × the timeout of the function it feeds.
VISIBILITY_FACTOR = 6
BATCH_SIZE = 10
#: SQS caps a visibility timeout at 12 hours.
MAX_VISIBILITY_SECONDS = 43_200
#: The API kinds a route can be served by (SAM event types ``HttpApi`` and ``Api``).
API_KINDS = ("http", "rest")
#: Alarms evaluate 5-minute periods.
ALARM_PERIOD = 300
#: A function whose slowest invocation reaches this share of its timeout is about to time out.
DURATION_ALARM_SHARE = 0.8
#: The 4xx alarm fires when this share of the API's requests are refused.
CLIENT_ERROR_RATE = 0.25


@dataclass(frozen=True)
class ApiMetrics:
    """Where API Gateway publishes an API kind's metrics: HTTP APIs and REST APIs differ in
    dimension (``ApiId`` vs ``ApiName``) and in the names of the error metrics."""

    dimension: str
    dimension_value: dict[str, Any]
    #: The same value inside an ``Fn::Sub`` string (the dashboard body).
    dimension_sub: str
    count: str = "Count"
    client_errors: str = "4xx"
    server_errors: str = "5xx"
    latency: str = "Latency"
    namespace: str = "AWS/ApiGateway"


#: SAM's implicit APIs: ``ServerlessHttpApi`` (metrics by ``ApiId``) and ``ServerlessRestApi``,
#: named after the stack (metrics by ``ApiName``).
API_METRICS = {
    "http": ApiMetrics("ApiId", {"Ref": "ServerlessHttpApi"}, "${ServerlessHttpApi}"),
    "rest": ApiMetrics(
        "ApiName",
        {"Ref": "AWS::StackName"},
        "${AWS::StackName}",
        client_errors="4XXError",
        server_errors="5XXError",
    ),
}


class DeployError(ConfigurationError):
    """The app or the deployment settings cannot be turned into a template."""

    code = "DEPLOY_ERROR"


@dataclass(frozen=True)
class DeploySettings:
    """Per-deployment (per-customer) settings applied to the template."""

    name_prefix: str = ""
    memory: int = 256
    timeout: int = 30
    reserved_concurrency: int | None = None
    tenant_id: str | None = None
    #: A Secrets Manager secret (name or ARN) holding the database URL, instead of a parameter.
    database_secret: str | None = None
    database_url_parameter: bool = True
    #: ``http`` (API Gateway HTTP API, payload 2.0) or ``rest`` (REST API, payload 1.0).
    api: str = "http"
    #: Alarm when a queue's oldest message is older than this (seconds).
    message_age_alarm: int = 900
    #: Alarm when the API's p99 latency exceeds this (milliseconds).
    latency_alarm_ms: int = 3000

    def __post_init__(self) -> None:
        if not 128 <= self.memory <= 10_240:
            raise DeployError(f"memory {self.memory} MB: Lambda takes 128-10240")
        if not 1 <= self.timeout <= 900:
            raise DeployError(f"timeout {self.timeout} s: Lambda takes 1-900")
        if self.reserved_concurrency is not None and self.reserved_concurrency < 0:
            raise DeployError(f"reserved concurrency {self.reserved_concurrency} must be >= 0")
        if self.name_prefix and not re.fullmatch(r"[A-Za-z0-9_-]+", self.name_prefix):
            raise DeployError(
                f"queue name prefix {self.name_prefix!r}: SQS names take letters, digits, '-', '_'"
            )
        if self.api not in API_KINDS:
            raise DeployError(f"api {self.api!r}: use 'http' (HTTP API) or 'rest' (REST API)")
        if self.message_age_alarm < 60:
            raise DeployError(f"message age alarm {self.message_age_alarm} s: at least 60")
        if self.latency_alarm_ms < 1:
            raise DeployError(f"latency alarm {self.latency_alarm_ms} ms: at least 1")


def logical_id(kind: str, name: str) -> str:
    """A CloudFormation logical id (alphanumeric): ``orders`` → ``Orders``; a name with other
    characters gets a hash suffix (``orders-in.fifo`` → ``OrdersInFifo1a2b3c``), so ``a-b`` and
    ``a.b`` stay apart (``orders``/``Orders`` are refused by :func:`sam_template`)."""
    words = re.split(r"[^A-Za-z0-9]+", name)
    camel = "".join(w[:1].upper() + w[1:] for w in words if w)
    if not re.fullmatch(r"[A-Za-z0-9]+", name, flags=re.ASCII):
        camel += hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{kind}{camel}"


def _check_unique_ids(kind: str, names: list[str]) -> None:
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(logical_id("", name), name)
        if other != name:
            raise DeployError(
                f"{kind} names {other!r} and {name!r} differ only in case: CloudFormation "
                "logical ids would collide"
            )


def sqs_names(queue: str, prefix: str) -> tuple[str, str]:
    """The SQS names of apix queue ``queue`` and of its dead-letter queue."""
    name = prefix + queue
    fifo = name.endswith(".fifo")
    base = name[: -len(".fifo")] if fifo else name
    dlq = f"{base}-dlq.fifo" if fifo else f"{base}-dlq"
    for sqs in (name, dlq):
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,80}", sqs.removesuffix(".fifo")) or len(sqs) > 80:
            raise DeployError(
                f"queue {queue!r}: SQS name {sqs!r} must be 1-80 letters, digits, '-' and '_' "
                "(FIFO queues end in '.fifo')"
            )
    return name, dlq


def api_path(path: str) -> str:
    """An apix route path as API Gateway writes it (``{param}`` segments are the same)."""
    return path if path == "/" else path.rstrip("/")


def sam_template(app: App, settings: DeploySettings | None = None) -> dict[str, Any]:
    """The SAM template of ``app`` (a dict; :func:`dump_template` writes it)."""
    s = settings or DeploySettings()
    specs = list(app.topology)
    if not specs:
        raise DeployError(f"app {app.name!r} has no processors to deploy")
    _check_unique_ids("processor", [spec.name for spec in specs])
    _check_unique_ids("queue", app.topology.queues())
    resources: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    outputs: dict[str, Any] = {}

    environment: dict[str, Any] = {
        c.QUEUE_URL_ENV: f"sqs://?prefix={s.name_prefix}" if s.name_prefix else "sqs://",
    }
    if s.database_secret:
        environment[c.DATABASE_URL_ENV] = (
            f"{{{{resolve:secretsmanager:{s.database_secret}:SecretString}}}}"
        )
    elif s.database_url_parameter:
        parameters["DatabaseUrl"] = {
            "Type": "String",
            "NoEcho": True,
            "Description": "The apix store (postgresql+asyncpg://user:password@host/db).",
        }
        environment[c.DATABASE_URL_ENV] = {"Ref": "DatabaseUrl"}
    if s.tenant_id:
        environment[c.TENANT_ID_ENV] = s.tenant_id

    # Queues: every queue the app consumes or produces, each with its dead-letter queue.
    queue_ids: dict[str, tuple[str, str]] = {}
    for queue in app.topology.queues():
        name, dlq_name = sqs_names(queue, s.name_prefix)
        qid, did = logical_id("Queue", queue), logical_id("DeadLetterQueue", queue)
        queue_ids[queue] = (qid, did)
        consumer = app.topology.consumer_of(queue)
        fifo = name.endswith(".fifo")
        dlq_props: dict[str, Any] = {"QueueName": dlq_name, "MessageRetentionPeriod": 1_209_600}
        queue_props: dict[str, Any] = {
            "QueueName": name,
            "VisibilityTimeout": min(VISIBILITY_FACTOR * s.timeout, MAX_VISIBILITY_SECONDS),
            "RedrivePolicy": {
                "deadLetterTargetArn": {"Fn::GetAtt": [did, "Arn"]},
                "maxReceiveCount": _max_attempts(app, consumer),
            },
        }
        if fifo:
            queue_props["FifoQueue"] = True
            dlq_props["FifoQueue"] = True
        resources[did] = {"Type": "AWS::SQS::Queue", "Properties": dlq_props}
        resources[qid] = {"Type": "AWS::SQS::Queue", "Properties": queue_props}
        resources[logical_id("MessageAgeAlarm", queue)] = _alarm(
            f"The oldest message of apix queue {queue!r} waits more than "
            f"{s.message_age_alarm} s: its consumer is failing or too slow.",
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            [{"Name": "QueueName", "Value": {"Fn::GetAtt": [qid, "QueueName"]}}],
            "Maximum",
            s.message_age_alarm,
        )
        resources[logical_id("DeadLetterAlarm", queue)] = _alarm(
            f"Messages of apix queue {queue!r} were dead-lettered.",
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            [{"Name": "QueueName", "Value": {"Fn::GetAtt": [did, "QueueName"]}}],
            "Maximum",
            0,
        )

    has_api = False
    for spec in specs:
        fid = logical_id("Function", spec.name)
        policies: list[Any] = []
        events: dict[str, Any] = {}
        for queue in spec.produces:
            qid, did = queue_ids[queue]
            policies.append(
                {"SQSSendMessagePolicy": {"QueueName": {"Fn::GetAtt": [qid, "QueueName"]}}}
            )
        # The SQS transport resolves queue URLs by name and reads redrive policies.
        used = [*spec.produces, *([spec.consumes] if spec.consumes else [])]
        if used:
            arns = [{"Fn::GetAtt": [queue_ids[q][0], "Arn"]} for q in used]
            policies.append(
                {
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"],
                            "Resource": arns,
                        }
                    ]
                }
            )
        if spec.consumes:
            qid, did = queue_ids[spec.consumes]
            policies.append({"SQSPollerPolicy": {"QueueName": {"Fn::GetAtt": [qid, "QueueName"]}}})
            # Visibility backoff of retryable failures; permanent failures go to the DLQ now.
            policies.append(
                {
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": [
                                "sqs:ChangeMessageVisibility",
                                "sqs:ChangeMessageVisibilityBatch",
                            ],
                            "Resource": {"Fn::GetAtt": [qid, "Arn"]},
                        },
                        {
                            "Effect": "Allow",
                            "Action": [
                                "sqs:SendMessage",
                                "sqs:GetQueueUrl",
                                "sqs:GetQueueAttributes",
                            ],
                            "Resource": {"Fn::GetAtt": [did, "Arn"]},
                        },
                    ]
                }
            )
            events["Queue"] = {
                "Type": "SQS",
                "Properties": {
                    "Queue": {"Fn::GetAtt": [qid, "Arn"]},
                    "BatchSize": BATCH_SIZE,
                    "FunctionResponseTypes": ["ReportBatchItemFailures"],
                },
            }
        elif spec.schedule:
            events["Schedule"] = {
                "Type": "Schedule",
                "Properties": {"Schedule": eventbridge_schedule(spec), "Enabled": True},
            }
        elif spec.route is not None:
            has_api = True
            events["Http"] = {
                "Type": "HttpApi" if s.api == "http" else "Api",
                "Properties": {"Path": api_path(spec.route.path), "Method": spec.route.method},
            }
        props: dict[str, Any] = {
            "Handler": f"{HANDLER_MODULE}.{handler_name(spec.name)}",
            "Description": f"apix processor {spec.name!r} of app {app.name!r}",
            "Environment": {"Variables": dict(environment)},
            "Policies": policies or ["AWSLambdaBasicExecutionRole"],
            "Events": events,
        }
        if s.reserved_concurrency is not None:
            props["ReservedConcurrentExecutions"] = s.reserved_concurrency
        resources[fid] = {"Type": "AWS::Serverless::Function", "Properties": props}
        function = [{"Name": "FunctionName", "Value": {"Ref": fid}}]
        resources[logical_id("ErrorAlarm", spec.name)] = _alarm(
            f"apix processor {spec.name!r} raised errors.",
            "AWS/Lambda",
            "Errors",
            function,
            "Sum",
            0,
        )
        resources[logical_id("ThrottleAlarm", spec.name)] = _alarm(
            f"Invocations of apix processor {spec.name!r} were throttled.",
            "AWS/Lambda",
            "Throttles",
            function,
            "Sum",
            0,
        )
        resources[logical_id("DurationAlarm", spec.name)] = _alarm(
            f"apix processor {spec.name!r} ran close to its {s.timeout} s timeout.",
            "AWS/Lambda",
            "Duration",
            function,
            "Maximum",
            round(s.timeout * 1000 * DURATION_ALARM_SHARE),
            comparison="GreaterThanOrEqualToThreshold",
        )
    api = API_METRICS[s.api] if has_api else None
    if api is not None:
        resources.update(_api_alarms(api, s))
    _alarm_topic(parameters, resources)
    resources["Dashboard"] = _dashboard(specs, queue_ids, api)
    outputs["AlarmTopicArn"] = {
        "Description": "The SNS topic the alarms notify",
        "Value": ALARM_ACTION,
    }
    if has_api:
        api_id = "ServerlessHttpApi" if s.api == "http" else "ServerlessRestApi"
        stage = "" if s.api == "http" else "Prod/"
        outputs["HttpApiUrl"] = {
            "Description": "Base URL of the app's HTTP routes",
            "Value": {
                "Fn::Sub": f"https://${{{api_id}}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{stage}"
            },
        }
    template: dict[str, Any] = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Description": f"apix app {app.name!r} (generated by apix deploy aws)",
        "Globals": {
            "Function": {
                "Runtime": RUNTIME,
                "CodeUri": ".",
                "MemorySize": s.memory,
                "Timeout": s.timeout,
            }
        },
    }
    template["Parameters"] = parameters
    template["Conditions"] = {
        "CreateAlarmTopic": {"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]},
        "SubscribeAlarmEmail": {
            "Fn::And": [
                {"Condition": "CreateAlarmTopic"},
                {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]},
            ]
        },
    }
    template["Resources"] = resources
    if outputs:
        template["Outputs"] = outputs
    return template


def handler_name(processor: str) -> str:
    """The attribute of :data:`HANDLER_MODULE` that serves ``processor``."""
    return (
        "handler_"
        + re.sub(r"\W", "_", processor, flags=re.ASCII)
        + (
            ""
            if re.fullmatch(r"\w+", processor, flags=re.ASCII)
            else "_" + hashlib.sha256(processor.encode()).hexdigest()[:6]
        )
    )


def handler_module(app: App, app_module: str, app_attribute: str) -> str:
    """The source of :data:`HANDLER_MODULE`: one Lambda handler per processor."""
    lines = [
        '"""Lambda handlers of the apix app, one per processor (generated by apix deploy aws)."""',
        "",
        "from apix_aws.handler import lambda_handler",
        f"from {app_module} import {app_attribute} as _app",
        "",
    ]
    for spec in app.topology:
        lines.append(f"{handler_name(spec.name)} = lambda_handler(_app, {spec.name!r})")
    return "\n".join(lines) + "\n"


def eventbridge_schedule(spec: ProcessorSpec) -> str:
    assert spec.schedule is not None
    try:
        return Schedule.parse(spec.schedule).to_eventbridge()
    except ConfigurationError as exc:
        raise DeployError(f"processor {spec.name!r} cannot be scheduled on AWS: {exc}") from None


def dump_template(template: dict[str, Any]) -> str:
    """YAML when PyYAML is installed, else JSON (which is YAML too, and CloudFormation's)."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        return json.dumps(template, indent=2) + "\n"
    text: str = yaml.safe_dump(template, sort_keys=False, default_flow_style=False, width=120)
    return text


def _max_attempts(app: App, consumer: ProcessorSpec | None) -> int:
    if consumer is not None and consumer.config.max_attempts is not None:
        return consumer.config.max_attempts
    return app.settings.max_attempts


#: Where every alarm notifies: the template's own topic, or the ``AlarmTopicArn`` parameter.
ALARM_ACTION: dict[str, Any] = {
    "Fn::If": ["CreateAlarmTopic", {"Ref": "AlarmTopic"}, {"Ref": "AlarmTopicArn"}]
}


def _alarm(
    description: str,
    namespace: str,
    metric: str,
    dimensions: list[dict[str, Any]],
    statistic: str,
    threshold: float,
    comparison: str = "GreaterThanThreshold",
) -> dict[str, Any]:
    # "p99" and the like are extended statistics: CloudWatch takes them in their own key.
    percentile = re.fullmatch(r"p\d+(\.\d+)?", statistic) is not None
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": description,
            "Namespace": namespace,
            "MetricName": metric,
            "Dimensions": dimensions,
            "ExtendedStatistic" if percentile else "Statistic": statistic,
            "Period": ALARM_PERIOD,
            "EvaluationPeriods": 1,
            "Threshold": threshold,
            "ComparisonOperator": comparison,
            # No traffic is no problem: an idle queue or function publishes nothing.
            "TreatMissingData": "notBreaching",
            "AlarmActions": [ALARM_ACTION],
        },
    }


def _api_alarms(api: ApiMetrics, s: DeploySettings) -> dict[str, Any]:
    dimensions = [{"Name": api.dimension, "Value": api.dimension_value}]
    server = _alarm(
        "The API answered with 5xx errors.",
        api.namespace,
        api.server_errors,
        dimensions,
        "Sum",
        0,
    )
    latency = _alarm(
        f"The API's p99 latency exceeds {s.latency_alarm_ms} ms.",
        api.namespace,
        api.latency,
        dimensions,
        "p99",
        s.latency_alarm_ms,
    )

    def metric(id_: str, name: str) -> dict[str, Any]:
        return {
            "Id": id_,
            "ReturnData": False,
            "MetricStat": {
                "Metric": {
                    "Namespace": api.namespace,
                    "MetricName": name,
                    "Dimensions": dimensions,
                },
                "Period": ALARM_PERIOD,
                "Stat": "Sum",
            },
        }

    # A share of requests, not a count: a busy API always refuses some bad requests.
    client = {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": (
                f"More than {CLIENT_ERROR_RATE:.0%} of the API's requests were refused (4xx)."
            ),
            "Metrics": [
                metric("refused", api.client_errors),
                metric("requests", api.count),
                {
                    "Id": "rate",
                    "Label": "4xx share of requests",
                    "Expression": "refused / requests",
                    "ReturnData": True,
                },
            ],
            "EvaluationPeriods": 1,
            "Threshold": CLIENT_ERROR_RATE,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [ALARM_ACTION],
        },
    }
    return {
        "ApiServerErrorAlarm": server,
        "ApiClientErrorAlarm": client,
        "ApiLatencyAlarm": latency,
    }


def _alarm_topic(parameters: dict[str, Any], resources: dict[str, Any]) -> None:
    parameters["AlarmTopicArn"] = {
        "Type": "String",
        "Default": "",
        "Description": "An existing SNS topic for the alarms; empty: the stack creates one.",
    }
    parameters["AlarmEmail"] = {
        "Type": "String",
        "Default": "",
        "Description": "An email address subscribed to the created alarm topic (optional).",
    }
    resources["AlarmTopic"] = {
        "Type": "AWS::SNS::Topic",
        "Condition": "CreateAlarmTopic",
        "Properties": {"DisplayName": {"Fn::Sub": "${AWS::StackName} alarms"}},
    }
    resources["AlarmEmailSubscription"] = {
        "Type": "AWS::SNS::Subscription",
        "Condition": "SubscribeAlarmEmail",
        "Properties": {
            "Protocol": "email",
            "Endpoint": {"Ref": "AlarmEmail"},
            "TopicArn": {"Ref": "AlarmTopic"},
        },
    }


def _widget(
    title: str, metrics: list[list[Any]], stat: str, x: int, y: int, width: int = 12
) -> dict[str, Any]:
    return {
        "type": "metric",
        "x": x,
        "y": y,
        "width": width,
        "height": 6,
        "properties": {
            "title": title,
            "view": "timeSeries",
            "metrics": metrics,
            "region": "${AWS::Region}",
            "stat": stat,
            "period": ALARM_PERIOD,
        },
    }


def _dashboard(
    specs: list[ProcessorSpec],
    queue_ids: dict[str, tuple[str, str]],
    api: ApiMetrics | None,
) -> dict[str, Any]:
    # DashboardBody is a JSON string; Fn::Sub fills in the generated names.
    def fn(spec: ProcessorSpec) -> str:
        return f"${{{logical_id('Function', spec.name)}}}"

    rows: list[tuple[str, list[list[Any]], str]] = []
    if api is not None:
        dim = [api.dimension, api.dimension_sub]
        rows += [
            ("API requests", [[api.namespace, api.count, *dim]], "Sum"),
            (
                "API errors (4xx, 5xx)",
                [
                    [api.namespace, api.client_errors, *dim],
                    [api.namespace, api.server_errors, *dim],
                ],
                "Sum",
            ),
            (
                "API latency (p50, p99)",
                [
                    [api.namespace, api.latency, *dim, {"stat": "p50"}],
                    [api.namespace, api.latency, *dim, {"stat": "p99"}],
                ],
                "p99",
            ),
        ]
    for title, metric, stat in (
        ("Invocations", "Invocations", "Sum"),
        ("Errors", "Errors", "Sum"),
        ("Throttles", "Throttles", "Sum"),
        ("Duration (maximum, ms)", "Duration", "Maximum"),
    ):
        rows.append(
            (title, [["AWS/Lambda", metric, "FunctionName", fn(spec)] for spec in specs], stat)
        )
    if queue_ids:
        rows += [
            (
                "Age of the oldest message (s)",
                [
                    [
                        "AWS/SQS",
                        "ApproximateAgeOfOldestMessage",
                        "QueueName",
                        f"${{{qid}.QueueName}}",
                    ]
                    for qid, _ in queue_ids.values()
                ],
                "Maximum",
            ),
            (
                "Messages waiting",
                [
                    [
                        "AWS/SQS",
                        "ApproximateNumberOfMessagesVisible",
                        "QueueName",
                        f"${{{qid}.QueueName}}",
                    ]
                    for qid, _ in queue_ids.values()
                ],
                "Maximum",
            ),
            (
                "Dead-lettered messages",
                [
                    [
                        "AWS/SQS",
                        "ApproximateNumberOfMessagesVisible",
                        "QueueName",
                        f"${{{did}.QueueName}}",
                    ]
                    for _, did in queue_ids.values()
                ],
                "Maximum",
            ),
        ]
    widgets = [
        _widget(title, metrics, stat, x=12 * (i % 2), y=6 * (i // 2))
        for i, (title, metrics, stat) in enumerate(rows)
    ]
    return {
        "Type": "AWS::CloudWatch::Dashboard",
        "Properties": {"DashboardBody": {"Fn::Sub": json.dumps({"widgets": widgets})}},
    }
