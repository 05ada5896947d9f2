"""function_app(): one Functions function per processor, with the bindings the host reads and
signatures the worker binds by name."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from apix_azure import function_app
from apix_azure.functions import function_name
from apix_core import App, Message, ProcessorContext


def three_processor_app(tmp_path: Path) -> App:
    app = App(
        "azfn",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}",
        queue_url=f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}",
        tenant_id="acme",
    )

    @app.processor("ingest.orders", consumes="raw.orders")
    async def ingest(message: Message, ctx: ProcessorContext) -> None:
        pass

    @app.processor("api", route="POST /orders/{shop}", produces=["raw.orders"])
    async def api(message: Message, ctx: ProcessorContext) -> None:
        pass

    @app.processor("nightly", schedule="*/5 * * * *")
    async def nightly(message: Message, ctx: ProcessorContext) -> None:
        pass

    return app


def functions_by_name(fapp: func.FunctionApp) -> dict[str, Any]:
    return {str(f.get_function_name()): f for f in fapp.get_functions()}


def bindings(fn: Any) -> dict[str, dict[str, Any]]:
    import json

    return {b["name"]: b for b in json.loads(fn.get_function_json())["bindings"]}


def test_one_function_per_processor_with_its_trigger_binding(tmp_path: Path) -> None:
    # GIVEN a queue, an HTTP and a schedule processor
    # WHEN the Functions app is built
    fns = functions_by_name(function_app(three_processor_app(tmp_path)))
    # THEN each processor has one function, named validly
    assert sorted(fns) == ["api", "ingest_orders", "nightly"]
    # AND the queue function listens on the Azure queue through AzureWebJobsStorage
    queue = bindings(fns["ingest_orders"])["msg"]
    assert queue["type"] == "queueTrigger"
    assert queue["direction"] == "IN"
    assert (queue["queueName"], queue["connection"]) == ("raw-orders", "AzureWebJobsStorage")
    # AND the timer's 5-field cron became a 6-field NCRONTAB with seconds
    timer = bindings(fns["nightly"])["timer"]
    assert timer["type"] == "timerTrigger"
    assert timer["schedule"] == "0 */5 * * * *"
    # AND the HTTP function has its route (no leading slash), method and anonymous access
    http = bindings(fns["api"])
    assert http["req"]["type"] == "httpTrigger"
    assert http["req"]["route"] == "orders/{shop}"
    assert [m.upper() for m in http["req"]["methods"]] == ["POST"]
    assert http["req"]["authLevel"].upper() == "ANONYMOUS"
    assert http["$return"]["type"] == "http"


def test_an_eventbridge_rate_schedule_becomes_an_ncrontab_timer(tmp_path: Path) -> None:
    # GIVEN a schedule written as an AWS user writes it
    app = App("azrate", database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}")

    @app.processor("every5", schedule="rate(5 minutes)")
    async def every5(message: Message, ctx: ProcessorContext) -> None:
        pass

    # WHEN the Functions app is built
    timer = bindings(functions_by_name(function_app(app))["every5"])["timer"]

    # THEN the host gets the same interval as a 6-field NCRONTAB
    assert (timer["type"], timer["schedule"]) == ("timerTrigger", "0 */5 * * * *")


def test_signatures_name_exactly_the_binding_args(tmp_path: Path) -> None:
    # GIVEN the generated functions
    fns = functions_by_name(function_app(three_processor_app(tmp_path)))
    for name, fn in fns.items():
        user_fn = fn.get_user_function()
        # WHEN the worker inspects them (signature follows __wrapped__)
        params = list(inspect.signature(user_fn).parameters)
        hints = typing.get_type_hints(user_fn)
        # THEN the parameters are exactly the input bindings, typed with azure.functions types
        inputs = [b for b in bindings(fn) if b != "$return"]
        assert params == inputs, name
        assert not hasattr(user_fn, "__wrapped__")
        assert inspect.iscoroutinefunction(user_fn)
        expected = {"msg": func.QueueMessage, "timer": func.TimerRequest, "req": func.HttpRequest}
        assert hints[params[0]] is expected[params[0]]


def test_function_names_are_valid_and_unique() -> None:
    # GIVEN processor names that clash once mapped or start with a digit
    taken: set[str] = set()
    names = [function_name(n, taken) for n in ["a.b", "a-b", "A_b", "1st"]]
    # THEN every name is a valid identifier, distinct case-insensitively
    assert names == ["a_b", "a_b_2", "A_b_3", "p_1st"]
    assert all(n.isidentifier() for n in names)


def test_servicebus_trigger_when_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the app setting APIX_AZURE_TRIGGER=servicebus
    monkeypatch.setenv("APIX_AZURE_TRIGGER", "servicebus")
    # WHEN the Functions app is built
    fns = functions_by_name(function_app(three_processor_app(tmp_path)))
    # THEN the queue processor is a Service Bus queue trigger on the apix queue name
    msg = bindings(fns["ingest_orders"])["msg"]
    assert msg["type"] == "serviceBusTrigger"
    assert (msg["queueName"], msg["connection"]) == ("raw.orders", "AzureWebJobsServiceBus")


def test_unknown_trigger_setting_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apix_core.errors import ConfigurationError

    monkeypatch.setenv("APIX_AZURE_TRIGGER", "eventhub")
    with pytest.raises(ConfigurationError, match="APIX_AZURE_TRIGGER"):
        function_app(three_processor_app(tmp_path))
