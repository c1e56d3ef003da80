"""The command line: ``sluice``."""

from sluice.cli.main import main

__all__ = ["main"]
