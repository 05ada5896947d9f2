"""Run every benchmark and print one table (``nox -s bench``).

Machines here are noisy: each benchmark compares its contenders side by side in the same run,
and the ratios are the figures to trust. Select some with ``python benchmarks/run.py overhead``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import Result

BENCHMARKS = {
    "import": "bench_import",
    "cli": "bench_cli_start",
    "overhead": "bench_overhead",
    "pipeline": "bench_pipeline",
    "postgres": "bench_postgres",
    "aws": "bench_aws",
    "azure": "bench_azure",
    "extract": "bench_extract",
    "extract-parallel": "bench_extract_parallel",
    "extract-sources": "bench_extract_sources",
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    results: list[Result] = []
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        print(f"-- {name}", flush=True)
        for r in module.run():
            print(r.row(), flush=True)
            results.append(r)
    print()
    print(f"{'benchmark':<58} {'value':>12} {'unit':<10} {'goal':<14} note")
    for r in results:
        print(r.row())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
