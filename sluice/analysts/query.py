"""Run SQL over the Iceberg tables with DuckDB, without any DuckDB extension (nothing is downloaded).

In: a catalog (local SQLite or Glue) and SQL naming the tables by their plain names.
Out: column names and rows, plus a plan saying, per table read, the bounds pushed down and how many
data files were read; or ``QueryError``, one line for the user, for anything the SQL or the tables
make fail. ``table_infos``: per table its rows, snapshots, data files and last commit, from metadata.
Why: tables are read through pyiceberg and registered as Arrow views, so only the tables a query
names are read (``sluice.analysts.pruning`` finds them, and the time bounds that prune their scans);
DuckDB then runs the whole query in a UTC session, as Athena does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError, ResolveError, ValidationError
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression
from pyiceberg.table import Table

from sluice.analysts.pruning import Bound, extract_bounds, tables_named_in
from sluice.analysts.sql_tree import session
from sluice.core.errors import SluiceError
from sluice.tables.specs import TABLES

__all__ = ["QueryError", "TableInfo", "TablePlan", "connect", "run", "table_infos"]


class QueryError(SluiceError):
    """A query that cannot run, in one line fit for the user (unknown table, SQL error, a table
    whose files cannot be read)."""


# What reading a table raises when its files are missing, unreadable or damaged: OSError (a missing
# or unreadable file, local or S3), EOFError and ValueError (a truncated or corrupt Avro manifest, a
# corrupt Parquet file: pyarrow's ArrowInvalid is a ValueError), any other Arrow error, pyiceberg's
# errors for metadata it cannot parse or a schema it cannot resolve, and DuckDB refusing the view.
_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    pa.ArrowException,
    ValidationError,
    ResolveError,
    duckdb.Error,
)


def _first_line(err: BaseException) -> str:
    """The first line of an error's message (its type when it has none)."""
    return next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)


@dataclass(slots=True)
class TablePlan:
    """How one table is read: the pushed-down bounds, and data files planned out of the total."""

    table: str
    bounds: list[Bound] = field(default_factory=list)
    files_planned: int = 0
    files_total: int = 0
    rows_read: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "filter": " AND ".join(str(b) for b in self.bounds) or None,
            "files_planned": self.files_planned,
            "files_total": self.files_total,
            "rows_read": self.rows_read,
        }


def _data_file_count(table: Table) -> int:
    snapshot = table.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return 0
    return int(snapshot.summary.additional_properties.get("total-data-files", 0))


def _read(table: Table, plan: TablePlan) -> Any:
    """The table's rows within the plan's bounds, as Arrow; fills the plan's counts."""
    row_filter: BooleanExpression = AlwaysTrue()
    for bound in plan.bounds:
        row_filter = And(row_filter, bound.expression())
    scan = table.scan(row_filter=row_filter)
    plan.files_total = _data_file_count(table)
    plan.files_planned = sum(1 for _ in scan.plan_files())
    arrow = scan.to_arrow()
    plan.rows_read = arrow.num_rows
    return arrow


def connect(
    catalog: Catalog,
    namespace: str,
    sql: str | None = None,
    plans: list[TablePlan] | None = None,
    prune: bool = True,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (UTC) with the tables ``sql`` names (all when None) registered.

    With ``sql`` (and ``prune``), time-column predicates found in it prune the scans; ``plans``
    receives one ``TablePlan`` per table read. Raises ``QueryError`` for a table that does not exist
    or whose metadata or data files cannot be read.
    """
    con = session()
    try:
        bounds = extract_bounds(sql, con=con) if sql is not None and prune else {}
        for name in tables_named_in(sql, con) if sql is not None else list(TABLES):
            plan = TablePlan(name, bounds.get(name, []))
            try:
                con.register(name, _read(catalog.load_table(f"{namespace}.{name}"), plan))
            except NoSuchTableError:
                raise QueryError(
                    f"table {name} does not exist in namespace {namespace!r} yet (the stream job "
                    "creates the tables on its first run)"
                ) from None
            except _READ_ERRORS as err:
                raise QueryError(f"cannot read table {name}: {_first_line(err)}") from None
            if plans is not None:
                plans.append(plan)
    except BaseException:
        con.close()
        raise
    return con


_MISSING = re.compile(r"Table with name (\S+) does not exist", re.IGNORECASE)


def run(
    catalog: Catalog,
    namespace: str,
    sql: str,
    plans: list[TablePlan] | None = None,
    prune: bool = True,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of ``sql`` over the tables; ``plans`` receives how each table was read.

    ``prune=False`` reads every table whole (the same answer, for checking pruning). Raises
    ``QueryError`` (one line) for unknown tables, SQL errors (every DuckDB error) and tables that
    cannot be read (see ``connect``).
    """
    con = connect(catalog, namespace, sql, plans, prune)
    try:
        relation = con.sql(sql)
        if relation is None:
            return [], []
        return list(relation.columns), relation.fetchall()
    except duckdb.CatalogException as err:
        missing = _MISSING.search(str(err))
        if missing:
            raise QueryError(
                f"unknown table {missing.group(1)!r}; the tables are: {', '.join(TABLES)}"
            ) from None
        raise QueryError(_first_line(err)) from None
    except duckdb.Error as err:
        raise QueryError(_first_line(err)) from None
    finally:
        con.close()


@dataclass(frozen=True, slots=True)
class TableInfo:
    """What the metadata says about one table (no data file is read)."""

    table: str
    rows: int
    snapshots: int
    data_files: int
    last_commit: datetime | None


def table_infos(catalog: Catalog, namespace: str) -> list[TableInfo]:
    """Row count, snapshot count, data-file count and last commit time of every existing table."""
    infos = []
    for name in TABLES:
        try:
            table = catalog.load_table(f"{namespace}.{name}")
        except NoSuchTableError:
            continue
        snapshot = table.current_snapshot()
        summary = snapshot.summary.additional_properties if snapshot and snapshot.summary else {}
        infos.append(
            TableInfo(
                name,
                int(summary.get("total-records", 0)),
                len(table.snapshots()),
                int(summary.get("total-data-files", 0)),
                datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC) if snapshot else None,
            )
        )
    return infos
