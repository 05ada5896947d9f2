"""Twenty processes ask for one tenant's API token at once: exactly one refresh."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from apix_core.store.database import Database
from apix_core.store.models import api_tokens

WORKER = Path(__file__).parent / "workers" / "token_worker.py"
KEY = Fernet.generate_key().decode()


async def _seed(db: Database, token: str, *, expires_in: float, lifetime: float = 3600.0) -> str:
    """Store ``token`` for acme/crm as if fetched ``lifetime - expires_in`` seconds ago."""
    now = datetime.now(UTC)
    token_id = str(uuid.uuid4())
    async with db.transaction(tenant_id="acme") as conn:
        await conn.execute(
            sa.insert(api_tokens).values(
                tenant_id="acme",
                operation="crm",
                token_id=token_id,
                token_ciphertext=Fernet(KEY).encrypt(token.encode()).decode(),
                expires_at=now + timedelta(seconds=expires_in),
                refreshed_at=now + timedelta(seconds=expires_in - lifetime),
                updated_at=now,
            )
        )
    return token_id


RACES = {
    # A missing row: INSERT ... ON CONFLICT alone would serialise the callers.
    "missing": (None, 3600.0),
    # An existing row: only the row lock (FOR UPDATE / BEGIN IMMEDIATE) serialises them.
    "expired": (-10.0, 3600.0),
    "expiring-within-skew": (30.0, 3600.0),
    # A token living less than the skew must not look stale the moment it is stored.
    "short-lived": (None, 5.0),
}


@pytest.mark.slow
@pytest.mark.parametrize("state", list(RACES))
async def test_twenty_processes_asking_at_once_cause_exactly_one_refresh(
    db: Database, database_url: str, token_server, tmp_path: Path, state: str
) -> None:
    # GIVEN 20 processes ready to ask for the same tenant's token, and the stored state
    seeded_expires_in, token_server.expires_in = RACES[state]
    if seeded_expires_in is not None:
        await _seed(db, "tok-old", expires_in=seeded_expires_in)
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "20", database_url, KEY, token_server.url, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while len(list(tmp_path.glob("ready-*"))) < 20 and proc.poll() is None:
        await asyncio.sleep(0.01)

    # WHEN they all ask at once
    (tmp_path / "go").touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    results = [json.loads(line) for line in out.strip().splitlines()]
    assert len(results) == 20

    # THEN the endpoint saw one request and every process got that one token
    assert token_server.requests == 1
    assert {r["token"] for r in results} == {"tok-secret-1-plaintext"}
    assert len({r["token_id"] for r in results}) == 1
    assert sum(r["refreshes"] for r in results) == 1
