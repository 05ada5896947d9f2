"""``apix``: run apps locally, send messages, inspect entities, dead letters and errors.

The console-script entry point. Kept tiny so ``apix --version`` answers without importing typer,
rich or the store; everything else goes to the root command in :mod:`apix_core.cli.app`, which
imports each command's module (``run``, ``send``, ``entities``, ``dlq``, ``errors``, ``graph``,
``db``) only when it is used. apix errors print a red message and exit with code 2.
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> None:
    """Console-script entry point (``apix``)."""
    if sys.argv[1:] == ["--version"]:
        from apix_core import __version__

        sys.stdout.write(f"apix-core {__version__}\n")
        return
    from apix_core.cli.app import cli

    cli()


def __getattr__(name: str) -> Any:
    # ``from apix_core.cli.main import cli`` keeps working without making the import eager.
    if name == "cli":
        from apix_core.cli.app import cli

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
