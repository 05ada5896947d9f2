"""Developer and CI tasks. `nox -s tests` is the README's test command and what CI runs."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import nox

IN_CI = os.environ.get("CI", "").lower() == "true"

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "tests"]
# Interpreters come from this machine, never from a download at run time; in CI a missing one
# fails its sessions instead of skipping them.
nox.options.download_python = "never"
nox.options.error_on_missing_interpreters = IN_CI

PYTHON = "3.11"  # lint, typecheck, demo, bench
PYTHONS = ["3.11", "3.12", "3.13"]  # the test matrix
BACKENDS = ["sqlite", "postgres"]


def _version_key(path: Path) -> tuple[int, ...]:
    # "3.12.1" -> (3, 12, 1); pre-releases and suffixed builds sort first
    name = path.parents[1].name
    return tuple(int(p) for p in name.split(".")) if re.fullmatch(r"[\d.]+", name) else (0,)


def _interpreters_on_path(versions: list[str]) -> list[str]:
    """Prepend pyenv's newest ``X.Y.*`` install to PATH for each version ``pythonX.Y`` does not
    already reach; return the versions found nowhere.

    pyenv puts a ``pythonX.Y`` shim on PATH for every installed version but the shim answers
    only for the active ones, so a shim does not count as found.
    """
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    prepend, missing = [], []
    for version in versions:
        found = shutil.which(f"python{version}")
        if found and os.sep + "shims" + os.sep not in found:
            continue
        installs = sorted(root.glob(f"{version}.*/bin/python{version}"), key=_version_key)
        if installs:
            prepend.append(str(installs[-1].parent))
        else:
            missing.append(version)
    if prepend:
        os.environ["PATH"] = os.pathsep.join([*prepend, os.environ.get("PATH", "")])
    return missing


_MISSING = _interpreters_on_path(PYTHONS)
if _MISSING:
    print(
        f"noxfile: Python {', '.join(_MISSING)} not found (neither python3.X on PATH nor "
        f"$PYENV_ROOT/versions/3.X.*): its tests sessions "
        f"{'FAIL (CI=true)' if IN_CI else 'are skipped'}",
        file=sys.stderr,
    )


@nox.session(python=PYTHONS)
@nox.parametrize("backend", BACKENDS)
def tests(session: nox.Session, backend: str) -> None:
    """The test suite on one Python against one store backend (all pairs: `nox -s tests`).

    The postgres sessions need PostgreSQL on 127.0.0.1:5432 (started here if it is down)."""
    session.install("-e", ".[dev]")
    env = {"APIX_TEST_BACKENDS": backend}
    if IN_CI:
        env["CI"] = "true"
    if backend == "postgres":
        _prepare_postgres(session, IN_CI)
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs, env=env)


def _prepare_postgres(session: nox.Session, in_ci: bool) -> None:
    """Start the machine's PostgreSQL if it is down; in CI also install PgBouncer (its test
    skips without the binary). Best effort: the tests themselves fail under CI if PostgreSQL
    cannot be reached."""
    script = (
        "pg_isready -q -h 127.0.0.1 -p 5432 || "
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start || true"
    )
    if in_ci:
        script += (
            "; command -v pgbouncer >/dev/null || ls /usr/sbin/pgbouncer >/dev/null 2>&1 || "
            "(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
            "pgbouncer >/dev/null) || true"
        )
    session.run("bash", "-c", script, external=True, success_codes=[0, 1])


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Run the flagship order service on the embedded default (SQLite + local queue): orders
    posted over HTTP, driven to completion, a summary and the pipeline graph."""
    session.install("-e", ".")
    session.run("python", "examples/orders/demo.py", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks, compared side by side in one run (see benchmarks/README.md)."""
    # Powertools (and redis-py for its idempotency cache layer) are the AWS benchmarks' anchor:
    # installed here only, never a dependency of apix.
    # dlt: the extraction benchmark's comparison (benchmarks/bench_extract.py); bench session only.
    session.install("-e", ".[dev]", "aws-lambda-powertools>=3", "redis>=5", "dlt>=1.0")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs + material), built with --strict into site/.

    Its hook (docs/hooks/apix_docs.py) generates the CLI reference from the command tree, so
    the project is installed with the extras whose `apix` plugins it walks (`deploy aws`,
    `deploy azure`) and whose commands it renders (`extract`)."""
    session.install("-e", ".[aws,azure,extract,serve]", "mkdocs>=1.6", "mkdocs-material>=9.5")
    # NO_MKDOCS_2_WARNING: material's banner about its successor, printed on every build.
    env = {"NO_MKDOCS_2_WARNING": "1"}
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs, env=env)
