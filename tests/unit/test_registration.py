"""Registration checks and the Mermaid graph: what an App knows before it touches a store."""

from __future__ import annotations

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
    # GIVEN names that differ only in punctuation, and a queue name with quotes and '#'
    app = App("graph")

    @app.processor("split.a", consumes="in", produces=["a-b", "a.b"])
    def split_a(message: Message) -> None:
        return None

    @app.processor("split-a", consumes='say "hi" #1', produces=["a_b"])
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
    # AND quotes and '#' are escaped as Mermaid entity codes, not left to break the label
    assert '("say #quot;hi#quot; #35;1")' in graph
    assert 'say "hi"' not in graph
    # ids are stable across calls
    assert app.mermaid() == graph
