"""Output batching (``OutputBatchConfig``): records are buffered and flushed at ``batch_size``
records, ``max_batch_bytes`` encoded bytes or ``flush_interval`` seconds, whichever comes first.

:meth:`BufferedOutput.write_stream` pulls the next input batch only once the previous one is
buffered (and flushed when due), so memory holds at most one input batch plus one output batch
however long the stream is: the fetching side waits for the writing side (backpressure). A
stalled stream still flushes what it holds once ``flush_interval`` has passed.
"""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from collections.abc import AsyncIterable, Callable
from typing import Any

from apix_core.extract.base import BaseOutput, OutputResult, Record
from apix_core.extract.config import OutputBatchConfig

_encoder: Callable[[Any], bytes] | None = None


def encode_record(record: Any) -> bytes:
    """One record as compact JSON bytes (orjson when installed, else the core's encoder)."""
    global _encoder
    if _encoder is None:
        try:
            import orjson

            _encoder = orjson.dumps
        except ImportError:  # the [extract] extra brings orjson; the core encoder is the fallback
            from apix_core.message import compact_encoder

            encode = compact_encoder(ensure_ascii=False)
            _encoder = lambda value: encode(value).encode()  # noqa: E731
    return _encoder(record)


class BufferedOutput(BaseOutput):
    """A :class:`BaseOutput` that buffers encoded records and writes them batch by batch.

    Subclasses implement :meth:`_accept` (take records into the buffer, returning their encoded
    size) and :meth:`_flush` (make the buffer durable, returning what was written). After
    :meth:`flush` returns, everything accepted so far is durable: the point where a pipeline may
    commit its watermark.
    """

    def __init__(self, batch: OutputBatchConfig | dict[str, Any] | None = None) -> None:
        self.batch = (
            batch
            if isinstance(batch, OutputBatchConfig)
            else OutputBatchConfig.model_validate(batch or {})
        )
        self.pending_records = 0
        self.pending_bytes = 0
        self._first_at: float | None = None
        self.result = OutputResult()

    @abstractmethod
    def _accept(self, records: list[Record]) -> int:
        """Take ``records`` into the buffer; their encoded size in bytes."""

    @abstractmethod
    async def _flush(self) -> OutputResult:
        """Write the buffer durably and empty it."""

    def add(self, records: list[Record]) -> bool:
        """Buffer ``records``; whether a flush is due."""
        if records:
            if self._first_at is None:
                self._first_at = time.monotonic()
            self.pending_bytes += self._accept(records)
            self.pending_records += len(records)
        return self.flush_due()

    def flush_due(self) -> bool:
        if not self.pending_records:
            return False
        b = self.batch
        return (
            self.pending_records >= b.batch_size
            or self.pending_bytes >= b.max_batch_bytes
            or self.seconds_to_deadline() <= 0
        )

    def seconds_to_deadline(self) -> float:
        """Seconds until ``flush_interval`` forces a flush (infinite when nothing is held)."""
        if self._first_at is None:
            return float("inf")
        return self._first_at + self.batch.flush_interval - time.monotonic()

    async def flush(self) -> OutputResult:
        """Write what is buffered; what this flush wrote."""
        if not self.pending_records:
            return OutputResult()
        written = await self._flush()
        self.pending_records = self.pending_bytes = 0
        self._first_at = None
        self.result = self.result.merge(written)
        return written

    async def write(self, records: list[Record]) -> OutputResult:
        """Write ``records`` now (durable on return), in output batches of the configured
        size."""
        result = await self.feed(records)
        return result.merge(await self.flush())

    async def feed(self, records: list[Record]) -> OutputResult:
        """Buffer ``records``, flushing whenever a batch is due; what those flushes wrote.

        Batches run across calls: a page larger than the room left in the batch is split and
        a smaller one waits for the next, so every batch but the last holds exactly
        ``batch_size`` records (unless ``max_batch_bytes`` or ``flush_interval`` comes first).
        What is left stays buffered for :meth:`flush` or :meth:`close`."""
        result = OutputResult()
        start, total = 0, len(records)
        while start < total:
            room = max(self.batch.batch_size - self.pending_records, 1)
            chunk = records[start : start + room] if start or room < total else records
            start += len(chunk)
            if self.add(chunk):
                result = result.merge(await self.flush())
        return result

    async def write_stream(self, batches: AsyncIterable[list[Record]]) -> OutputResult:
        result = OutputResult()
        iterator = batches.__aiter__()
        pending: asyncio.Future[list[Record]] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(iterator.__anext__())
                wait = self.seconds_to_deadline()
                if wait != float("inf"):
                    # A stalled source must not hold records past flush_interval.
                    done, _ = await asyncio.wait({pending}, timeout=max(wait, 0.0))
                    if not done:
                        result = result.merge(await self.flush())
                        continue
                try:
                    batch = await pending
                except StopAsyncIteration:
                    pending = None
                    break
                pending = None
                result = result.merge(await self.feed(batch))
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
        return result.merge(await self.flush())

    async def close(self) -> None:
        await self.flush()
