"""``apix_core.testing.TestApp``: a user's app driven in-process on a throwaway real store."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from apix_core import App, Message, ProcessorContext
from apix_core.errors import ConfigurationError, PermanentError
from apix_core.processing import OutcomeKind
from apix_core.testing import TestApp


def shop_app() -> App:
    """A user's module-level app: two queue stages, an HTTP route and a schedule."""
    app = App("shop")

    @app.processor("normalize", consumes="raw", produces=["orders"])
    async def normalize(message: Message, ctx: ProcessorContext) -> dict[str, Any]:
        if message.payload.get("bad"):
            raise PermanentError("order without an id")
        order_id = str(message.payload["id"])
        ctx.persist_entity(order_id, "order", "shop", message.payload, state="received")
        await ctx.state.put("last_order", order_id)
        return {"id": order_id, "qty": message.payload.get("qty", 1)}

    @app.processor("book", consumes="orders")
    async def book(message: Message, ctx: ProcessorContext) -> None:
        ctx.persist_entity(f"booking-{message.payload['id']}", "booking", "shop", message.payload)

    @app.processor("intake", route="POST /orders", produces=["raw"])
    def intake(message: Message) -> dict[str, Any]:
        return dict(message.payload)

    @app.processor("nightly", schedule="0 2 * * *")
    def nightly(message: Message) -> None:
        pass

    return app


@pytest.fixture
def in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cwd whose ./.apix would be the default store, and no APIX_HOME to redirect it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("APIX_HOME", raising=False)
    return tmp_path


async def test_deliver_runs_one_stage_and_its_outputs_wait_on_the_next_queue(
    in_tmp_cwd: Path,
) -> None:
    # GIVEN the user's app under test for tenant acme
    async with TestApp(shop_app(), tenant_id="acme") as t:
        # WHEN one order is delivered to the first stage (by queue, then by processor name)
        first = await t.deliver("raw", {"id": "A-1", "qty": 2}, message_id="m-1")
        second = await t.deliver("normalize", {"id": "A-2"})

        # THEN both completed, their outputs wait on `orders`, the entity and state are written
        assert first.kind is OutcomeKind.COMPLETED
        assert second.kind is OutcomeKind.COMPLETED
        waiting = await t.messages("orders")
        assert [m.payload for m in waiting] == [{"id": "A-1", "qty": 2}, {"id": "A-2", "qty": 1}]
        assert all(m.tenant_id == "acme" and m.correlation_id for m in waiting)
        assert await t.messages("raw") == []  # delivered directly, never queued
        assert [e.external_id for e in await t.entities("order")] != []
        assert await t.state("normalize", "last_order") == "A-2"
        # the same message again is a duplicate with no second effect
        again = await t.deliver("raw", {"id": "A-1", "qty": 2}, message_id="m-1")
        assert again.kind is OutcomeKind.DUPLICATE
        assert len(await t.messages("orders")) == 2

        # WHEN the queues are drained
        stats = await t.drain()

        # THEN the second stage consumed them and everything is recorded
        assert stats.completed == 2
        assert await t.messages("orders") == []
        bookings = await t.entities("booking")
        assert sorted(e.external_id for e in bookings) == ["booking-A-1", "booking-A-2"]
        order = next(e for e in await t.entities("order") if e.external_id == "A-1")
        assert [tr.to_state for tr in await t.transitions(order.id)] == ["received"]

    # THEN nothing was written under the cwd
    assert not (in_tmp_cwd / ".apix").exists()


async def test_a_permanent_error_is_dead_lettered_and_recorded(in_tmp_cwd: Path) -> None:
    async with TestApp(shop_app(), tenant_id="acme") as t:
        # WHEN a bad order is delivered
        outcome = await t.deliver("raw", {"bad": True}, message_id="bad-1")

        # THEN it is dead-lettered at once, visible with its error, and nothing was sent on
        assert outcome.kind is OutcomeKind.DEAD_LETTER
        assert outcome.error is not None and outcome.error.code == "VALIDATION_ERROR"
        [dead] = await t.dead_letters()
        assert (dead.message_id, dead.queue, dead.processor) == ("bad-1", "raw", "normalize")
        assert dead.error_code == "VALIDATION_ERROR"
        assert [e.message_id for e in await t.errors("normalize")] == ["bad-1"]
        assert await t.messages("orders") == []
        assert await t.entities() == []


async def test_dead_letters_and_inspection_are_scoped_to_the_tenant(in_tmp_cwd: Path) -> None:
    async with TestApp(shop_app(), tenant_id="acme") as t:
        # WHEN another tenant's messages are delivered, good and bad
        await t.deliver("raw", {"id": "O-1"}, tenant_id="other")
        await t.deliver("raw", {"bad": True}, tenant_id="other")

        # THEN acme sees none of it
        assert await t.dead_letters() == []
        assert await t.messages("orders") == []
        assert await t.entities() == []


async def test_drain_settles_a_queued_failure_as_a_dead_letter(in_tmp_cwd: Path) -> None:
    async with TestApp(shop_app(), tenant_id="acme") as t:
        # GIVEN a good and a bad message really on the queue
        await t.send("raw", {"id": "Q-1"})
        await t.send("raw", {"bad": True}, message_id="bad-q")

        # WHEN drained
        stats = await t.drain()

        # THEN the bad one was dead-lettered by the real settlement, the good one went through
        assert (stats.completed, stats.dead_lettered) == (2, 1)
        assert [d.message_id for d in await t.dead_letters("raw")] == ["bad-q"]
        assert all(d.total == 0 for d in stats.depths.values())


