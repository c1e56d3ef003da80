"""Iceberg storage: table specs, the exactly-once writer, maintenance, the raw archive, re-drive.

Needs the ``tables`` extra (pyiceberg, pyarrow); importing this package without it stops with one
line saying so (``pip install 'sluice[tables]'``) rather than an ``ImportError`` deep inside.
"""

from sluice.core.extras import require

require("tables", "pyiceberg", "pyarrow")
