"""Query the Iceberg tables with DuckDB, without any DuckDB extension (nothing is downloaded).

In: a catalog (local SQLite or Glue) and SQL naming the tables by their plain names.
Out: column names and rows, plus a plan saying, per table read, how many data files were read.

Tables are read through pyiceberg and registered as Arrow views, so only the tables a query names are
read. Simple predicates on a table's time column (its partition source) are pushed down to the
pyiceberg scan, which prunes partitions and files; DuckDB still applies the whole query. Extraction is
conservative: a predicate is pushed down only when it certainly filters every row of the table the
query reads (a top-level AND term of the WHERE clause of the block that reads the table, the table
named once, no NOT); in any doubt the whole table is read. Naive timestamps are UTC (the DuckDB
session runs in UTC, as Athena does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThan,
    GreaterThanOrEqual,
    LessThan,
    LessThanOrEqual,
)
from pyiceberg.table import Table

from sluice.tables.specs import TABLES

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(
    r"""(?P<ws>\s+|--[^\n]*|/\*.*?\*/)
      | (?P<str>'(?:[^']|'')*')
      | (?P<qid>"(?:[^"]|"")*")
      | (?P<num>\d+(?:\.\d+)?)
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op><=|>=|<>|!=|[()<>=.,;*+\-/%\[\]:|!~&^@])
      | (?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
_CLAUSE_END = {
    "GROUP", "ORDER", "LIMIT", "HAVING", "UNION", "EXCEPT", "INTERSECT", "WINDOW", "QUALIFY",
    "OFFSET", "FETCH", "WHERE", "FROM", "SELECT", "JOIN", "ON", "USING",
}  # fmt: skip
_NOT_ALIASES = _CLAUSE_END | {
    "AS", "INNER", "LEFT", "RIGHT", "FULL", "OUTER", "CROSS", "NATURAL", "LATERAL", "TABLESAMPLE",
}  # fmt: skip
_OPS = {
    ">=": GreaterThanOrEqual,
    ">": GreaterThan,
    "<=": LessThanOrEqual,
    "<": LessThan,
    "=": EqualTo,
}
_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}


class QueryError(Exception):
    """A query that cannot run, with a message fit for the user (unknown table, SQL error)."""


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str
    upper: str
    depth: int
    group: int  # the parenthesised group (or the top level, 0) the token is in


@dataclass(frozen=True, slots=True)
class Bound:
    """One pushed-down predicate: ``column op value``."""

    column: str
    op: str
    value: datetime

    def expression(self) -> BooleanExpression:
        literal = self.value.isoformat()
        if self.op == ">=":
            return GreaterThanOrEqual(term=self.column, value=literal)
        if self.op == ">":
            return GreaterThan(term=self.column, value=literal)
        if self.op == "<=":
            return LessThanOrEqual(term=self.column, value=literal)
        if self.op == "<":
            return LessThan(term=self.column, value=literal)
        return EqualTo(term=self.column, value=literal)

    def __str__(self) -> str:
        return f"{self.column} {self.op} {self.value.isoformat()}"


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


def _tokens(sql: str) -> list[_Tok]:
    out: list[_Tok] = []
    depth = 0
    groups = [0]
    next_group = 1
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup or "other"
        if kind == "ws":
            continue
        text = match.group()
        if text == ")":
            depth = max(depth - 1, 0)
            if len(groups) > 1:
                groups.pop()
        out.append(_Tok(kind, text, text.upper(), depth, groups[-1]))
        if text == "(":
            depth += 1
            groups.append(next_group)
            next_group += 1
    return out


def tables_named_in(sql: str) -> list[str]:
    """The Sluice tables a SQL text mentions (a word match; an unused one only costs a read)."""
    words = {t.text.lower() for t in _tokens(sql) if t.kind == "word"}
    return [name for name in TABLES if name in words]


