"""Through a real PgBouncer in transaction pooling mode.

Skipped where pgbouncer is missing, except under ``CI=true`` (the noxfile installs it there):
then a missing binary fails the run, as an unreachable PostgreSQL does.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from apix_core import App, Message, ProcessorContext, tenant_context
from apix_core.runtime import LocalRunner

IN_CI = os.environ.get("CI", "").lower() == "true"


def _find_pgbouncer(candidates: list[str | None], *, in_ci: bool) -> str:
    """The first existing pgbouncer binary; else skip the test, or fail it under CI."""
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    reason = "pgbouncer is not installed (apt-get install pgbouncer)"
    if in_ci:
        pytest.fail(f"{reason}: CI must run the PgBouncer tests")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pgbouncer(backend: str, database_url: str) -> Iterator[str]:
    """``database_url`` rewritten to go through a PgBouncer with two server connections."""
    if backend != "postgres":
        pytest.skip("PgBouncer fronts PostgreSQL only")
    binary = _find_pgbouncer([shutil.which("pgbouncer"), "/usr/sbin/pgbouncer"], in_ci=IN_CI)
    folder = Path(tempfile.mkdtemp(prefix="apix-pgbouncer-"))
    folder.chmod(0o755)
    port = _free_port()
    # The suite's application role (tests/conftest.py) and the superuser.
    (folder / "users.txt").write_text('"postgres" ""\n"apix_test_app" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n* = host=127.0.0.1 port=5432\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder}/users.txt\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 50\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
    )
    for f in folder.iterdir():
        f.chmod(0o644)
    # PgBouncer refuses to run as root; -u drops to the postgres user.
    user = ["-u", "postgres"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(
        [binary, *user, str(folder / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start: {proc.stderr.read()!r}") from None
                time.sleep(0.05)
        yield database_url.replace(":5432/", f":{port}/")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
async def test_pipeline_runs_through_pgbouncer_transaction_pooling(
    pgbouncer: str, db, make_app, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an app whose database is behind PgBouncer with two server connections,
    # so consecutive transactions of one client land on different server sessions
    monkeypatch.setenv("APIX_DB_PGBOUNCER", "true")
    app: App = make_app("bouncer", database_url=pgbouncer, queue_url=pgbouncer, auto_migrate=False)

    @app.processor("ingest", consumes="in", produces=["out"])
    async def ingest(message: Message, ctx: ProcessorContext) -> dict:
        ctx.persist_entity(str(message.payload["id"]), "order", "shop", message.payload)
        return {"id": message.payload["id"]}

    @app.processor("sink", consumes="out")
    async def sink(message: Message, ctx: ProcessorContext) -> None:
        return None

    await app.start()
    for i in range(40):
        await app.send("in", {"id": i}, tenant_id=("acme", "globex")[i % 2])

    # WHEN the pipeline runs (several concurrent client connections share that session)
    stats = await LocalRunner(app).run()

    # THEN it completes, and per-transaction tenant settings did not leak between clients
    assert stats.completed == 80 and stats.dead_lettered == 0
    with tenant_context("acme"):
        assert await app.store.entities.count() == 20
    async with app.store.db.connect() as conn:
        leaked = (
            await conn.execute(sa.text("SELECT current_setting('apix.tenant_id', true)"))
        ).scalar()
        await conn.rollback()
    assert leaked in (None, "")


def test_missing_pgbouncer_skips_locally_but_fails_under_ci(tmp_path: Path) -> None:
    # GIVEN no pgbouncer binary where it is looked for
    missing = [None, str(tmp_path / "pgbouncer")]

    # WHEN/THEN a developer's run skips the test, and a CI run fails it
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        _find_pgbouncer(missing, in_ci=False)
    with pytest.raises(pytest.fail.Exception, match="CI must run"):
        _find_pgbouncer(missing, in_ci=True)
    # AND an installed binary is found
    binary = tmp_path / "bin" / "pgbouncer"
    binary.parent.mkdir()
    binary.touch()
    assert _find_pgbouncer([None, str(binary)], in_ci=True) == str(binary)
