"""A queue worker: receive a batch, run the consumer, settle every outcome on the transport."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from apix_core.app import App
from apix_core.errors import ApixError, ConfigurationError
from apix_core.processing.gc_tuning import batch_gc
from apix_core.processing.outcomes import OutcomeKind
from apix_core.processor import ProcessorSpec

_log = logging.getLogger("apix.worker")


@dataclass
class QueueStats:
    received: int = 0
    completed: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    errors: list[str] = field(default_factory=list)


class QueueWorker:
    """Consumes one queue of an app.

    :meth:`run` outlives failures a retry may fix, and ends with a
    :class:`~apix_core.errors.ConfigurationError` (a queue that does not exist...), which no
    retry fixes."""

    def __init__(
        self,
        app: App,
        spec: ProcessorSpec,
        *,
        batch_size: int | None = None,
        visibility_timeout: float | None = None,
    ) -> None:
        queue = app.input_queue(spec)
        if queue is None:
            raise ValueError(f"processor {spec.name!r} has no queue")
        self.app = app
        self.spec = spec
        self.queue = queue
        self.batch_size = batch_size or app.settings.batch_size
        self.visibility_timeout = visibility_timeout
        self.stats = QueueStats()
        self.busy = False
        #: Consecutive receives that found nothing (the runner's drain check reads it).
        self.empty_polls = 0

    async def run_once(self) -> int:
        """Process at most one batch; returns how many deliveries it received."""
        transport = self.app.consumer()
        self.busy = True
        try:
            # From receive to settle: the whole life of the batch's objects (gc_tuning).
            with batch_gc():
                deliveries = await transport.receive(
                    self.queue, self.batch_size, self.visibility_timeout
                )
                if not deliveries:
                    return 0
                outcomes = await self.app.process(self.queue, deliveries)
                await self.app.settle(self.queue, outcomes)
        finally:
            self.busy = False
        s = self.stats
        s.received += len(deliveries)
        for o in outcomes:
            if o.kind is OutcomeKind.COMPLETED:
                s.completed += 1
            elif o.kind is OutcomeKind.DUPLICATE:
                s.duplicates += 1
            elif o.kind is OutcomeKind.RETRY:
                s.retried += 1
            else:
                s.dead_lettered += 1
                if o.error is not None:
                    s.errors.append(o.error.code)
        return len(deliveries)

    async def run(
        self, stop: asyncio.Event, poll_interval: float = 0.05, linger: float = 0.01
    ) -> None:
        """Loop until ``stop``. After a partial batch, wait ``linger`` seconds so the next
        receive takes a fuller batch: each transaction costs about the same whatever its size.
        When the queue is empty, wait for the transport's signal (or poll, backing off)."""
        # Raised for the whole loop, not per batch: lowering it between batches would start a
        # collection at once, while the last batch's objects are still referenced.
        with batch_gc():
            await self._loop(stop, poll_interval, linger)

    async def _loop(self, stop: asyncio.Event, poll_interval: float, linger: float) -> None:
        transport = self.app.consumer()
        idle = poll_interval
        while not stop.is_set():
            try:
                n = await self.run_once()
            except ConfigurationError:
                # A missing queue, no credentials...: the user's to fix, and no retry will. The
                # error ends the worker, and its caller reports it (`apix` as one line).
                raise
            except ApixError as exc:
                # A typed failure (a transport outage...) is not a bug: one line, no traceback;
                # back off and retry.
                _log.error(
                    "worker iteration failed: %s",
                    exc,
                    extra={"queue": self.queue, "error_code": exc.code},
                )
                n = -1
            except Exception:
                # Anything else may be a bug: keep its traceback, but a database outage must
                # not kill the worker either (back off and retry).
                _log.exception("worker iteration failed", extra={"queue": self.queue})
                n = -1
            if n > 0:
                self.empty_polls = 0
                idle = poll_interval
                await asyncio.sleep(0 if n >= self.batch_size else linger)
                continue
            if n == 0:
                self.empty_polls += 1
                idle = min(idle * 2, 0.25)
            else:
                idle = min(max(idle * 2, 0.5), 5.0)
            waiter = asyncio.ensure_future(transport.wait_for_messages(self.queue, idle))
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in (waiter, stopper):
                task.cancel()
            await asyncio.gather(waiter, stopper, return_exceptions=True)
