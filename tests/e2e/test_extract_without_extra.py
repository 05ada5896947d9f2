"""Extraction without the ``[extract]`` extra: a clear error that says what to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap


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
