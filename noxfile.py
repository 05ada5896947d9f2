"""Developer and CI tasks. `nox -s tests` is the README's test command and what CI runs."""

from __future__ import annotations

import os

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "tests"]

PYTHON = "3.11"
BACKENDS = ["sqlite", "postgres"]


@nox.session(python=PYTHON)
@nox.parametrize("backend", BACKENDS)
def tests(session: nox.Session, backend: str) -> None:
    """The test suite against one metadata-store backend (PostgreSQL must be reachable)."""
    session.install("-e", ".[dev]")
    env = {"APIX_TEST_BACKENDS": backend}
    in_ci = os.environ.get("CI", "").lower() == "true"
    if in_ci:
        env["CI"] = "true"
    if backend == "postgres":
        _prepare_postgres(session, in_ci)
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
    """Run the flagship order pipeline on the embedded default (SQLite + local queue)."""
    session.install("-e", ".")
    session.run("apix", "run", "examples/orders/app.py", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks, compared side by side in one run (see benchmarks/README.md)."""
    session.install("-e", ".[dev]", "aws-lambda-powertools>=3")
    session.run("python", "benchmarks/run.py", *session.posargs)
