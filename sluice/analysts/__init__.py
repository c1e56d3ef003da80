"""For analysts: DuckDB queries over the tables with partition pruning, Athena DDL.

Needs the ``query`` extra (DuckDB, and the tables); importing this package without it stops with
one line saying so (``pip install 'sluice[query]'``).
"""

from sluice.core.extras import require

require("query", "duckdb", "pyiceberg", "pyarrow")
