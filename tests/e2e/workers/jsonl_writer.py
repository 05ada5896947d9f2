"""Writes JSONL batches forever (or ``--batches`` of them) with the extraction's JSONL output,
printing ``flushed <seq>`` after each durable batch: the crash test SIGKILLs it mid-write.

Usage: jsonl_writer.py <folder> <records per batch> [--batches N]
"""

from __future__ import annotations

import asyncio
import sys

from apix_core.extract.outputs import JsonlOutput


async def main(folder: str, per_batch: int, batches: int | None) -> None:
    output = JsonlOutput(
        {
            "path": folder,
            "partition_by": "created",
            "compression": "gzip",
            "compress_level": 1,
            "batch": {"batch_size": per_batch, "max_batch_bytes": 1 << 30},
        },
        run_id="crash",
    )
    days = ["2026-11-27T10:00:00Z", "2026-11-28T10:00:00Z", "2026-11-29T10:00:00Z"]
    seq = 0
    while batches is None or seq < batches:
        records = [
            {"id": seq * per_batch + i, "created": days[i % 3], "pad": "x" * 200}
            for i in range(per_batch)
        ]
        await output.write(records)
        print(f"flushed {seq}", flush=True)
        seq += 1


if __name__ == "__main__":
    count = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--batches" else None
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), count))
