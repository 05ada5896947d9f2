"""Counting what an extraction does while it runs, and drawing it (``apix extract run``).

:class:`CountingExtractor` wraps the pipeline's extractor: every page it hands on adds to
:class:`RunStats` (pages, records) and samples the HTTP client's retries and rate-limit pauses
when the extractor has one. :class:`ProgressView` draws the stats live on stderr.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from apix_core.extract.base import BaseExtractor, Inputs, Record


@dataclass
class RunStats:
    """Counters of one run; ``retries`` and ``rate_limit_waits`` summed over HTTP clients."""

    started: float = field(default_factory=time.monotonic)
    pages: int = 0
    records: int = 0
    _clients: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds

    @property
    def retries(self) -> int:
        return sum(r for r, _ in self._clients.values())

    @property
    def rate_limit_waits(self) -> int:
        return sum(w for _, w in self._clients.values())

    def page(self, records: int, extractor: Any) -> None:
        self.pages += 1
        self.records += records
        self.sample(extractor)

    def sample(self, extractor: Any) -> None:
        # Duck-typed: the HTTP extractor keeps its client (retrier and shared budget) there.
        client = getattr(extractor, "last_client", None)
        if client is None:
            return
        retries = getattr(getattr(client, "retrier", None), "retries", 0)
        waits = getattr(getattr(client, "budget", None), "pauses", 0)
        self._clients[id(client)] = (int(retries), int(waits))


class CountingExtractor(BaseExtractor):
    """``inner``, counting each page into ``stats`` (keeps ``iter_pages`` for exact resume)."""

    def __init__(self, inner: BaseExtractor, stats: RunStats) -> None:
        self.inner = inner
        self.stats = stats
        if getattr(inner, "iter_pages", None) is not None:
            self.iter_pages = self._iter_pages

    async def extract_stream(self, inputs: Inputs = None) -> AsyncIterator[list[Record]]:
        async for batch in self.inner.extract_stream(inputs):
            self.stats.page(len(batch), self.inner)
            yield batch

    async def _iter_pages(self, item: Any, resume: Any = None) -> AsyncIterator[Any]:
        async for page in self.inner.iter_pages(item, resume=resume):  # type: ignore[attr-defined]
            self.stats.page(len(page.records), self.inner)
            yield page

    async def close(self) -> None:
        self.stats.sample(self.inner)
        await self.inner.close()


class ProgressView:
    """A live line on stderr: pages, records, records/s, retries, rate-limit waits."""

    def __init__(self, label: str, stats: RunStats, *, enabled: bool) -> None:
        self.label = label
        self.stats = stats
        self.enabled = enabled
        self._live: Any = None

    def _render(self) -> Any:
        from rich.text import Text

        s = self.stats
        return Text.from_markup(
            f"[bold]{self.label}[/]  pages {s.pages}  records {s.records}  "
            f"{s.records_per_second:,.0f} records/s  retries {s.retries}  "
            f"rate-limit waits {s.rate_limit_waits}  {s.seconds:.1f}s"
        )

    def __enter__(self) -> ProgressView:
        if self.enabled:
            from rich.live import Live

            from apix_core.cli._common import console

            self._live = Live(
                get_renderable=self._render,
                console=console(stderr=True),
                refresh_per_second=4,
                transient=True,
            )
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None