def _parse_time(text: str) -> datetime | None:
    value = text.strip()
    if len(value) > 10 and value[10] in "Tt":
        value = f"{value[:10]} {value[11:]}"
    for suffix in (" UTC", "Z", " Z"):
        if value.upper().endswith(suffix.upper()):
            value = value[: -len(suffix)].strip() + "+00:00"
            break
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _literal(toks: list[_Tok], i: int, now: datetime) -> tuple[datetime | None, int]:
    """The time value of the literal starting at token ``i`` and the index after it (None: unsure)."""
    if i < len(toks) and toks[i].upper in ("TIMESTAMP", "TIMESTAMPTZ", "DATE"):
        if i + 1 < len(toks) and toks[i + 1].kind == "str":
            return _parse_time(toks[i + 1].text[1:-1].replace("''", "'")), i + 2
        return None, i + 1
    if i < len(toks) and toks[i].kind == "str":
        return _parse_time(toks[i].text[1:-1].replace("''", "'")), i + 1
    if i < len(toks) and toks[i].upper in ("CURRENT_TIMESTAMP", "NOW"):
        j = i + 1
        if toks[i].upper == "NOW":
            if toks[j : j + 2] and [t.text for t in toks[j : j + 2]] == ["(", ")"]:
                j += 2
            else:
                return None, j
        if j < len(toks) and toks[j].text in ("-", "+") and j + 1 < len(toks):
            sign = -1 if toks[j].text == "-" else 1
            if toks[j + 1].upper != "INTERVAL" or j + 2 >= len(toks):
                return None, j + 1
            amount, unit, k = _interval(toks, j + 2)
            if amount is None:
                return None, k
            return now + sign * timedelta(seconds=amount * _UNITS[unit]), k
        return now, j
    return None, i + 1


def _interval(toks: list[_Tok], i: int) -> tuple[float | None, str, int]:
    """``'1' DAY``, ``'1 day'`` or ``1 DAY`` at token ``i``: (amount, unit, index after)."""
    first = toks[i]
    if first.kind == "str":
        parts = first.text[1:-1].split()
        if len(parts) == 2:
            amount, unit, k = parts[0], parts[1], i + 1
        elif len(parts) == 1 and i + 1 < len(toks):
            amount, unit, k = parts[0], toks[i + 1].text, i + 2
        else:
            return None, "", i + 1
    elif first.kind == "num" and i + 1 < len(toks):
        amount, unit, k = first.text, toks[i + 1].text, i + 2
    else:
        return None, "", i + 1
    unit = unit.lower().removesuffix("s")
    try:
        return (float(amount), unit, k) if unit in _UNITS else (None, "", k)
    except ValueError:
        return None, "", k


def _is_where_term(toks: list[_Tok], start: int, end: int) -> bool:
    """Whether ``toks[start:end]`` is a top-level AND term of a WHERE clause."""
    depth = toks[start].depth
    i = start - 1
    while i >= 0:
        tok = toks[i]
        if tok.depth < depth:  # an opening parenthesis: inside an expression, not a clause
            return False
        if tok.depth == depth:
            if tok.upper == "WHERE":
                break
            if tok.upper in ("OR", "CASE", "WHEN", "THEN", "ELSE") or tok.upper in _CLAUSE_END:
                return False
        i -= 1
    if i < 0:
        return False
    for tok in toks[end:]:
        if tok.depth < depth or (tok.depth == depth and tok.upper in _CLAUSE_END):
            break
        if tok.depth == depth and tok.upper in ("OR", "CASE", "WHEN", "THEN", "ELSE"):
            return False
    return True


def _block_tables(toks: list[_Tok], where: int) -> dict[str, str]:
    """Alias (or name) -> table for the Sluice tables in the FROM of the block owning ``where``."""
    group = toks[where].group
    found: dict[str, str] = {}
    for i in range(where - 1, -1, -1):
        tok = toks[i]
        if tok.group == group and tok.depth == toks[where].depth and tok.upper == "SELECT":
            break
        if tok.group != group or tok.kind != "word" or tok.text.lower() not in TABLES:
            continue
        name = tok.text.lower()
        found[name] = name
        j = i + 1
        if j < len(toks) and toks[j].upper == "AS":
            j += 1
        if j < len(toks) and toks[j].kind == "word" and toks[j].upper not in _NOT_ALIASES:
            found[toks[j].text.lower()] = name
    return found