async def test_request_answers_202_and_queues_the_output(in_tmp_cwd: Path) -> None:
    async with TestApp(shop_app(), tenant_id="acme") as t:
        # WHEN an order is posted (tenant header filled in by the harness)
        response = await t.request("POST", "/orders", json={"id": "H-1"})

        # THEN it is accepted with its message id, and its output waits on `raw`
        assert response.status_code == 202
        assert response.body["status"] == "completed"
        [queued] = await t.messages("raw")
        assert queued.payload == {"id": "H-1"}
        assert response.body["message_id"]

        # and an unknown route is a 404, not an exception
        assert (await t.request("GET", "/nowhere")).status_code == 404


async def test_tick_is_deterministic_and_schedules_do_not_fire_by_themselves(
    in_tmp_cwd: Path,
) -> None:
    when = datetime(2024, 5, 1, 2, 0, tzinfo=UTC)
    async with TestApp(shop_app(), tenant_id="acme") as t:
        # WHEN the schedule ticks twice for the same time, then for another time
        first = await t.tick("nightly", when)
        again = await t.tick("nightly", when.replace(microsecond=5))
        other = await t.tick("nightly", when.replace(hour=3))

        # THEN the second is the same tick (same id, DUPLICATE), the third a new one
        assert first.kind is OutcomeKind.COMPLETED
        assert again.kind is OutcomeKind.DUPLICATE
        assert first.message is not None and again.message is not None
        assert first.message.message_id == again.message.message_id
        assert first.message.payload["scheduled_time"] == "2024-05-01T02:00:00+00:00"
        assert other.kind is OutcomeKind.COMPLETED

        # and a drain fires no schedule
        stats = await t.drain()
        assert stats.schedule_ticks == 0

        with pytest.raises(ConfigurationError, match="no schedule"):
            await t.tick("normalize")


async def test_the_users_app_is_restored_and_the_cwd_untouched(in_tmp_cwd: Path) -> None:
    # GIVEN a user's app configured for its own store, and a retry-prone setting
    app = App("shop-own", database_url="sqlite+aiosqlite:///./own.db", tenant_id="prod")

    @app.processor("p", consumes="q")
    def p(message: Message) -> None:
        pass

    overrides = dict(app._overrides)

    # WHEN it runs under TestApp with other settings
    async with TestApp(app, tenant_id="acme", max_attempts=2) as t:
        assert t.directory is not None and t.directory.exists()
        directory = t.directory
        assert app.settings.tenant_id == "acme"
        assert str(directory) in app.settings.database_url
        assert (await t.deliver("p", {})).kind is OutcomeKind.COMPLETED

    # THEN its configuration is back, its temp directory gone, and nothing written in the cwd
    assert app._overrides == overrides
    assert app.settings.tenant_id == "prod"
    assert app.settings.database_url.endswith("/own.db")
    assert app.specs["p"].config.max_attempts is None
    assert app.transport is None and app.store is None
    assert not directory.exists()
    assert sorted(os.listdir(in_tmp_cwd)) == []


async def test_a_started_app_is_refused(in_tmp_cwd: Path, tmp_path: Path) -> None:
    app = App("running", database_url=f"sqlite+aiosqlite:///{tmp_path / 'run.db'}")

    @app.processor("p", consumes="q")
    def p(message: Message) -> None:
        pass

    async with app:
        with pytest.raises(ConfigurationError, match="already started"):
            async with TestApp(app, tenant_id="acme"):
                pass
        # the running app was left alone
        assert app.store is not None

    # and one TestApp at a time
    async with TestApp(app, tenant_id="acme"):
        with pytest.raises(ConfigurationError, match="already started"):
            async with TestApp(app, tenant_id="acme"):
                pass


async def test_bad_use_gets_clear_errors(in_tmp_cwd: Path) -> None:
    with pytest.raises(ConfigurationError, match="needs a tenant"):
        async with TestApp(shop_app()):
            pass
    async with TestApp(shop_app(), tenant_id="acme") as t:
        with pytest.raises(ConfigurationError, match="none consumes queue 'nowhere'"):
            await t.deliver("nowhere", {})
        with pytest.raises(ConfigurationError, match=r"t\.request"):
            await t.deliver("intake", {})
    with pytest.raises(ConfigurationError, match="async with TestApp"):
        await t.entities()


def test_import_apix_core_does_not_import_the_harness() -> None:
    code = "import sys, apix_core; sys.exit('apix_core.testing' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


async def test_deliver_many_is_one_batch_and_attempt_plays_a_retry(in_tmp_cwd: Path) -> None:
    from pydantic import BaseModel

    class Order(BaseModel):
        id: str

    app = App("retrying")
    calls: list[int] = []

    @app.processor("flaky", consumes="in", max_attempts=2)
    def flaky(message: Message) -> None:
        calls.append(message.attempt)
        if message.payload["id"] == "X":
            raise ConnectionError("upstream down")

    async with TestApp(app, tenant_id="acme") as t:
        # WHEN a batch of typed payloads is delivered, one failing transiently
        outcomes = await t.deliver_many(
            "in", [Order(id="A"), Order(id="X")], message_ids=["a", "x"]
        )

        # THEN the good one completed and the bad one asks for a retry, not yet dead-lettered
        assert [o.kind for o in outcomes] == [OutcomeKind.COMPLETED, OutcomeKind.RETRY]
        assert await t.dead_letters() == []

        # WHEN the retry is played as the last attempt
        last = await t.deliver("in", {"id": "X"}, message_id="x", attempt=2)

        # THEN it is dead-lettered with its attempt count
        assert last.kind is OutcomeKind.DEAD_LETTER
        [dead] = await t.dead_letters("in")
        assert (dead.message_id, dead.attempts) == ("x", 2)
        # (a transient failure is also retried within the call: several calls per attempt)
        assert calls[0] == 1 and calls[-1] == 2
