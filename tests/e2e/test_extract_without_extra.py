"""Extraction without the ``[extract]`` extra: a clear error that says what to install."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def _run(code: str) -> subprocess.CompletedProcess[str]:
    # A fresh interpreter where httpx cannot be imported (None in sys.modules is how CPython
    # marks a module as absent), as in an environment installed without the extra.
    script = "import sys\nsys.modules['httpx'] = None\n" + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )


def test_importing_the_http_extractor_names_the_extra() -> None:
    # GIVEN no httpx  WHEN a user imports the HTTP extractor
    done = _run(
        """
        from apix_core.extract import ExtractDependencyError
        try:
            from apix_core.extract import HttpExtractor
        except ExtractDependencyError as exc:
            print("ERR", exc.code, exc)
        """
    )
    # THEN the error is typed and says what to install
    assert done.returncode == 0, done.stderr
    assert "ERR EXTRACT_MISSING_DEPENDENCY" in done.stdout
    assert "pip install 'apix-core[extract]'" in done.stdout


def test_the_factory_names_the_extra_too() -> None:
    # GIVEN no httpx  WHEN an extractor is looked up by name
    done = _run(
        """
        from apix_core.extract import ExtractorFactory, ExtractDependencyError
        try:
            ExtractorFactory.get("http")
        except ExtractDependencyError as exc:
            print("ERR", exc)
        """
    )
    # THEN the same clear error, not a bare ModuleNotFoundError
    assert done.returncode == 0, done.stderr
    assert "ERR apix_core.extract needs httpx" in done.stdout


def test_apix_run_of_a_yaml_pipeline_without_the_extra_says_what_to_install(tmp_path) -> None:
    # GIVEN an environment without pyyaml (part of the extra)  WHEN a user runs the partner-sync
    # example, whose pipeline is a YAML file
    app = Path(__file__).resolve().parents[2] / "examples" / "partner_sync" / "app.py"
    script = (
        "import sys\nsys.modules['yaml'] = None\n"
        "from apix_core.cli.main import main\n"
        f"sys.argv = ['apix', 'run', {str(app)!r}]\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "APIX_HOME": str(tmp_path / ".apix")},
    )
    # THEN one clear line naming the extra, and no traceback
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "pip install 'apix-core[extract]'" in out, out
    assert "Traceback" not in out, out
