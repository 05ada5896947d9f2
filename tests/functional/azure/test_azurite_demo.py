"""A 3-stage app flowing through Azurite queues, driven by its generated functions as the
Functions host drives them: each message is received from Azurite, handed to the function as a
real ``azure.functions`` QueueMessage (base64-decoded body, dequeue count), deleted when the
function returns and made visible again when it raises. Exactly once under redelivery, poison
after maxDequeueCount, then ``apix dlq replay`` brings the message back and it completes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.functions.queue import QueueMessage
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient

from apix_azure import function_app
from apix_azure.functions import RetryLater
from apix_azure.transport.storage_queue import azure_queue_name
from apix_core import App, Message, ProcessorContext
from apix_core.errors import TransientError
from apix_core.message import build_message
from apix_core.processor import BackoffPolicy
from apix_core.tenancy import tenant_context

pytestmark = [pytest.mark.azure, pytest.mark.slow]

APIX = [sys.executable, "-m", "apix_core.cli.main"]
MAX_DEQUEUE = 3


class Host:
    """What the Functions host does with a queue trigger, over a real Azurite queue."""

    def __init__(self, azurite: str) -> None:
        self.azurite = azurite
        self.clients: list[QueueClient] = []

    def client(self, apix_queue: str) -> QueueClient:
        c = QueueClient.from_connection_string(
            self.azurite,
            azure_queue_name(apix_queue),
            message_decode_policy=TextBase64DecodePolicy(),  # the host's messageEncoding base64
        )
        self.clients.append(c)
        return c

    async def deliver(
        self, apix_queue: str, fn: Callable[..., Any], *, lose_the_delete: bool = False
    ) -> str | None:
        """Run ``fn`` on the next message: 'done', 'retry', or None when the queue is empty.
        ``lose_the_delete`` plays a host that crashed after the function returned."""
        client = self.client(apix_queue)
        batch = [m async for m in client.receive_messages(max_messages=1, visibility_timeout=60)]
        if not batch:
            return None
        [m] = batch
        now = datetime.now(UTC)
        msg = QueueMessage(  # type: ignore[no-untyped-call]
            id=m.id,
            body=m.content,
            dequeue_count=m.dequeue_count,
            pop_receipt=m.pop_receipt,
            insertion_time=now,
            expiration_time=now,
            time_next_visible=now,
        )
        try:
            await fn(msg)
        except RetryLater:
            await self.release(client, m)
            return "retry"
        if lose_the_delete:
            await self.release(client, m)
        else:
            await client.delete_message(m)
        return "done"

    @staticmethod
    async def release(client: QueueClient, m: Any) -> None:
        """Visible again at once (host ``visibilityTimeout`` 0), text untouched."""
        await client.update_message(m.id, pop_receipt=m.pop_receipt, visibility_timeout=0)

    async def drain(self, apix_queue: str, fn: Callable[..., Any]) -> list[str]:
        results = []
        while (r := await self.deliver(apix_queue, fn)) is not None:
            results.append(r)
        return results

    async def send(self, apix_queue: str, body: str) -> None:
        from apix_azure.transport.storage_queue import encode_text

        client = self.client(apix_queue)
        with contextlib.suppress(ResourceExistsError):
            await client.create_queue()
        await client.send_message(encode_text(body))

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


def order(message_id: str, n: int) -> str:
    return build_message(message_id=message_id, tenant_id="acme", payload={"id": n}).to_json()


def apix_cli(*args: str, azurite: str, tmp_path: Path) -> Any:
    env = {
        **os.environ,
        "AzureWebJobsStorage": azurite,
        "APIX_QUEUE_URL": "azure-queue://?connection=AzureWebJobsStorage",
        "APIX_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
    }
    proc = subprocess.run(
        [*APIX, *args, "--json"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


async def test_three_stages_through_azurite_exactly_once_poison_and_replay(
    tmp_path: Path, azurite: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a 3-stage app deployed as a Functions app on Azurite (outputs default to it)
    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    monkeypatch.setenv("APIX_AZURE_MAX_DEQUEUE_COUNT", str(MAX_DEQUEUE))
    monkeypatch.delenv("APIX_QUEUE_URL", raising=False)
    raw, clean, done = f"{queue_name}.raw", f"{queue_name}.clean", f"{queue_name}.done"
    app = App("demo", database_url=f"sqlite+aiosqlite:///{tmp_path / 'apix.db'}")
    partner_down = {"on": False}
    stored: list[dict[str, Any]] = []
    once = BackoffPolicy(max_retries=0)

    @app.processor("ingest", consumes=raw, produces=[clean], backoff=once, max_attempts=5)
    async def ingest(message: Message, ctx: ProcessorContext) -> None:
        ctx.send(clean, {**message.payload, "ingested": True})

    @app.processor("enrich", consumes=clean, produces=[done], backoff=once, max_attempts=5)
    async def enrich(message: Message, ctx: ProcessorContext) -> None:
        if partner_down["on"]:
            raise TransientError("partner API is down")
        ctx.send(done, {**message.payload, "enriched": True})

    @app.processor("store", consumes=done, backoff=once, max_attempts=5)
    async def store(message: Message, ctx: ProcessorContext) -> None:
        stored.append(message.payload)
        ctx.persist_entity(str(message.payload["id"]), "order", "demo", message.payload)

    fapp = function_app(app)
    fns = {str(f.get_function_name()): f.get_user_function() for f in fapp.get_functions()}
    host = Host(azurite)
    try:
        # WHEN order 1 enters, and every stage is delivered twice (the host lost each delete)
        await host.send(raw, order("o-1", 1))
        for queue, fn in ((raw, fns["ingest"]), (clean, fns["enrich"]), (done, fns["store"])):
            assert await host.deliver(queue, fn, lose_the_delete=True) == "done"
            assert set(await host.drain(queue, fn)) == {"done"}
        # THEN the last stage took effect exactly once, with what the first two added
        assert stored == [{"id": 1, "ingested": True, "enriched": True}]
        assert app.store is not None
        with tenant_context("acme"):
            [entity] = await app.store.entities.list(canonical_type="order")
        assert (entity.external_id, entity.version) == ("1", 1)

        # WHEN order 2 meets a partner outage at stage 2 on every delivery
        partner_down["on"] = True
        await host.send(raw, order("o-2", 2))
        assert await host.drain(raw, fns["ingest"]) == ["done"]
        # THEN the host retries it until maxDequeueCount, then apix poisons it with its error
        assert await host.drain(clean, fns["enrich"]) == ["retry"] * (MAX_DEQUEUE - 1) + ["done"]
        [record] = apix_cli("dlq", "list", azurite=azurite, tmp_path=tmp_path)["dead_letters"]
        assert (record["queue"], record["processor"], record["attempts"]) == (clean, "enrich", 3)
        assert record["id"].startswith(azure_queue_name(clean) + "/")

        # WHEN the partner is back and the operator replays the poison queue with the CLI
        partner_down["on"] = False
        replayed = apix_cli("dlq", "replay", "--all", azurite=azurite, tmp_path=tmp_path)
        assert [r["queue"] for r in replayed["replayed"]] == [clean]
        # THEN it flows through the rest of the pipeline and completes, once
        assert await host.drain(clean, fns["enrich"]) == ["done"]
        assert await host.drain(done, fns["store"]) == ["done"]
        assert [p["id"] for p in stored] == [1, 2]
        assert apix_cli("dlq", "list", azurite=azurite, tmp_path=tmp_path)["dead_letters"] == []
    finally:
        await host.close()
        await app.close()
        await fapp.apix_runtime.poison_transport().close()  # type: ignore[attr-defined]
