"""``python -m apix_core.cli`` runs the ``apix`` command line."""

from apix_core.cli.main import main

main()
