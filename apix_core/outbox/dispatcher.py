"""The dispatcher: committed outbox rows to their destinations, then marked sent."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from apix_core.outputs.base import OutboxRow, output_kind

if TYPE_CHECKING:
    from apix_core.transport.base import Producer


class SentMarker(Protocol):
    """Where dispatched rows are recorded as sent (the metadata store)."""

    async def mark_sent(self, rows: Sequence[OutboxRow]) -> None: ...


class Dispatcher:
    """Sends each row through its output kind, then marks the rows sent in ``store``."""

    def __init__(self, producer: Producer | None, store: SentMarker | None = None) -> None:
        self.producer = producer
        self.store = store

    async def dispatch(self, rows: Sequence[OutboxRow]) -> None:
        if not rows:
            return
        by_kind: dict[str, list[OutboxRow]] = defaultdict(list)
        for row in rows:
            by_kind[row.kind].append(row)
        for kind, kind_rows in by_kind.items():
            await output_kind(kind).dispatch(kind_rows, self.producer)
        await self.mark_sent(rows)

    async def mark_sent(self, rows: Sequence[OutboxRow]) -> None:
        if self.store is not None and rows:
            await self.store.mark_sent(rows)
