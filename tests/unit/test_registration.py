"""Registration checks and the Mermaid graph: what an App knows before it touches a store."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest

from apix_core import App, ConfigurationError, Message, ProcessorInterface


def test_class_processor_with_an_unusable_signature_is_refused_at_registration() -> None:
    class NoMessage(ProcessorInterface):
        def process(self) -> None:  # type: ignore[override]
            return None

    class TooMany(ProcessorInterface):
        def process(self, message: Message, context: Any, extra: Any) -> None:  # type: ignore[override]
            return None

    class NoProcess(ProcessorInterface):
        pass

    app = App("bad-signatures")
    for impl in (NoMessage(), TooMany(), NoProcess()):
        with pytest.raises(ConfigurationError, match=r"process"):
            app.register(impl, type(impl).__name__, consumes=f"q-{type(impl).__name__}")
    assert app.specs == {}


def _node_ids(graph: str) -> dict[str, str]:
    """label -> node id for every node definition of a Mermaid flowchart."""
    found = re.findall(r'^\s+(\w+)[\[(]+"([^"]*)"', graph, flags=re.MULTILINE)
    return {label: node for node, label in found}


def test_mermaid_keeps_similar_names_apart_and_escapes_labels() -> None:
    # GIVEN names that differ only in punctuation
    app = App("graph")

    @app.processor("split.a", consumes="in", produces=["a-b", "a.b"])
    def split_a(message: Message) -> None:
        return None

    @app.processor("split-a", consumes="say-hi", produces=["a_b"])
    def split_b(message: Message) -> None:
        return None

    # WHEN drawn
    graph = app.mermaid()
    nodes = _node_ids(graph)

    # THEN every queue and processor has its own node id
    for label in ("a-b", "a.b", "a_b", "split.a", "split-a", "in"):
        assert label in nodes, (label, graph)
    assert len(set(nodes.values())) == len(nodes)
    # plain names keep readable ids
    assert nodes["a_b"] == "q_a_b" and nodes["in"] == "q_in"
    # the edges use the right ids
    assert f"{nodes['split.a']} --> {nodes['a-b']}" in graph
    assert f"{nodes['split.a']} --> {nodes['a.b']}" in graph
    assert f"{nodes['split-a']} --> {nodes['a_b']}" in graph
    # AND quotes and '#' (names cannot hold them; schedules' labels may) are escaped as
    # Mermaid entity codes, not left to break the label
    from apix_core.topology import _mermaid_label

    assert _mermaid_label('say "hi" #1') == "say #quot;hi#quot; #35;1"
    # ids are stable across calls
    assert app.mermaid() == graph


def test_mermaid_ids_are_kind_and_name_for_every_node() -> None:
    # GIVEN queues and processors sharing names, a schedule and a route, plain and odd names
    app = App("graph-ids")

    @app.processor("orders", consumes="orders", produces=["end"])
    def orders(message: Message) -> None:
        return None

    @app.processor("end", schedule="rate(5 minutes)", produces=["orders.v2"])
    def end(message: Message) -> None:
        return None

    @app.processor("api-in", route="POST /orders/{order_id}", produces=["orders"])
    def api(message: Message) -> None:
        return None

    # WHEN drawn
    graph = app.mermaid()
    lines = {line.strip() for line in graph.splitlines()[1:]}
    ids = {i for line in lines for i in re.findall(r"^(\w+)|--> (\w+)$", line)[0] if i}

    # THEN each node's id is its kind prefix and its name: same names, distinct nodes
    assert "q_orders --> p_orders" in lines and "p_orders --> q_end" in lines
    assert 't_end(["⏱ rate(5 minutes)"]) --> p_end' in lines
    # an odd name keeps one hash suffix across its processor and trigger nodes
    suffix = hashlib.sha256(b"api-in").hexdigest()[:8]
    assert f'h_api_in_{suffix}(["POST /orders/{{order_id}}"]) --> p_api_in_{suffix}' in lines
    assert f"p_api_in_{suffix} --> q_orders" in lines
    # AND every id is safe for Mermaid: ASCII word characters, starting with a letter
    assert {"q_orders", "p_orders", "q_end", "p_end", "t_end"} <= ids
    for node_id in ids:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", node_id), node_id
        assert node_id != "end"


def test_message_type_names_are_case_insensitive() -> None:
    # GIVEN the seeds' spelling of a message type
    # THEN it is accepted, by the constructor and by the envelope parser
    from apix_core.message import MessageType

    assert Message(tenant_id="acme", type="QUEUE").type is MessageType.QUEUE  # type: ignore[arg-type]
    assert Message(tenant_id="acme", type="Entity").type is MessageType.ENTITY  # type: ignore[arg-type]
    body = '{"apix": 1, "message_id": "m", "tenant_id": "acme", "type": "TIMER"}'
    assert Message.create_from_queue_data(body).type is MessageType.TIMER
    with pytest.raises(ValueError):
        Message(tenant_id="acme", type="FAX")  # type: ignore[arg-type]


def test_processors_registered_with_one_config_object_do_not_share_it() -> None:
    # GIVEN one ProcessorConfig given to two processors with different options
    from apix_core import ProcessorConfig

    shared = ProcessorConfig(max_attempts=3)
    app = App("shared-config")
    app.register(lambda m: None, "first", consumes="q1", config=shared)
    app.register(lambda m: None, "second", consumes="q2", config=shared, max_attempts=7)

    # THEN each spec owns its copy: names and options do not leak between them
    first, second = app.specs["first"].config, app.specs["second"].config
    assert first is not second and first is not shared
    assert (first.processor_name, first.max_attempts) == ("first", 3)
    assert (second.processor_name, second.max_attempts) == ("second", 7)
    assert (shared.processor_name, shared.max_attempts) == ("", 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"route": "FETCH customers"}, "method 'FETCH' is not one of"),
        ({"route": "GET /orders/../admin"}, "bad segment '..'"),
        ({"route": "GET /orders/{id"}, "bad segment '{id'"),
        ({"route": "POST /a b"}, "bad segment 'a b'"),
        ({"route": "GET /x/{id}/{id}"}, "each name once"),
        ({"consumes": "../q"}, "queue name '../q' must be 1-100"),
        ({"consumes": ".hidden"}, "queue name '.hidden'"),
        ({"consumes": "a..b"}, "queue name 'a..b'"),
        ({"consumes": "q" * 101}, "must be 1-100"),
        ({"consumes": "in", "produces": ["out/evil"]}, "queue name 'out/evil'"),
        ({"consumes": "in", "produces": "sp ace"}, "queue name 'sp ace'"),
    ],
)
def test_routes_and_queue_names_are_validated_naming_the_processor(
    kwargs: dict[str, Any], message: str
) -> None:
    app = App("strict")
    with pytest.raises(ConfigurationError, match="processor 'p': .*" + re.escape(message)):
        app.register(lambda m: None, "p", **kwargs)
    assert app.specs == {}


@pytest.mark.parametrize(
    "route",
    [
        "POST /orders",
        "GET /orders/{id}",
        "get /a/b-c_d.e~f/{x}/",
        "/hooks",
        "DELETE /",
        "HEAD /v1:x@y",
    ],
)
def test_good_routes_are_accepted(route: str) -> None:
    app = App("routes")
    spec = app.register(lambda m: None, "p", route=route)
    assert spec.route is not None and spec.route.path.startswith("/")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"consume": "orders"},
            "unknown processor option 'consume' for 'p'; did you mean consumes=?",
        ),
        ({"consumes": "orders", "produce": ["x"]}, "did you mean produces=?"),
        ({"consumes": "orders", "max_attempt": 3}, "did you mean max_attempts=?"),
        ({"consumes": "orders", "type": "QUEUE"}, "the trigger picks the kind of processor"),
    ],
)
def test_a_misspelt_option_names_the_option_meant(options: dict[str, Any], expected: str) -> None:
    # GIVEN an app  WHEN a processor is registered with a misspelt keyword
    app = App("typos", tenant_id="acme")
    with pytest.raises(ConfigurationError) as caught:

        @app.processor("p", **options)
        async def p(message: Message, ctx: Any) -> None: ...

    # THEN the error names the option meant (a misspelt trigger is not "no trigger")
    assert expected in str(caught.value)
