"""Run SQL over the Iceberg tables with DuckDB, without any DuckDB extension (nothing is downloaded).

In: a catalog (local SQLite or Glue) and SQL naming the tables by their plain names.
Out: column names and rows, plus a plan saying, per table read, the bounds pushed down and how many
data files were read; or ``QueryError``, one line for the user, for anything the SQL or the tables
make fail. ``table_infos``: per table its rows, snapshots, data files and last commit, from metadata.
Why: tables are read through pyiceberg and registered as Arrow views, so only the tables a query
names are read (``sluice.analysts.pruning`` finds them, and the time bounds that prune their scans);
DuckDB then runs the whole query in a UTC session, as Athena does.
Guarded: the SQL must be exactly one read-only query (``QueryRefused`` otherwise, before any table
is read), and the session is locked down before any of it runs (``sql_tree.lock_down``: no file,
URL, ATTACH or extension from SQL, no setting changed back), so a query sees the tables and nothing
else of the machine. ``unsafe=True`` skips both: any DuckDB SQL, with DuckDB's own defaults.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pydantic
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError, ResolveError, ValidationError
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression
from pyiceberg.table import Table
from sqlalchemy.exc import SQLAlchemyError

from sluice.analysts.pruning import Bound, extract_bounds, tables_named_in
from sluice.analysts.sql_tree import lock_down, read_only_refusal, session
from sluice.core.errors import SluiceError
from sluice.tables.specs import TABLES

__all__ = [
    "READ_ERRORS",
    "QueryError",
    "QueryRefused",
    "TableInfo",
    "TablePlan",
    "connect",
    "read_failure",
    "run",
    "table_infos",
]


class QueryError(SluiceError):
    """A query that cannot run, in one line fit for the user (unknown table, SQL error, a table
    whose files cannot be read)."""


class QueryRefused(QueryError):
    """SQL that is not exactly one read-only query (without ``unsafe``); nothing was read."""


# What reading a table raises when its files are missing, unreadable or damaged: OSError (a missing
# or unreadable file, local or S3), EOFError and ValueError (a truncated or corrupt Avro manifest, a
# corrupt Parquet file: pyarrow's ArrowInvalid is a ValueError), any other Arrow error, pyiceberg's
# errors for metadata it cannot parse or a schema it cannot resolve, and DuckDB refusing the view.
# Garbage in a manifest also makes pyiceberg's Avro reader raise zlib.error (a deflate block),
# SystemError (its decoder given a negative length), KeyError or TypeError (a mangled schema in the
# file's header); and a damaged SQLite catalog makes loading the table raise SQLAlchemy's errors.
READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    pa.ArrowException,
    ValidationError,
    ResolveError,
    duckdb.Error,
    zlib.error,
    SystemError,
    KeyError,
    TypeError,
    SQLAlchemyError,
)


def _first_line(err: BaseException) -> str:
    """The first line of an error's message (its type when it has none)."""
    return next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)


def read_failure(err: BaseException) -> str:
    """What a table read failed on, in one line: the file, the metadata field, the catalog."""
    cause = err.__cause__
    if isinstance(err, ValidationError) and isinstance(cause, pydantic.ValidationError):
        first = cause.errors()[0] if cause.errors() else None
        if first is not None:
            where = ".".join(str(part) for part in first["loc"])
            return f"invalid table metadata: {where + ': ' if where else ''}{first['msg']}"
    if isinstance(err, SQLAlchemyError):
        original = getattr(err, "orig", None)
        return f"the catalog is damaged: {_first_line(original or err)}"
    return _first_line(err)


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
    unsafe: bool = False,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (UTC) with the tables ``sql`` names (all when None) registered.

    With ``sql`` (and ``prune``), time-column predicates found in it prune the scans; ``plans``
    receives one ``TablePlan`` per table read. Raises ``QueryError`` for a table that does not exist
    or whose metadata or data files cannot be read. The session is locked down (``lock_down``)
    before DuckDB evaluates anything of ``sql``, unless ``unsafe``; the tables registered after
    that are Arrow views, which need no file access.
    """
    con = session()
    try:
        if not unsafe:
            lock_down(con)
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
            except READ_ERRORS as err:
                raise QueryError(f"cannot read table {name}: {read_failure(err)}") from err
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
    unsafe: bool = False,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of ``sql`` over the tables; ``plans`` receives how each table was read.

    ``prune=False`` reads every table whole (the same answer, for checking pruning). Raises
    ``QueryRefused`` for SQL that is not exactly one read-only query (unless ``unsafe``), before
    reading anything; ``QueryError`` (one line) for unknown tables, SQL errors (every DuckDB error,
    a file function refused by the locked session among them) and tables that cannot be read (see
    ``connect``).
    """
    if not unsafe:
        _check_read_only(sql)
    con = connect(catalog, namespace, sql, plans, prune, unsafe)
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
    except duckdb.PermissionException as err:
        raise QueryError(
            f"{_first_line(err)} (sluice query reads the tables only; --unsafe allows DuckDB's "
            "file functions)"
        ) from None
    except duckdb.Error as err:
        raise QueryError(_first_line(err)) from None
    finally:
        con.close()


def _check_read_only(sql: str) -> None:
    """Raise ``QueryRefused`` unless ``sql`` is exactly one read-only query (by DuckDB's parser)."""
    con = session()
    try:
        lock_down(con)
        if not con.extract_statements(sql):
            raise QueryError("no SQL statement given")
        reason = read_only_refusal(con, sql)
    except duckdb.Error as err:  # a syntax error: one line, as DuckDB says it
        raise QueryError(_first_line(err)) from None
    finally:
        con.close()
    if reason is not None:
        raise QueryRefused(reason)


@dataclass(frozen=True, slots=True)
class TableInfo:
    """What the metadata says about one table (no data file is read)."""

    table: str
    rows: int
    snapshots: int
    data_files: int
    last_commit: datetime | None


def table_infos(catalog: Catalog, namespace: str) -> list[TableInfo]:
    """Row count, snapshot count, data-file count and last commit time of every existing table.

    Raises ``QueryError`` (one line, naming the table and what failed: the metadata file missing
    or corrupt, the catalog damaged) for a table whose metadata cannot be read.
    """
    infos = []
    for name in TABLES:
        try:
            infos.append(_table_info(catalog.load_table(f"{namespace}.{name}"), name))
        except NoSuchTableError:
            continue
        except READ_ERRORS as err:
            raise QueryError(f"cannot read table {name}: {read_failure(err)}") from err
    return infos


def _table_info(table: Table, name: str) -> TableInfo:
    snapshot = table.current_snapshot()
    summary = snapshot.summary.additional_properties if snapshot and snapshot.summary else {}
    return TableInfo(
        name,
        int(summary.get("total-records", 0)),
        len(table.snapshots()),
        int(summary.get("total-data-files", 0)),
        datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC) if snapshot else None,
    )
