"""``LocalRunner``: every processor of an app as workers over the local queues, plus schedules."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from apix_core.app import App
from apix_core.constants import TENANT_ATTRIBUTE
from apix_core.errors import FileOutputError
from apix_core.outbox import Dispatcher, stale_rows
from apix_core.runtime.worker import QueueStats, QueueWorker
from apix_core.transport.base import OutgoingMessage, QueueAdmin, QueueDepth

_log = logging.getLogger("apix.runner")


@dataclass
class RunStats:
    queues: dict[str, QueueStats] = field(default_factory=dict)
    depths: dict[str, QueueDepth] = field(default_factory=dict)
    schedule_ticks: int = 0
    started_at: float = 0.0

    @property
    def completed(self) -> int:
        return sum(s.completed for s in self.queues.values())

    @property
    def dead_lettered(self) -> int:
        return sum(s.dead_lettered for s in self.queues.values())


class LocalRunner:
    """Runs an app locally until its queues drain (or forever).

    Schedules: with ``forever`` each schedule fires at its cron times (evaluated in UTC);
    otherwise every schedule fires once at start, before the first drain check (so ``apix run``
    of a scheduled pipeline does one round and stops).
    """

    #: Seconds between drain checks (cheap: flags, then a depth query only when idle).
    DRAIN_CHECK = 0.02

    def __init__(
        self,
        app: App,
        *,
        forever: bool = False,
        fire_schedules: bool = True,
        on_progress: Callable[[RunStats], None] | None = None,
        progress_interval: float = 0.25,
        max_seconds: float | None = None,
        sweep_outbox_after: float | None = None,
    ) -> None:
        self.app = app
        self.forever = forever
        self.fire_schedules = fire_schedules
        self.on_progress = on_progress
        self.progress_interval = progress_interval
        self.max_seconds = max_seconds
        self.sweep_after = sweep_outbox_after
        self.stats = RunStats()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> RunStats:
        app = self.app
        await app.start()
        loop = asyncio.get_running_loop()
        self.stats.started_at = loop.time()
        await self.sweep_outbox()
        workers = [QueueWorker(app, spec) for spec in app.specs.values() if app.input_queue(spec)]
        for w in workers:
            self.stats.queues[w.queue] = w.stats
        tasks = [asyncio.create_task(w.run(self._stop), name=f"apix:{w.queue}") for w in workers]
        if self.fire_schedules and self.forever:
            tasks.append(asyncio.create_task(self._schedules(), name="apix:schedules"))
        try:
            if self.fire_schedules and not self.forever:
                # Drain mode: every tick is enqueued before the first drain check. Fired from a
                # task, the run could see empty queues and stop before the tick existed.
                await self._fire_all_once()
            await self._supervise(workers, tasks)
        finally:
            self._stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._refresh_depths()
            if self.on_progress:
                self.on_progress(self.stats)
        return self.stats

    async def _supervise(self, workers: list[QueueWorker], tasks: list[asyncio.Task[None]]) -> None:
        loop = asyncio.get_running_loop()
        quiet_rounds = 0
        next_progress = 0.0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.DRAIN_CHECK)
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            now = loop.time()
            if self.on_progress and now >= next_progress:
                await self._refresh_depths()
                self.on_progress(self.stats)
                next_progress = now + self.progress_interval
            if self.max_seconds is not None and now - self.stats.started_at > self.max_seconds:
                break
            if self.forever:
                continue
            # Cheap flags first; the depth query only once every worker has found its queue
            # empty. Two quiet checks in a row: a worker may be between receive and settle.
            idle = all(w.empty_polls > 0 and not w.busy for w in workers)
            if idle:
                await self._refresh_depths()
                idle = all(d.total == 0 for d in self.stats.depths.values())
            quiet_rounds = quiet_rounds + 1 if idle else 0
            if quiet_rounds >= 2:
                break

    async def _refresh_depths(self) -> None:
        transport = self.app.transport
        if not isinstance(transport, QueueAdmin):
            return  # depth is an optional capability
        for spec in self.app.specs.values():
            q = self.app.input_queue(spec)
            if q:
                self.stats.depths[q] = await transport.depth(q)

    async def sweep_outbox(self) -> int:
        """Dispatch outbox rows left unsent by a crashed process (safe: ids are deterministic)."""
        store = self.app.store
        if store is None:
            return 0
        after = (
            self.sweep_after
            if self.sweep_after is not None
            else self.app.settings.visibility_timeout
        )
        rows = await stale_rows(store.db, after)
        if not rows:
            return 0
        dispatcher = Dispatcher(self.app.transport, store)
        sent = len(rows)
        try:
            await dispatcher.dispatch(rows)
        except FileOutputError:
            # A file row that can never be written (unsafe path, bad pattern) must not stop
            # every run: send the rows one by one and leave the bad ones unsent.
            sent = 0
            for row in rows:
                try:
                    await dispatcher.dispatch([row])
                    sent += 1
                except FileOutputError as exc:
                    _log.error(
                        "outbox row cannot be dispatched",
                        extra={"outbox_id": row.id, "error_code": exc.code, "error": str(exc)},
                    )
        _log.info("re-dispatched stale outbox rows", extra={"count": sent})
        return sent

    async def _fire_all_once(self) -> None:
        now = datetime.now(UTC)
        for spec in self.app.specs.values():
            if spec.schedule:
                await self._fire(spec, now)

    async def _schedules(self) -> None:
        """Fire each schedule at its times (``apix_core.schedule``: NCRONTAB seconds first), UTC."""
        from apix_core.schedule import Schedule

        app = self.app
        parsed = {s.name: Schedule.parse(s.schedule) for s in app.specs.values() if s.schedule}
        if not parsed:
            return
        now = datetime.now(UTC)
        nexts = {name: schedule.next_after(now) for name, schedule in parsed.items()}
        while not self._stop.is_set():
            name, when = min(nexts.items(), key=lambda kv: kv[1])
            delay = (when - datetime.now(UTC)).total_seconds()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                    return
                except TimeoutError:
                    pass
            await self._fire(app.specs[name], when)
            nexts[name] = parsed[name].next_after(when)

    async def _fire(self, spec: object, when: datetime) -> None:
        from apix_core.app import schedule_queue
        from apix_core.processor import ProcessorSpec

        assert isinstance(spec, ProcessorSpec)
        msg = self.app.timer_message(spec, when)
        assert self.app.transport is not None
        await self.app.transport.send(
            schedule_queue(spec),
            OutgoingMessage(msg.message_id, msg.to_json(), 0.0, {TENANT_ATTRIBUTE: msg.tenant_id}),
        )
        self.stats.schedule_ticks += 1