def extract_bounds(sql: str, now: datetime | None = None) -> dict[str, list[Bound]]:
    """Per table, the time-column predicates that certainly filter every row the query reads of it.

    Conservative by design: tables named more than once, queries with NOT (other than ``IS NOT``),
    predicates under OR/CASE or inside an expression, and literals it cannot read give no bound.
    """
    now = now or datetime.now(UTC)
    toks = _tokens(sql)
    words = [t for t in toks if t.kind == "word"]
    for i, tok in enumerate(words):
        if tok.upper == "NOT" and not (i > 0 and words[i - 1].upper == "IS"):
            return {}
    counts: dict[str, int] = {}
    for tok in words:
        if tok.text.lower() in TABLES:
            counts[tok.text.lower()] = counts.get(tok.text.lower(), 0) + 1
    bounds: dict[str, list[Bound]] = {}
    for i, tok in enumerate(toks):
        if tok.kind != "word":
            continue
        start, qualifier, column = i, None, tok.text.lower()
        if i >= 2 and toks[i - 1].text == "." and toks[i - 2].kind == "word":
            start, qualifier = i - 2, toks[i - 2].text.lower()
        if i + 1 >= len(toks) or (i + 1 < len(toks) and toks[i + 1].text == "."):
            continue
        op = toks[i + 1].text.upper()
        parsed: list[tuple[str, datetime | None]] = []
        relative = any(t.upper in ("CURRENT_TIMESTAMP", "NOW") for t in toks[i + 2 : i + 8])
        if op in _OPS:
            value, end = _literal(toks, i + 2, now)
            parsed.append((op, value))
        elif op == "BETWEEN":
            low, j = _literal(toks, i + 2, now)
            if j >= len(toks) or toks[j].upper != "AND":
                continue
            high, end = _literal(toks, j + 1, now)
            parsed += [(">=", low), ("<=", high)]
        else:
            continue
        if relative and any(o not in (">", ">=") for o, _ in parsed):
            continue  # DuckDB reads the clock later: only a lower bound stays a superset
        if any(v is None for _, v in parsed) or not _is_where_term(toks, start, end):
            continue
        before = toks[start - 1].upper if start > 0 else ""
        after = toks[end] if end < len(toks) else None
        if before not in ("WHERE", "AND") or not (
            after is None
            or after.depth < tok.depth
            or after.upper == "AND"
            or after.upper in _CLAUSE_END
            or after.text == ";"
        ):
            continue
        where = next(
            k
            for k in range(start, -1, -1)
            if toks[k].upper == "WHERE" and toks[k].group == toks[start].group
        )
        block = _block_tables(toks, where)
        if qualifier is not None:
            candidates = {block[qualifier]} if qualifier in block else set()
        else:
            candidates = {t for t in block.values() if TABLES[t].time_column == column}
            others = set(block.values()) - candidates
            if any(column in {f.name for f in TABLES[t].schema.fields} for t in others):
                candidates = set()  # the column is ambiguous among the block's tables
        if len(candidates) != 1:
            continue
        (table,) = candidates
        if TABLES[table].time_column != column or counts.get(table, 0) != 1:
            continue
        bounds.setdefault(table, []).extend(Bound(column, o, v) for o, v in parsed if v is not None)
    return bounds


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
    catalog: Catalog, namespace: str, sql: str | None = None, plans: list[TablePlan] | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (UTC) with the tables ``sql`` names (all when None) registered.

    With ``sql``, time-column predicates found in it prune the scans; ``plans`` receives one
    ``TablePlan`` per table read.
    """
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    bounds = extract_bounds(sql) if sql is not None else {}
    for name in tables_named_in(sql) if sql is not None else list(TABLES):
        try:
            table = catalog.load_table(f"{namespace}.{name}")
        except NoSuchTableError:
            con.close()
            raise QueryError(
                f"table {name} does not exist in namespace {namespace!r} yet (the stream job "
                "creates the tables on its first run)"
            ) from None
        plan = TablePlan(name, bounds.get(name, []))
        con.register(name, _read(table, plan))
        if plans is not None:
            plans.append(plan)
    return con


_MISSING = re.compile(r"Table with name (\S+) does not exist", re.IGNORECASE)


def run(
    catalog: Catalog, namespace: str, sql: str, plans: list[TablePlan] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of ``sql`` over the tables; ``plans`` receives how each table was read.

    Raises ``QueryError`` for unknown tables and SQL errors.
    """
    con = connect(catalog, namespace, sql, plans)
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
        raise QueryError(str(err).splitlines()[0]) from None
    except duckdb.Error as err:
        raise QueryError(str(err).splitlines()[0]) from None
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
