"""``python -m sluice`` is the ``sluice`` command."""

import sys

from sluice.cli import main

__all__: list[str] = []

sys.exit(main())
