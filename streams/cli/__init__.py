"""The ``tripwire`` command line, one module per command group (``tripwire --help``)."""

from streams.cli.main import main

__all__ = ["main"]
