"""Schedules in the local runner: one round in drain mode, cron times (UTC) in forever mode."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apix_core import App, Message, ProcessorContext
from apix_core.app import schedule_queue
from apix_core.runtime import LocalRunner

# Many schedules: each tick is a separate send, so firing them all takes a while — longer than
# the runner's drain checks when the firing runs beside them instead of before them.
SCHEDULES = 40


async def test_drain_mode_runs_every_schedule_exactly_once(make_app: Any) -> None:
    # GIVEN an app with many schedule processors (hourly: no cron time falls in the run)
    app: App = make_app("ticks", tenant_id="acme")
    runs: Counter[str] = Counter()

    def register(i: int) -> None:
        @app.processor(f"tick-{i}", schedule="0 * * * *")
        async def tick(message: Message, ctx: ProcessorContext) -> None:
            runs[ctx.processor_name] += 1

    for i in range(SCHEDULES):
        register(i)

    # WHEN `apix run` drains (not --forever)
    stats = await LocalRunner(app).run()

    # THEN every schedule fired once and its processor ran once, before the run ended
    assert stats.schedule_ticks == SCHEDULES
    assert runs == Counter({f"tick-{i}": 1 for i in range(SCHEDULES)})
    assert stats.completed == SCHEDULES
    assert all(d.total == 0 for d in stats.depths.values())


async def test_drain_mode_waits_for_a_tick_whose_send_is_slow(
    make_app: Any, backend: str, database_url: str
) -> None:
    if backend != "postgres":
        pytest.skip("needs a second writer that blocks one insert, not the whole database")
    import asyncpg

    # GIVEN a schedule whose tick insert will block: another connection (say a second
    # `apix run` firing the same tick) holds uncommitted rows with the tick's ids for 0.5 s
    app: App = make_app("slow-tick", tenant_id="acme")
    runs: list[str] = []

    @app.processor("nightly", schedule="0 2 * * *")
    async def nightly(message: Message, ctx: ProcessorContext) -> None:
        runs.append(message.message_id)

    await app.start()
    spec = app.specs["nightly"]
    now = datetime.now(UTC)
    tick_ids = [
        app.timer_message(spec, now + timedelta(seconds=s)).message_id for s in range(-1, 6)
    ]
    other = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    held = other.transaction()
    await held.start()
    # The application role writes under the tenant policy: these rows name no tenant ('').
    await other.execute("SELECT set_config('apix.tenant_id', '', true)")
    await other.executemany(
        "INSERT INTO apix_queue_messages "
        "(queue, message_id, body, enqueued_at, visible_at, receive_count) "
        "VALUES ($1, $2, '{}', 0, 0, 0)",
        [(schedule_queue(spec), tick_id) for tick_id in tick_ids],
    )

    async def release_later() -> None:
        await asyncio.sleep(0.5)
        await held.rollback()
        await other.close()

    # WHEN the runner drains meanwhile
    stats, _ = await asyncio.gather(LocalRunner(app).run(), release_later())

    # THEN it did not stop before the tick was enqueued: the processor ran once
    assert stats.schedule_ticks == 1
    assert len(runs) == 1 and runs[0] in tick_ids
    assert stats.depths[schedule_queue(spec)].total == 0


async def test_drain_mode_schedule_feeds_the_pipeline_once(make_app: Any) -> None:
    # GIVEN a schedule that starts a two-stage pipeline
    app: App = make_app("daily", tenant_id="acme")
    seen: list[dict[str, Any]] = []

    @app.processor("kickoff", schedule="0 3 * * *", produces=["work"])
    def kickoff(message: Message) -> dict[str, Any]:
        return {"scheduled_time": message.payload["scheduled_time"]}

    @app.processor("worker", consumes="work")
    async def worker(message: Message, ctx: ProcessorContext) -> None:
        seen.append(message.payload)

    # WHEN the runner drains
    first = await LocalRunner(app).run()

    # THEN the tick went through both stages once
    assert first.schedule_ticks == 1
    assert len(seen) == 1
    assert first.completed == 2


async def test_forever_mode_follows_a_seconds_cron(make_app: Any) -> None:
    # GIVEN a schedule firing every second (six fields: NCRONTAB, seconds first)
    app: App = make_app("clock", tenant_id="acme")
    fired: list[str] = []

    @app.processor("every-second", schedule="* * * * * *")
    async def every_second(message: Message, ctx: ProcessorContext) -> None:
        fired.append(message.payload["scheduled_time"])

    # WHEN the runner runs "forever" for a bounded time
    stats = await LocalRunner(app, forever=True, max_seconds=2.6).run()

    # THEN the cron fired more than once, at distinct whole UTC seconds, each run once
    assert stats.schedule_ticks >= 2
    assert len(fired) >= 2
    assert len(set(fired)) == len(fired)
    assert all(t.endswith("+00:00") for t in fired)


async def test_forever_mode_reads_six_fields_seconds_first(make_app: Any) -> None:
    # GIVEN an NCRONTAB schedule firing every two seconds (seconds FIRST; read seconds-last it
    # would be every second of every even minute)
    app: App = make_app("ncrontab", tenant_id="acme")
    fired: list[str] = []

    @app.processor("every-two-seconds", schedule="*/2 * * * * *")
    async def every_two(message: Message, ctx: ProcessorContext) -> None:
        fired.append(message.payload["scheduled_time"])

    # WHEN the runner runs "forever" for a bounded time
    stats = await LocalRunner(app, forever=True, max_seconds=3.3).run()

    # THEN it fired once or twice, on even seconds, two seconds apart
    assert 1 <= stats.schedule_ticks <= 2
    times = [datetime.fromisoformat(t) for t in fired]
    assert all(t.second % 2 == 0 and t.microsecond == 0 for t in times)
    assert all((b - a).total_seconds() == 2 for a, b in itertools.pairwise(times))


def test_registration_rejects_a_bad_schedule_naming_the_processor() -> None:
    from apix_core.errors import ConfigurationError

    app = App("bad-schedules", tenant_id="acme")
    with pytest.raises(ConfigurationError, match=r"processor 'tick': schedule '1 2 3' has 3"):

        @app.processor("tick", schedule="1 2 3")
        def tick(message: Message) -> None:
            pass
