"""N processes asking for one API token at once (run by test_token_race.py; not a test module).

Usage: python token_worker.py N DATABASE_URL FERNET_KEY TOKEN_URL DIR
Imports once, forks N children (cheap on a 2-core CI box); each opens its own database pool,
touches DIR/ready-<i>, waits for DIR/go, asks, and prints one JSON line {"token", "token_id"}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from apix_core import tenant_context
from apix_core.store.database import Database
from apix_core.tokens import ApiTokenService, oauth2_client_credentials


async def ask(index: int, url: str, key: str, token_url: str, folder: Path) -> None:
    db = Database(url, pool_size=1)
    service = ApiTokenService(
        db,
        fetch_token=oauth2_client_credentials(token_url, "client", "s3cret"),
        encryption_key=key,
    )
    # Connect before the start signal so the processes really race on the token.
    async with db.connect():
        pass
    (folder / f"ready-{index}").touch()
    while not (folder / "go").exists():
        time.sleep(0.002)
    with tenant_context("acme"):
        token, token_id = await service.get_valid_token("crm")
    await db.dispose()
    line = json.dumps({"token": token, "token_id": token_id, "refreshes": service.refreshes})
    os.write(1, (line + "\n").encode())


def main(n: int, url: str, key: str, token_url: str, folder: str) -> int:
    children = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                asyncio.run(ask(i, url, key, token_url, Path(folder)))
            except BaseException as exc:
                os.write(2, f"child {i}: {exc!r}\n".encode())
                os._exit(1)
            os._exit(0)
        children.append(pid)
    failed = 0
    for pid in children:
        _, status = os.waitpid(pid, 0)
        failed += os.waitstatus_to_exitcode(status) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), *sys.argv[2:6]))
