"""A JSONL writer SIGKILLed mid-write leaves no half file under a final name: every visible file
is complete, and a rerun of the same run rewrites the same names (never skipping a file)."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).parent / "workers" / "jsonl_writer.py"
PER_BATCH = 30_000  # about 7 MB a batch before compression: writes take a while


def _check_complete(folder: Path) -> int:
    """Every final file decompresses in full with one batch's share of records; returns how
    many there are."""
    files = list(folder.rglob("*.jsonl.gz"))
    for path in files:
        assert not path.name.startswith(".")
        rows = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
        assert len(rows) == PER_BATCH // 3, path
        assert {r["created"][:10] for r in rows} == {path.parent.name.split("=")[1]}
    return len(files)


@pytest.mark.slow
def test_sigkill_mid_write_leaves_only_complete_files(tmp_path: Path) -> None:
    rng = random.Random(8)
    for _ in range(4):
        # GIVEN a writer that has flushed at least one batch
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(tmp_path), str(PER_BATCH)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("flushed")

        # WHEN it is killed at a random moment inside a later batch
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

        # THEN every file under a final name is complete
        _check_complete(tmp_path)

    # AND a rerun of the same run writes the same names: 3 batches x 3 day folders, complete
    subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path), str(PER_BATCH), "--batches", "3"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert _check_complete(tmp_path) >= 9
    names = {p.name for p in tmp_path.rglob("*.jsonl.gz")}
    assert {"part-crash-000000.jsonl.gz", "part-crash-000002.jsonl.gz"} <= names
