"""The ``apix`` command line (typer + rich).

Not imported by :mod:`apix_core`, so ``import apix_core`` stays cheap.
"""
