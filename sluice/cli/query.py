"""``sluice query "SQL"`` and ``sluice tables``: what analysts run against the Iceberg tables.

In: one read-only query naming the tables by plain name (DuckDB dialect: SELECT, WITH, VALUES,
DESCRIBE, SHOW, SUMMARIZE or EXPLAIN; the example queries in ``infra/athena/queries`` run unchanged
on Athena); the catalog under ``--state-dir``.
Out: rows as an aligned table, CSV or JSON lines; with ``--explain`` also, per table read, the
pushed-down time filter and the data files planned / total (JSON lines on standard error).
The query sees the tables and nothing else: DuckDB's file and URL functions, COPY, ATTACH, SET and
extensions are refused, and nothing is downloaded. ``--unsafe`` runs any DuckDB SQL (several
statements, file functions, COPY, ATTACH, extensions DuckDB may download) with your permissions.
``sluice tables``: per table its rows, snapshots, data files and last commit, from metadata only.
A damaged catalog or table is one line naming it (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

import orjson

from sluice.cli.output import FORMATS, add_state_dir, open_tables, warehouse_settings, write_rows
from sluice.core.errors import ConfigError
from sluice.core.extras import require

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

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
        "--unsafe",
        action="store_true",
        help="run any DuckDB SQL: several statements, file functions (read_csv, read_text...), "
        "COPY, ATTACH, extensions (DuckDB may download them); it can read and write any file you can",
    )
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
    from sluice.analysts.query import QueryError, QueryRefused, TablePlan, run

    catalog, namespace = _open_catalog(args)
    plans: list[TablePlan] = []
    try:
        columns, rows = run(catalog, namespace, args.sql, plans, unsafe=args.unsafe)
    except QueryRefused as err:
        raise ConfigError(f"query refused: {err}; --unsafe runs any DuckDB SQL") from None
    except QueryError as err:
        raise ConfigError(f"query failed: {err}") from err
    if args.explain:
        for plan in plans:
            sys.stderr.buffer.write(orjson.dumps({"explain": plan.as_dict()}) + b"\n")
        sys.stderr.buffer.flush()
    write_rows(sys.stdout.buffer, columns, rows, args.format)
    return 0


def run_tables(args: argparse.Namespace) -> int:
    require("query", "duckdb", "pyiceberg", "pyarrow")
    from sluice.analysts.query import QueryError, table_infos

    catalog, namespace = _open_catalog(args)
    try:
        infos = table_infos(catalog, namespace)
    except QueryError as err:
        raise ConfigError(f"tables failed: {err}") from err
    columns = ["table", "rows", "snapshots", "data_files", "last_commit"]
    rows = [
        (i.table, i.rows, i.snapshots, i.data_files,
         i.last_commit.isoformat() if i.last_commit else None)
        for i in infos
    ]  # fmt: skip
    write_rows(sys.stdout.buffer, columns, rows, args.format)
    return 0


def _open_catalog(args: argparse.Namespace) -> tuple[Catalog, str]:
    """``open_tables``, with a damaged SQLite catalog (not a database, malformed) as one line."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return open_tables(args)
    except SQLAlchemyError as err:
        uri = warehouse_settings(args).resolved_catalog_uri()
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()
        raise ConfigError(
            f"cannot open the catalog {uri.removeprefix('sqlite:///')}: "
            f"{reason[0] if reason else type(err).__name__}"
        ) from err
