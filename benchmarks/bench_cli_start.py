"""Start-up time of the ``apix`` command line: ``apix --version`` and ``apix --help``.

Each sample is a fresh interpreter (a subprocess) running the console script's code; the
contenders alternate round by round, and each figure is the median of 7 rounds: wall-clock
time (the goal), and CPU time (user + system), which a busy machine disturbs less. Reference rows:
the bare interpreter, ``import apix_core`` (the package's own import, which every
``apix_core.cli`` module pays first), and both commands with ``apix_core``'s package
``__init__`` replaced by an empty module: what the CLI itself costs once that ``__init__`` is
lazy.

    python benchmarks/bench_cli_start.py                     # this tree
    python benchmarks/bench_cli_start.py --baseline DIR      # and, alternating, another tree
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import Result

ROUNDS = 7
GOAL_SECONDS = 0.35

# What the ``apix`` console script does (pip's wrapper imports main and calls it).
_SCRIPT = "import sys; sys.argv[0] = 'apix'; from apix_core.cli.main import main; main()"
# The same with an empty ``apix_core`` package module in place of its __init__.
_LAZY_PACKAGE = (
    "import sys, types, importlib.util; "
    "spec = importlib.util.find_spec('apix_core'); "
    "pkg = types.ModuleType('apix_core'); pkg.__path__ = list(spec.submodule_search_locations); "
    "pkg.__version__ = '0.0.0'; sys.modules['apix_core'] = pkg; "
)


def _time(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def measure(baseline: str | None = None, rounds: int = ROUNDS) -> list[Result]:
    """Median start-up seconds of every contender, sampled alternately."""
    py = sys.executable
    env = {**os.environ, "COLUMNS": "100"}
    env.pop("PYTHONPATH", None)
    trees: list[tuple[str, dict[str, str]]] = [("", env)]
    if baseline:
        trees.insert(0, ("baseline: ", {**env, "PYTHONPATH": str(Path(baseline).resolve())}))
    contenders: dict[str, tuple[list[str], dict[str, str]]] = {
        "python -c pass": ([py, "-c", "pass"], env),
    }
    for label, tree_env in trees:
        contenders[f"{label}import apix_core"] = ([py, "-c", "import apix_core"], tree_env)
        for arg in ("--version", "--help"):
            contenders[f"{label}apix {arg}"] = ([py, "-c", _SCRIPT, arg], tree_env)
    for arg in ("--version", "--help"):
        contenders[f"apix {arg}, apix_core/__init__ lazy (simulated)"] = (
            [py, "-c", _LAZY_PACKAGE + _SCRIPT, arg],
            env,
        )
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    # A neutral working directory: python -c puts it first on sys.path, before --baseline.
    with tempfile.TemporaryDirectory() as cwd:
        for argv, cenv in contenders.values():  # warm the file cache and .pyc files once
            _time(argv, cenv, cwd)
        for _ in range(rounds):
            for name, (argv, cenv) in contenders.items():
                samples[name].append(_time(argv, cenv, cwd))
    results = []
    for name, pairs in samples.items():
        goal = f"≤ {GOAL_SECONDS} s" if name in ("apix --version", "apix --help") else ""
        walls = [w for w, _ in pairs]
        cpu = statistics.median(c for _, c in pairs)
        note = f"cpu {cpu:.3f}; wall min {min(walls):.3f}, max {max(walls):.3f}"
        results.append(Result(f"cli start: {name}", statistics.median(walls), "s", goal, note))
    return results


def run() -> list[Result]:
    """Entry for ``benchmarks/run.py`` (in milliseconds, for its two-decimal table)."""
    return [
        Result(r.name, r.value * 1000, "ms", r.goal.replace("0.35 s", "350 ms"), r.note)
        for r in measure()
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="another source tree to compare (put on PYTHONPATH)")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args(argv)
    print(f"{'contender (median of ' + str(args.rounds) + ')':<58} {'wall s':>9}  {'goal':<9} note")
    for r in measure(args.baseline, args.rounds):
        name = r.name.removeprefix("cli start: ")
        print(f"{name:<58} {r.value:>9.3f}  {r.goal:<9} {r.note}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
