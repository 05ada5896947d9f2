"""Developer and CI tasks. `nox -s tests` is the README's test command and what CI runs."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import zipfile
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

    Each test runs once per Python: the postgres session runs the tests marked ``postgres``
    (the store on PostgreSQL, ``postgres`` folders), the sqlite session all the others
    (tests/conftest.py deselects by marker under APIX_TEST_BACKEND_SESSION). The postgres
    sessions need PostgreSQL on 127.0.0.1:5432 (started here if it is down)."""
    session.install("-e", ".[dev]")
    env = {"APIX_TEST_BACKENDS": backend, "APIX_TEST_BACKEND_SESSION": "true"}
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


#: Extras a user installs, each checked in its own fresh environment by `nox -s package`.
PACKAGE_EXTRAS = ["aws", "azure", "postgres"]
PACKAGES = ["apix_core", "apix_aws", "apix_azure"]
#: Where the sdist carries the demo a user copies (examples ship in the sdist, not the wheel).
DEMO = "examples/orders"


@nox.session(python=PYTHON)
def package(session: nox.Session) -> None:
    """Build the sdist and wheel as a release would, check them, then install the wheel with
    each extra into a fresh virtual environment outside the repository and run, from a temp
    folder, `apix --version`, the orders demo (copied out of the sdist) and an adapter smoke
    test (.ci/package_smoke.py)."""
    session.install("build>=1.2", "twine>=5")
    repo = Path.cwd()
    work = Path(tempfile.mkdtemp(prefix="apix-package-"))
    try:
        dist = work / "dist"
        # The wheel is built from the sdist: a file the sdist lacks fails here too.
        session.run("python", "-m", "build", "--outdir", str(dist), str(repo), silent=True)
        (wheel,) = dist.glob("*.whl")
        (sdist,) = dist.glob("*.tar.gz")
        session.run("twine", "check", "--strict", str(wheel), str(sdist))
        _check_wheel(session, repo, wheel)
        demo = _demo_from_sdist(session, sdist, work)
        version = wheel.name.split("-")[1]
        pg_reason = _postgres_unreachable()
        if pg_reason and IN_CI:
            _prepare_postgres(session, IN_CI)
            pg_reason = _postgres_unreachable()
        for extra in PACKAGE_EXTRAS:
            if extra == "postgres" and pg_reason:
                if IN_CI:
                    session.error(f"[postgres] smoke test: {pg_reason}")
                session.warn(f"[postgres] smoke test skipped: {pg_reason}")
                continue
            _check_extra(session, repo, work, wheel, demo, extra, version)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_wheel(session: nox.Session, repo: Path, wheel: Path) -> None:
    """Every file the code loads at run time is in the wheel: migrations, `py.typed`, every
    non-Python file under the packages; entry points and nothing from tests or examples."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(
            archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")
        )
    listed = subprocess.run(
        ["git", "ls-files", *PACKAGES], cwd=repo, capture_output=True, text=True, check=False
    )
    tracked = listed.stdout.split()
    if listed.returncode != 0 or not tracked:  # not a git checkout: the files on disk
        tracked = [
            f.relative_to(repo).as_posix()
            for p in PACKAGES
            for f in (repo / p).rglob("*")
            if f.is_file() and "__pycache__" not in f.parts
        ]
    required = {f"{p}/py.typed" for p in PACKAGES} | {
        "apix_core/store/migrations/env.py",
        "apix_core/store/migrations/script.py.mako",
    }
    # Every file of the packages: migrations versions, templates, data files.
    required |= {f for f in tracked if not f.endswith((".pyc", ".pyo"))}
    missing = sorted(required - names)
    if missing:
        session.error(f"the wheel lacks {len(missing)} file(s): {', '.join(missing[:20])}")
    stray = sorted(n for n in names if n.split("/")[0] in ("tests", "examples", "benchmarks"))
    if stray:
        session.error(f"the wheel carries files outside the packages: {', '.join(stray[:10])}")
    versions = [n for n in names if n.startswith("apix_core/store/migrations/versions/")]
    for needed in (
        "[console_scripts]",
        "apix = apix_core.cli.main:main",
        "[apix.transports]",
        "sqs = apix_aws.transport.sqs:from_url",
        "[apix.cli]",
        "deploy-aws = apix_aws.deploy.cli:register",
    ):
        if needed not in entry_points:
            session.error(f"the wheel's entry_points.txt lacks {needed!r}")
    session.log(f"wheel: {len(names)} files, {len(versions)} migration file(s), entry points ok")


def _demo_from_sdist(session: nox.Session, sdist: Path, work: Path) -> Path:
    """The orders example as the sdist ships it, unpacked outside the repository."""
    with tarfile.open(sdist) as archive:
        root = archive.getnames()[0].split("/")[0]
        members = [m for m in archive.getmembers() if m.name.startswith(f"{root}/{DEMO}/")]
        if not any(m.name.endswith(f"{DEMO}/app.py") for m in members):
            session.error(f"the sdist lacks {DEMO}/app.py")
        archive.extractall(work / "sdist", members=members, filter="data")
    return work / "sdist" / root / DEMO


def _postgres_unreachable() -> str | None:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError as exc:
        return f"PostgreSQL on 127.0.0.1:5432 is not reachable ({exc})"
    return None


def _check_extra(
    session: nox.Session,
    repo: Path,
    work: Path,
    wheel: Path,
    demo: Path,
    extra: str,
    version: str,
) -> None:
    """A fresh venv with `apix-core[extra]` from the wheel; cwd a temp folder, no PYTHONPATH."""
    home = work / extra
    venv = home / "venv"
    run_dir = home / "run"
    shutil.copytree(demo, run_dir / "orders")
    shutil.copy(repo / ".ci" / "package_smoke.py", run_dir)
    python = str(Path(session.bin) / "python")
    session.run(python, "-m", "venv", str(venv), external=True, silent=True)
    bin_dir = venv / "bin"
    env = {"PYTHONPATH": "", "VIRTUAL_ENV": str(venv), "APIX_HOME": str(run_dir / ".apix")}
    env = {**env, "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}
    cwd = os.getcwd()
    os.chdir(run_dir)
    try:
        session.run(
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"{wheel}[{extra}]",
            external=True,
            env=env,
        )
        out = session.run(str(bin_dir / "apix"), "--version", external=True, env=env, silent=True)
        if version not in str(out):
            session.error(f"[{extra}] apix --version printed {out!r}, expected {version}")
        os.chdir(run_dir / "orders")
        session.run(str(bin_dir / "apix"), "run", "app.py", external=True, env=env, silent=True)
        os.chdir(run_dir)
        session.run(str(bin_dir / "python"), "package_smoke.py", extra, external=True, env=env)
    finally:
        os.chdir(cwd)
