"""``apix`` as a real process: cheap start-up, and command plugins from installed entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

_SCRIPT = Path(sys.executable).with_name("apix")
#: The installed console script, else the same entry point through ``-m``.
APIX = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "apix_core.cli.main"]

# Runs ``main()`` as the console script does and reports, on stderr, the modules it imported
# beyond ``import apix_core`` (and all modules). With EMPTY_PACKAGE set, ``apix_core``'s package
# __init__ is replaced by an empty module first: what the CLI alone imports.
PROBE = """
import json, os, sys, types, importlib.util
if os.environ.get("EMPTY_PACKAGE"):
    spec = importlib.util.find_spec("apix_core")
    pkg = types.ModuleType("apix_core")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__version__ = "0.0.0"
    sys.modules["apix_core"] = pkg
import apix_core
before = set(sys.modules)
sys.argv = ["apix", *sys.argv[1:]]
from apix_core.cli.main import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
sys.stdout.flush()
new = sorted(set(sys.modules) - before)
sys.stderr.write("\\nPROBE " + json.dumps({"code": code, "new": new, "all": sorted(sys.modules)}))
"""

HEAVY = ("typer", "click", "rich", "sqlalchemy", "alembic", "aiosqlite", "asyncpg")
COMMAND_MODULES = tuple(
    f"apix_core.cli.{m}"
    for m in (
        "app",
        "_common",
        "run",
        "send",
        "entities",
        "dlq",
        "errors",
        "graph",
        "db",
        "loader",
        "extract",
    )
)


def _probe(*args: str, empty_package: bool = False) -> tuple[str, dict]:
    env = {**os.environ, "COLUMNS": "120"}
    if empty_package:
        env["EMPTY_PACKAGE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, check=True
    )
    report = json.loads(proc.stderr.rsplit("PROBE ", 1)[1])
    return proc.stdout, report


def _roots(modules: list[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_version_imports_neither_typer_nor_rich_nor_the_store() -> None:
    # GIVEN a fresh interpreter that has imported apix_core
    # WHEN `apix --version` runs
    out, report = _probe("--version")

    # THEN it printed the version, and loaded no CLI framework, store or command module
    assert out.startswith("apix-core "), out
    assert report["code"] == 0
    assert not _roots(report["new"]) & set(HEAVY), report["new"]
    assert not set(report["new"]) & set(COMMAND_MODULES), report["new"]


def test_version_and_help_without_the_package_init_import_no_store() -> None:
    # GIVEN apix_core's package __init__ replaced by an empty module (what the CLI alone costs)
    # WHEN `apix --version` and `apix --help` run
    _, version = _probe("--version", empty_package=True)
    help_out, help_ = _probe("--help", empty_package=True)

    # THEN --version imports nothing heavy at all, and --help no SQLAlchemy, store or runtime
    assert not _roots(version["all"]) & set(HEAVY), version["all"]
    assert help_["code"] == 0 and "dlq" in help_out
    assert not _roots(help_["all"]) & {"sqlalchemy", "alembic", "aiosqlite", "asyncpg"}
    loaded = set(help_["all"])
    assert not loaded & {"apix_core.app", "apix_core.store", "apix_core.runtime", "asyncio"}


def test_version_after_full_package_import_is_sqlalchemy_free_once_init_is_lazy() -> None:
    # GIVEN the real package
    # WHEN `apix --version` runs
    _, report = _probe("--version")

    # THEN no SQLAlchemy is loaded at all: apix_core/__init__ must not import it eagerly
    if "sqlalchemy" in _roots(report["all"]) and "sqlalchemy" not in _roots(report["new"]):
        pytest.skip("`import apix_core` itself imports SQLAlchemy (apix_core/__init__ is eager)")
    assert "sqlalchemy" not in _roots(report["all"])


def test_help_has_no_bool_placeholders_or_braced_arguments() -> None:
    # GIVEN the real command line
    # WHEN the help of the root and of a few commands is printed
    pages = [
        subprocess.run(
            [*APIX, *args, "--help"],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "120"},
            check=True,
        ).stdout
        for args in ([], ["run"], ["dlq", "replay"], ["db", "prune"], ["send"])
    ]

    # THEN flags carry no <bool>, and usage lines name arguments in capitals without braces
    text = "\n".join(pages)
    assert "<bool>" not in text
    assert "{" not in text
    assert "apix run [OPTIONS] APP" in pages[1]
    assert "apix dlq replay [OPTIONS] [DEAD_LETTER_ID]" in pages[2]
    assert "apix send [OPTIONS] QUEUE [PAYLOAD]" in pages[4]
    for name in (
        "run",
        "worker",
        "serve",
        "send",
        "queues",
        "graph",
        "errors",
        "entities",
        "dlq",
        "db",
        "extract",
    ):
        assert f" {name} " in pages[0]


# -- plugins ---------------------------------------------------------------------------------
PLUGIN = """
    from pathlib import Path

    import typer

    # A trace of every import, so a test can tell when the CLI loaded the plugin.
    with Path(__file__).with_name("imported.log").open("a") as fh:
        fh.write("hello_plugin\\n")

    app = typer.Typer(help="Say hello (a test plugin).")


    @app.command()
    def greet(name: str = typer.Option("world", "--name", help="Whom to greet.")) -> None:
        \"\"\"Greet someone.\"\"\"
        typer.echo(f"hello {name}")


    def register(root: typer.Typer) -> None:
        @root.command("wave")
        def wave() -> None:
            \"\"\"Wave (added by a register function).\"\"\"
            typer.echo("o/")


    NOT_A_COMMAND = 42
