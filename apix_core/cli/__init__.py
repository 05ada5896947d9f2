"""The ``apix`` command line (typer; rich draws the output).

``main`` is the console script, ``app`` the root command, one module per command group, shared
helpers in ``_common``. Not imported by :mod:`apix_core`, so ``import apix_core`` stays cheap.
"""
