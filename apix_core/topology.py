"""The topology of an app: processors, their triggers, the queues between them, schedules and
routes — readable without starting anything (``apix graph``, deployment generators)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

from apix_core.errors import ConfigurationError
from apix_core.processor import ProcessorSpec

SCHEDULE_QUEUE_PREFIX = "apix.schedule."


def schedule_queue(spec: ProcessorSpec) -> str:
    """Locally, a schedule enqueues its ticks here, so ticks get retries and dead letters too."""
    return f"{SCHEDULE_QUEUE_PREFIX}{spec.name}"


class Topology:
    """Registered processors by name, with the rules that keep the graph well-formed: one
    consumer per queue, one processor per route."""

    def __init__(self) -> None:
        self.specs: dict[str, ProcessorSpec] = {}

    def add(self, spec: ProcessorSpec) -> None:
        if spec.name in self.specs:
            raise ConfigurationError(f"processor {spec.name!r} is registered twice")
        if spec.consumes:
            owner = self.consumer_of(spec.consumes)
            if owner is not None:
                raise ConfigurationError(
                    f"queue {spec.consumes!r} is already consumed by {owner.name!r}; "
                    "fan out by producing to two queues"
                )
        if spec.route:
            for other in self.specs.values():
                if other.route == spec.route:
                    raise ConfigurationError(
                        f"route {spec.route} is already taken by {other.name!r}"
                    )
        self.specs[spec.name] = spec

    def __iter__(self) -> Iterator[ProcessorSpec]:
        return iter(self.specs.values())

    def consumer_of(self, queue: str) -> ProcessorSpec | None:
        for spec in self.specs.values():
            if spec.consumes == queue or (spec.schedule and schedule_queue(spec) == queue):
                return spec
        return None

    def input_queue(self, spec: ProcessorSpec) -> str | None:
        if spec.consumes:
            return spec.consumes
        if spec.schedule:
            return schedule_queue(spec)
        return None

    def queues(self) -> list[str]:
        """Every queue the app consumes or produces."""
        names: set[str] = set()
        for spec in self.specs.values():
            if spec.consumes:
                names.add(spec.consumes)
            names.update(spec.produces)
        return sorted(names)

    def schedules(self) -> list[ProcessorSpec]:
        return [s for s in self.specs.values() if s.schedule]

    def routes(self) -> list[ProcessorSpec]:
        return [s for s in self.specs.values() if s.route]

    def mermaid(self) -> str:
        """The topology as a Mermaid flowchart.

        Every node id is a kind prefix and the name — ``q_`` queue, ``p_`` processor, ``t_``
        its schedule, ``h_`` its HTTP route (``q_orders``, ``p_normalize``, ``t_normalize``) —
        so a queue and a processor of the same name stay two nodes; a name that is not a plain
        word gets a stable hash suffix, so ``a-b`` and ``a.b`` stay two nodes too. Ids are only
        ``[A-Za-z0-9_]``, starting with a letter (never a Mermaid keyword such as ``end``).
        Labels are escaped (``"`` → ``#quot;``).
        """
        lines = ["flowchart LR"]

        def qid(q: str) -> str:
            return _mermaid_id("q_", q)

        for q in self.queues():
            lines.append(f'    {qid(q)}[("{_mermaid_label(q)}")]')
        for spec in self.specs.values():
            pid = _mermaid_id("p_", spec.name)
            lines.append(f'    {pid}["{_mermaid_label(spec.name)}"]')
            if spec.consumes:
                lines.append(f"    {qid(spec.consumes)} --> {pid}")
            elif spec.schedule:
                tid = _mermaid_id("t_", spec.name)
                lines.append(f'    {tid}(["⏱ {_mermaid_label(spec.schedule)}"]) --> {pid}')
            elif spec.route:
                hid = _mermaid_id("h_", spec.name)
                lines.append(f'    {hid}(["{_mermaid_label(str(spec.route))}"]) --> {pid}')
            for q in spec.produces:
                lines.append(f"    {pid} --> {qid(q)}")
        return "\n".join(lines)


def _mermaid_id(prefix: str, name: str) -> str:
    safe = re.sub(r"\W", "_", name, flags=re.ASCII)
    if safe == name:
        return prefix + name
    # Replacing characters is lossy ('a-b', 'a.b'): a hash of the real name keeps ids apart.
    return f"{prefix}{safe}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


_MERMAID_ESCAPES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;"}


def _mermaid_label(text: str) -> str:
    # Mermaid entity codes; '#' first, so the codes it inserts are not escaped again.
    return re.sub(r'[#"<>]', lambda m: _MERMAID_ESCAPES[m.group()], text)