"""


def _distribution(site: Path, name: str, entry_points: str) -> None:
    """A minimal installed distribution: a dist-info folder that importlib.metadata finds."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder on the PYTHONPATH of the apix processes, holding the hello plugin."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "hello_plugin.py").write_text(textwrap.dedent(PLUGIN))
    _distribution(
        folder,
        "hello_plugin",
        """
        [apix.cli]
        hello = hello_plugin:app
        wave = hello_plugin:register
        """,
    )
    return folder


def _apix(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "COLUMNS": "120"}
    return subprocess.run(
        [*APIX, *args], capture_output=True, text=True, env=env, cwd=site.parent, timeout=60
    )


def test_plugin_commands_are_listed_and_run(site: Path) -> None:
    # GIVEN an installed distribution with two apix.cli entry points (a Typer, a register())
    # WHEN the root help is shown and both plugin commands run
    helped = _apix(site, "--help")
    greeted = _apix(site, "hello", "greet", "--name", "Bob")
    waved = _apix(site, "wave")
    group_help = _apix(site, "hello", "--help")

    # THEN help lists them after the built-in commands, and they run like any command
    assert helped.returncode == 0, helped.stderr
    assert "Say hello (a test plugin)." in helped.stdout
    assert "Wave (added by a register function)." in helped.stdout
    assert helped.stdout.index(" db ") < helped.stdout.index(" hello ")
    assert greeted.returncode == 0 and greeted.stdout == "hello Bob\n", greeted.stderr
    assert waved.returncode == 0 and waved.stdout == "o/\n", waved.stderr
    assert group_help.returncode == 0 and "greet" in group_help.stdout
    assert helped.stderr == "" and greeted.stderr == ""


def test_plugins_are_not_loaded_by_version_or_builtin_commands(site: Path) -> None:
    # GIVEN the hello plugin installed
    log = site / "imported.log"

    # WHEN --version and a built-in command run
    version = _apix(site, "--version")
    graph = _apix(site, "graph", str(site / "missing.py"))

    # THEN neither imported the plugin
    assert version.returncode == 0 and version.stdout.startswith("apix-core ")
    assert graph.returncode == 2 and "no such file" in graph.stderr
    assert not log.exists()
    # AND help does
    assert _apix(site, "--help").returncode == 0
    assert log.read_text() == "hello_plugin\n"


def test_broken_plugins_warn_and_the_cli_goes_on(site: Path) -> None:
    # GIVEN a distribution whose entry points are broken: a missing module, a value that is no
    # Typer nor callable, and a command name that clashes with a built-in one
    _distribution(
        site,
        "broken_plugin",
        """
        [apix.cli]
        broken = no_such_module_for_apix:app
        notcli = hello_plugin:NOT_A_COMMAND
        run = hello_plugin:app
        """,
    )

    # WHEN help is shown, and a working plugin and a built-in command run
    helped = _apix(site, "--help")
    greeted = _apix(site, "hello", "greet")
    graph_help = _apix(site, "graph", "--help")

    # THEN each broken entry point costs one warning line naming it, and nothing else fails
    assert helped.returncode == 0, helped.stderr
    warnings = helped.stderr.splitlines()
    assert len(warnings) == 3, helped.stderr
    assert all(line.startswith("warning: apix.cli entry point ") for line in warnings)
    expected = "'broken' (no_such_module_for_apix:app) failed to load: ModuleNotFoundError"
    assert expected in warnings[0]
    assert "'notcli'" in warnings[1] and "neither a typer.Typer nor" in warnings[1]
    assert "'run'" in warnings[2] and "already taken" in warnings[2]
    assert "Traceback" not in helped.stderr
    assert " hello " in helped.stdout and "Run an app until its queues drain" in helped.stdout
    assert greeted.returncode == 0 and greeted.stdout == "hello world\n"
    assert graph_help.returncode == 0 and graph_help.stderr == ""
