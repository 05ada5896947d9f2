"""What the user guide promises for tests: schedules fire only when asked to."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from apix_core import App, Message, OutcomeKind
from apix_core.runtime import LocalRunner
from apix_core.testing import TestApp


def scheduled_app(runs: list[str], **kwargs: Any) -> App:
    app = App("scheduled", tenant_id="acme", **kwargs)

    @app.processor("every-second", schedule="* * * * * *")
    def every_second(message: Message) -> None:
        runs.append(message.payload["scheduled_time"])

    return app


async def test_testapp_never_fires_a_schedule_by_itself(database_url: str) -> None:
    runs: list[str] = []
    async with TestApp(scheduled_app(runs), database_url=database_url) as t:
        # WHEN the queues are drained (longer than the schedule's period)
        await t.drain(max_seconds=1.5)
        assert runs == []

        # THEN only an explicit tick runs it, once per tick time
        when = datetime(2024, 5, 1, 3, tzinfo=UTC)
        assert (await t.tick("every-second", when=when)).kind is OutcomeKind.COMPLETED
        assert (await t.tick("every-second", when=when)).kind is OutcomeKind.DUPLICATE
        assert runs == [when.isoformat()]


async def test_local_runner_without_schedules_fires_none(make_app: Any) -> None:
    runs: list[str] = []
    app: App = make_app("no-ticks", tenant_id="acme")

    @app.processor("every-second", schedule="* * * * * *")
    def every_second(message: Message) -> None:
        runs.append(message.payload["scheduled_time"])

    # WHEN the runner drains, and runs "forever" for a while, with fire_schedules=False
    drained = await LocalRunner(app, fire_schedules=False).run()
    forever = await LocalRunner(app, fire_schedules=False, forever=True, max_seconds=1.5).run()

    # THEN no tick fired
    assert drained.schedule_ticks == forever.schedule_ticks == 0
    assert runs == []
