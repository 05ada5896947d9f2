"""Import time of what a function's module imports (cold starts).

Each sample is a fresh interpreter; the contenders alternate round by round and each figure is
the median of 7 rounds of wall-clock time. The goal (issue "core reshape"): ``import apix_core``
≤ 1.5× ``from pydantic import BaseModel``. For reference: what an app module imports
(``from apix_core import App, Message, ProcessorContext``), and the same plus starting nothing.

    python benchmarks/bench_import.py                   # this tree
    python benchmarks/bench_import.py --baseline DIR    # and, alternating, another checkout
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import Result

ROUNDS = 7

CONTENDERS = {
    "python -c pass": "pass",
    "from pydantic import BaseModel": "from pydantic import BaseModel",
    "import apix_core": "import apix_core",
    "from apix_core import App, Message, ProcessorContext": (
        "from apix_core import App, Message, ProcessorContext"
    ),
}


def _time(code: str, cwd: str | None) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=cwd)
    return time.perf_counter() - start


def measure(baseline: str | None = None) -> dict[str, float]:
    trees: dict[str, str | None] = {"": None}
    if baseline:
        trees["baseline: "] = baseline
    samples: dict[str, list[float]] = {}
    for _ in range(ROUNDS):
        for label, root in trees.items():
            for name, code in CONTENDERS.items():
                prefix = f"import sys; sys.path.insert(0, {root!r}); " if root else ""
                samples.setdefault(label + name, []).append(_time(prefix + code, root))
    return {k: statistics.median(v) for k, v in samples.items()}


def run(baseline: str | None = None) -> list[Result]:
    med = measure(baseline)
    pyd = med["from pydantic import BaseModel"]
    out = [Result(f"import: {k}", v * 1000, "ms") for k, v in med.items()]
    out.append(
        Result(
            "import: apix_core / pydantic BaseModel",
            med["import apix_core"] / pyd,
            "x",
            "<= 1.5x",
        )
    )
    if baseline:
        out.append(
            Result(
                "import: App import, baseline / now",
                med["baseline: from apix_core import App, Message, ProcessorContext"]
                / med["from apix_core import App, Message, ProcessorContext"],
                "x",
            )
        )
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", help="another checkout of apix-core to compare with")
    args = parser.parse_args()
    for r in run(args.baseline):
        print(r.row())
