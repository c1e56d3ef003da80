"""``sluice query "SQL"`` and ``sluice tables``: what analysts run against the Iceberg tables.

In: SQL naming the tables by plain name (DuckDB dialect; the example queries in
``infra/athena/queries`` run unchanged on Athena); the catalog under ``--state-dir``.
Out: rows as an aligned table, CSV or JSON lines; with ``--explain`` also, per table read, the
pushed-down time filter and the data files planned / total (JSON lines on standard error).
``sluice tables``: per table its rows, snapshots, data files and last commit, from metadata only.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from sluice.cli.output import FORMATS, add_state_dir, open_tables, write_rows
from sluice.core.errors import ConfigError
from sluice.core.extras import require

__all__ = ["register"]


def register(commands: Any) -> None:
    query = commands.add_parser(
        "query",
        help="run SQL (DuckDB) over the Iceberg tables, pruning partitions by time",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    query.add_argument(
        "sql", help="SQL naming tables by plain name, e.g. 'SELECT * FROM dead_letters'"
    )
    query.add_argument("--format", choices=FORMATS, default="table", help="output (table)")
    add_state_dir(query)
    query.add_argument(
        "--explain",
        action="store_true",
        help="also print, per table read, the pushed-down filter and data files planned/total "
        "(JSON lines on stderr)",
    )
    query.set_defaults(handler=run_query, parser_of=query)

    tables = commands.add_parser(
        "tables",
        help="list the tables: rows, snapshots, data files, last commit (metadata only)",
        description="List the tables: rows, snapshots, data files and last commit, from metadata.",
    )
    tables.add_argument("--format", choices=FORMATS, default="table", help="output (table)")
    add_state_dir(tables)
    tables.set_defaults(handler=run_tables, parser_of=tables)


def run_query(args: argparse.Namespace) -> int:
    require("query", "duckdb", "pyiceberg", "pyarrow")
    from sluice.analysts.query import QueryError, TablePlan, run

    catalog, namespace = open_tables(args)
    plans: list[TablePlan] = []
    try:
        columns, rows = run(catalog, namespace, args.sql, plans)
    except QueryError as err:
        raise ConfigError(f"query failed: {err}") from None
    if args.explain:
        for plan in plans:
            sys.stderr.buffer.write(orjson.dumps({"explain": plan.as_dict()}) + b"\n")
        sys.stderr.buffer.flush()
    write_rows(sys.stdout.buffer, columns, rows, args.format)
    return 0


def run_tables(args: argparse.Namespace) -> int:
    require("query", "duckdb", "pyiceberg", "pyarrow")
    from sluice.analysts.query import table_infos

    catalog, namespace = open_tables(args)
    infos = table_infos(catalog, namespace)
    columns = ["table", "rows", "snapshots", "data_files", "last_commit"]
    rows = [
        (i.table, i.rows, i.snapshots, i.data_files,
         i.last_commit.isoformat() if i.last_commit else None)
        for i in infos
    ]  # fmt: skip
    write_rows(sys.stdout.buffer, columns, rows, args.format)
    return 0
