"""Query the Iceberg tables with DuckDB, without any DuckDB extension (nothing is downloaded).

In: a catalog (local SQLite or Glue) and SQL naming the tables by their plain names.
Out: column names and rows, plus a plan saying, per table read, the bounds pushed down and how many
data files were read.
Why DuckDB's own parser: a pushed-down predicate that does not hold for every row the query reads of
a table gives a wrong answer without an error, so the SQL is read by DuckDB (``json_serialize_sql``,
the parse tree as JSON, built in) and every bound's value is computed by DuckDB, never parsed here.

Tables are read through pyiceberg and registered as Arrow views, so only the tables a query names are
read. Predicates on a table's time column (its partition source) are pushed down to the pyiceberg
scan, which prunes partitions and files; DuckDB still applies the whole query. A predicate is pushed
down only when it is a comparison (``>=``, ``>``, ``<=``, ``<``, ``=``, ``BETWEEN``) of the time
column (bare, or qualified by the table's name or alias) with a literal (``'text'``, ``$$text$$``,
``TIMESTAMP 'text'``, ``TIMESTAMPTZ 'text'``, ``DATE 'text'``) or with ``now()`` or
``current_timestamp`` plus or minus literal intervals (as a lower bound only: DuckDB reads the clock
later, when the bound is weaker); it is an AND term of the WHERE clause of the SELECT block whose
FROM reads the table (any join but POSITIONAL, ASOF, NATURAL or USING the time column, and not from
the right side of SEMI/ANTI); and the query is one SELECT statement naming the table once, with no
node kind or table function this module does not know. Anything else (explicit casts, arithmetic on
a literal, OR, NOT, CASE, a correlated column) pushes nothing down: in any doubt the whole table is
read.

A bound is the constant as DuckDB evaluates it in the query's own session (UTC, as Athena); a probe
then asks DuckDB whether timestamps one microsecond either side of it pass the comparison as the
query writes it, and a bound the probe does not confirm is dropped. So a ``TIMESTAMP`` literal's UTC
offset is ignored (DuckDB drops it: a TIMESTAMP has no zone) while a ``TIMESTAMPTZ`` literal's or a
plain string's is applied (the string is cast to the column's TIMESTAMPTZ), as DuckDB compares them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import orjson
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

_Node = dict[str, Any]

_NO_LOCATION = 2**64 - 1  # the query_location of a node DuckDB's parser made up (not in the text)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMPARISONS = {
    "COMPARE_GREATERTHANOREQUALTO": ">=",
    "COMPARE_GREATERTHAN": ">",
    "COMPARE_LESSTHANOREQUALTO": "<=",
    "COMPARE_LESSTHAN": "<",
    "COMPARE_EQUAL": "=",
}
_FLIPPED = {">=": "<=", ">": "<", "<=": ">=", "<": ">", "=": "="}
# Everything the parse tree may hold; anything else (a node kind of a newer DuckDB) reads all tables.
_EXPRESSIONS = {
    "BETWEEN", "CASE", "CAST", "COLLATE", "COLUMN_REF", "COMPARISON", "CONJUNCTION", "CONSTANT",
    "DEFAULT", "FUNCTION", "LAMBDA", "LAMBDA_REF", "OPERATOR", "PARAMETER", "POSITIONAL_REFERENCE",
    "STAR", "SUBQUERY", "TYPE", "WINDOW",
}  # fmt: skip
_QUERY_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE"}
_TABLE_REFS = {
    "BASE_TABLE",
    "JOIN",
    "SUBQUERY",
    "TABLE_FUNCTION",
    "EXPRESSION_LIST",
    "EMPTY",
    "SHOW_REF",
}
_OTHER_NODES = {
    "ORDER_MODIFIER", "LIMIT_MODIFIER", "LIMIT_PERCENT_MODIFIER", "DISTINCT_MODIFIER",
    "ORDER_DEFAULT", "ASCENDING", "DESCENDING",
}  # fmt: skip
_TABLE_FUNCTIONS = {"range", "generate_series", "unnest"}  # read no table by name
_JOINS = {"INNER", "LEFT", "RIGHT", "OUTER", "SEMI", "ANTI"}
_CLOCKS = {"now", "get_current_timestamp", "transaction_timestamp"}
_INTERVAL_UNITS = {
    "to_microseconds", "to_milliseconds", "to_seconds", "to_minutes", "to_hours", "to_days",
    "to_weeks", "to_months", "to_quarters", "to_years", "to_decades", "to_centuries",
    "to_millennia",
}  # fmt: skip
# The types DuckDB compares with a TIMESTAMPTZ column by casting them to TIMESTAMPTZ (VARCHAR: a
# string literal, which DuckDB casts to the column's type).
_TIME_TYPES = {"TIMESTAMP WITH TIME ZONE", "TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "DATE"}


class QueryError(Exception):
    """A query that cannot run, with a message fit for the user (unknown table, SQL error)."""


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


def _session() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the session settings every query runs with."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    """The one row of a query (fetched to the end: DuckDB refuses other work on an open result)."""
    rows = con.execute(sql, params).fetchall()
    return rows[0] if len(rows) == 1 else None


def _serialize(con: duckdb.DuckDBPyConnection, sql: str) -> _Node | None:
    """DuckDB's parse tree of ``sql``; None for a syntax error or a statement other than SELECT."""
    try:
        row = _one(con, "SELECT json_serialize_sql(?::VARCHAR)", [sql])
        tree = orjson.loads(row[0]) if row else None
    except (duckdb.Error, orjson.JSONDecodeError):  # JSON nested too deep for orjson, too
        return None
    if not isinstance(tree, dict) or tree.get("error") is not False:
        return None  # {"error": true, "error_type": "parser", "error_message": ...}
    return tree


def _nodes(tree: Any) -> Iterator[_Node]:
    """Every JSON object of a parse tree."""
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _nodes(value)


def tables_named_in(sql: str, con: duckdb.DuckDBPyConnection | None = None) -> list[str]:
    """The Sluice tables a SQL text reads: its table references, by DuckDB's parser.

    SQL DuckDB cannot serialize (DESCRIBE, PIVOT, EXPLAIN, a syntax error) falls back to a word
    match of the whole text: an unused table only costs a read.
    """
    own = con is None
    con = con or _session()
    try:
        tree = _serialize(con, sql)
    finally:
        if own:
            con.close()
    try:
        words = {
            str(n.get("table_name", "")).lower()
            for n in _nodes(tree["statements"] if tree is not None else [])
            if n.get("type") in ("BASE_TABLE", "SHOW_REF")
        }
    except RecursionError:
        tree = None
    if tree is None:
        words = {w.lower() for w in _WORD.findall(sql)}
    return [name for name in TABLES if name in words]


@dataclass(frozen=True, slots=True)
class _Relation:
    """One relation in the FROM clause of a SELECT block."""

    name: str  # what a column is qualified with: the alias, else the table name ("" if neither)
    table: str | None  # the Sluice table it is, None for anything else (a CTE, a subquery, ...)
    filtered: bool  # whether the block's WHERE filters its rows (not the right of SEMI/ANTI)


@dataclass(frozen=True, slots=True)
class _Block:
    node: _Node
    top: bool  # not inside a subquery: no outer query's column can be seen from it


@dataclass(slots=True)
class _Scan:
    """What the whole parse tree says: table references, SELECT blocks, and any reason for doubt."""

    refs: Counter[str] = field(default_factory=Counter)
    doubtful: set[str] = field(default_factory=set)
    unknown: bool = False
    blocks: list[_Block] = field(default_factory=list)

    def walk(self, node: Any, top: bool = False) -> None:
        if isinstance(node, list):
            for item in node:
                self.walk(item)
            return
        if not isinstance(node, dict):
            return
        kind = node.get("type") if isinstance(node.get("type"), str) else None
        if "class" in node:
            if node["class"] not in _EXPRESSIONS:
                self.unknown = True
        elif kind in _QUERY_NODES:
            self._query(node, top)
            return
        elif kind in _TABLE_REFS:
            self._table_ref(node)
        elif kind is not None and kind not in _OTHER_NODES:
            self.unknown = True
        for value in node.values():
            self.walk(value)

    def _query(self, node: _Node, top: bool) -> None:
        for entry in node.get("cte_map", {}).get("map", []):
            if str(entry.get("key", "")).lower() in TABLES:
                self.doubtful.add(str(entry["key"]).lower())  # a CTE hiding a table
            value = entry.get("value", {})
            self.walk(value.get("query_node"), top)
            self.walk({k: v for k, v in value.items() if k != "query_node"})
        if node["type"] == "SELECT_NODE":
            self.blocks.append(_Block(node, top))
        for key, value in node.items():
            if key == "cte_map":
                continue
            if node["type"] != "SELECT_NODE" and key in ("children", "left", "right"):
                for child in value if isinstance(value, list) else [value]:
                    self.walk(child, top)  # the members of a UNION see what the UNION sees
            else:
                self.walk(value)

    def _table_ref(self, node: _Node) -> None:
        kind = node["type"]
        if kind in ("BASE_TABLE", "SHOW_REF"):
            name = str(node.get("table_name", "")).lower()
            if name in TABLES:
                self.refs[name] += 1
                if kind == "SHOW_REF" or any(
                    node.get(k) for k in ("schema_name", "catalog_name", "column_name_alias")
                ):
                    self.doubtful.add(name)
                if node.get("at_clause") is not None or node.get("sample") is not None:
                    self.doubtful.add(name)
        elif kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            name = str(function.get("function_name", "")).lower()
            if name not in _TABLE_FUNCTIONS or function.get("schema") or function.get("catalog"):
                self.unknown = True  # query_table('t'), query('...'): a table read by a string


def _relations(ref: _Node, filtered: bool, out: list[_Relation], using: set[str]) -> bool:
    """The relations of a FROM clause into ``out``; False when the joins are beyond this module."""
    kind = ref.get("type")
    if ref.get("sample") is not None:
        return False
    if kind == "EMPTY":
        return True
    if kind == "JOIN":
        if ref.get("ref_type") not in ("REGULAR", "CROSS") or ref.get("join_type") not in _JOINS:
            return False  # NATURAL, POSITIONAL (rows pair by position), ASOF (nearest match)
        using.update(str(c).lower() for c in ref.get("using_columns", []))
        right = filtered and ref["join_type"] not in ("SEMI", "ANTI")
        return _relations(ref["left"], filtered, out, using) and _relations(
            ref["right"], right, out, using
        )
    alias = str(ref.get("alias") or "").lower()
    if kind == "BASE_TABLE":
        name = str(ref.get("table_name", "")).lower()
        out.append(_Relation(alias or name, name if name in TABLES else None, filtered))
        return True
    if kind in _TABLE_REFS:
        out.append(_Relation(alias, None, False))
        return True
    return False


def _conjuncts(node: _Node | None) -> list[_Node]:
    if node is None:
        return []
    if node.get("class") == "CONJUNCTION" and node.get("type") == "CONJUNCTION_AND":
        return [term for child in node.get("children", []) for term in _conjuncts(child)]
    return [node]


def _located(node: _Node) -> bool:
    return bool(node.get("query_location", _NO_LOCATION) != _NO_LOCATION)


def _plain_function(node: _Node, names: set[str], arity: int) -> bool:
    return (
        node.get("class") == "FUNCTION"
        and str(node.get("function_name", "")).lower() in names
        and len(node.get("arguments", [])) == arity
        and not node.get("schema")
        and not node.get("catalog")
        and node.get("filter") is None
        and not node.get("distinct")
        and not node.get("export_state")
        and not (node.get("order_bys") or {}).get("orders")
    )


def _arguments(node: _Node) -> list[_Node]:
    return [a.get("expression") or {} for a in node.get("arguments", [])]


def _string(node: _Node) -> bool:
    return node.get("class") == "CONSTANT" and (node.get("literal") or {}).get("kind") == "STRING"


def _typed_literal(node: _Node) -> bool:
    """``TIMESTAMP 'text'``, ``INTERVAL 'text'``: a cast DuckDB's parser made of a typed literal.

    An explicit ``CAST('text' AS t)`` or ``'text'::t`` has both its string and its type in the text;
    in a typed literal one of them has no location of its own.
    """
    child, kind = node.get("child") or {}, node.get("type_expr") or {}
    return (
        node.get("class") == "CAST"
        and node.get("try_cast") is False
        and _string(child)
        and not kind.get("children")
        and (not _located(child) or not _located(kind))
    )


def _number(node: _Node) -> bool:
    """The amount of ``INTERVAL 2 HOURS``: a literal under the casts and trunc the parser adds."""
    if node.get("class") == "CONSTANT":
        return (node.get("literal") or {}).get("kind") in ("INTEGER", "NUMERIC", "STRING")
    if node.get("class") == "CAST" and not _located(node) and node.get("try_cast") is False:
        return _number(node.get("child") or {})
    if _plain_function(node, {"trunc"}, 1) and not _located(node):
        return _number(_arguments(node)[0])
    return False


def _interval(node: _Node) -> bool:
    if _typed_literal(node):
        return str((node.get("type_expr") or {}).get("type_name", "")).upper() == "INTERVAL"
    return _plain_function(node, _INTERVAL_UNITS, 1) and _number(_arguments(node)[0])


def _clock(node: _Node, current_timestamp: bool) -> bool:
    """``now()``, ``current_timestamp``, plus or minus intervals: never decreasing with the clock."""
    if _plain_function(node, _CLOCKS, 0):
        return True
    if node.get("class") == "COLUMN_REF":
        names = [str(n).lower() for n in node.get("column_names", [])]
        return current_timestamp and names == ["current_timestamp"]
    if _plain_function(node, {"+"}, 2):
        left, right = _arguments(node)
        return (_clock(left, current_timestamp) and _interval(right)) or (
            _interval(left) and _clock(right, current_timestamp)
        )
    if _plain_function(node, {"-"}, 2):
        left, right = _arguments(node)
        return _clock(left, current_timestamp) and _interval(right)
    return False


def _literal(node: _Node) -> bool:
    return _string(node) or (
        _typed_literal(node)
        and str((node.get("type_expr") or {}).get("type_name", "")).upper() != "INTERVAL"
    )


def _fixed_clock(node: Any, now: _Node) -> Any:
    """``node`` with every clock replaced by ``now`` (a TIMESTAMPTZ literal)."""
    if isinstance(node, list):
        return [_fixed_clock(item, now) for item in node]
    if not isinstance(node, dict):
        return node
    if _plain_function(node, _CLOCKS, 0) or (
        node.get("class") == "COLUMN_REF"
        and [str(n).lower() for n in node.get("column_names", [])] == ["current_timestamp"]
    ):
        return now
    return {key: _fixed_clock(value, now) for key, value in node.items()}


def _shape(node: Any) -> Any:
    """A parse tree without its text positions: equal for the same SQL however it is written."""
    if isinstance(node, list):
        return [_shape(item) for item in node]
    if isinstance(node, dict):
        return {
            k: _shape(v)
            for k, v in node.items()
            if k not in ("query_location", "query_location_length")
        }
    return node


class _Evaluator:
    """DuckDB evaluating constant expressions in the query's session (same settings, same clock)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, now: datetime | None) -> None:
        self.con = con
        self.template = _serialize(con, "SELECT NULL")  # a statement to put an expression in
        self.fixed = now is not None
        self.clock: _Node | None = None  # ``now`` as a TIMESTAMPTZ literal
        if now is not None:
            stamp = now.astimezone(UTC).isoformat()
            self.clock = self._expression(f"CAST('{stamp}' AS TIMESTAMPTZ)")

    def _expression(self, sql: str) -> _Node | None:
        tree = _serialize(self.con, f"SELECT {sql}")
        if tree is None or len(tree["statements"]) != 1:
            return None
        select = tree["statements"][0]["node"]
        if select.get("type") != "SELECT_NODE" or len(select.get("select_list", [])) != 1:
            return None
        node: _Node = select["select_list"][0]
        return node

    def text(self, node: _Node) -> str | None:
        """SQL for ``node`` from DuckDB itself; None unless it parses back to the same tree."""
        if self.fixed:
            if self.clock is None:
                return None
            node = _fixed_clock(node, self.clock)
        if self.template is None:
            return None
        tree = orjson.loads(orjson.dumps(self.template))
        tree["statements"][0]["node"]["select_list"] = [{**node, "alias": ""}]
        try:
            row = _one(
                self.con, "SELECT json_deserialize_sql(?::JSON)", [orjson.dumps(tree).decode()]
            )
        except duckdb.Error:
            return None
        sql = str(row[0]) if row else ""
        if not sql.startswith("SELECT "):
            return None
        text = sql.removeprefix("SELECT ")
        again = self._expression(text)
        if again is None or _shape({**again, "alias": ""}) != _shape({**node, "alias": ""}):
            return None
        return text

    def probe(self, sql: str) -> tuple[Any, ...] | None:
        try:
            row = _one(self.con, sql)
        except duckdb.Error:
            return None
        return tuple(row) if row is not None else None


def _micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _comparison_bounds(
    evaluator: _Evaluator, column: str, node: _Node, column_left: bool
) -> list[Bound]:
    """The bound of ``column op constant`` (or ``constant op column``) as DuckDB compares it."""
    op = _COMPARISONS[node["type"]]
    constant = node["right"] if column_left else node["left"]
    text = evaluator.text(constant)
    if text is None:
        return []
    pushed = op if column_left else _FLIPPED[op]

    def test(point: str) -> str:
        return f"{point} {op} ({text})" if column_left else f"({text}) {op} {point}"

    row = evaluator.probe(
        f"SELECT typeof(({text})), epoch_us(v), isfinite(v), {test('below')}, {test('v')}, "
        f"{test('above')} FROM (SELECT v, v - INTERVAL 1 MICROSECOND AS below, "
        f"v + INTERVAL 1 MICROSECOND AS above FROM (SELECT CAST(({text}) AS TIMESTAMPTZ) AS v))"
    )
    if row is None or row[1] is None or row[2] is not True:
        return []
    kind, micros, _, below, at, above = row
    if kind not in _TIME_TYPES and not (kind == "VARCHAR" and _string(constant)):
        return []
    # Timestamps in a column are whole microseconds. A ">=" comparison passes every timestamp
    # above one that passes; if the one just below the bound fails, every row passing is >= it.
    certain = {
        ">=": below is False,
        ">": at is False,
        "<=": above is False,
        "<": at is False,
        "=": at is True and below is False and above is False,
    }[pushed]
    return [Bound(column, pushed, _micros(micros))] if certain else []


def _between_bounds(
    evaluator: _Evaluator, column: str, node: _Node, high_clock: bool
) -> list[Bound]:
    """``column BETWEEN low AND high``: the bound on each side DuckDB certainly applies."""
    low, high = evaluator.text(node["lower"]), evaluator.text(node["upper"])
    if low is None or high is None:
        return []

    def test(point: str) -> str:
        return f"{point} BETWEEN ({low}) AND ({high})"

    row = evaluator.probe(
        f"SELECT typeof(({low})), typeof(({high})), epoch_us(lo), epoch_us(hi), "
        f"isfinite(lo) AND isfinite(hi), {test('below')}, {test('lo')}, {test('hi')}, "
        f"{test('above')} FROM (SELECT lo, hi, lo - INTERVAL 1 MICROSECOND AS below, "
        f"hi + INTERVAL 1 MICROSECOND AS above FROM (SELECT CAST(({low}) AS TIMESTAMPTZ) AS lo, "
        f"CAST(({high}) AS TIMESTAMPTZ) AS hi))"
    )
    if row is None or row[2] is None or row[3] is None or row[4] is not True:
        return []
    low_kind, high_kind, low_us, high_us, _, below, at_low, at_high, above = row
    for kind, side in ((low_kind, node["lower"]), (high_kind, node["upper"])):
        if kind not in _TIME_TYPES and not (kind == "VARCHAR" and _string(side)):
            return []
    # The timestamps passing form one interval: each end is where a pass meets a fail. A clock
    # in the high end moves it up by the time the query runs: only the low end is certain then.
    bounds = []
    if at_low is True and below is False:
        bounds.append(Bound(column, ">=", _micros(low_us)))
    if at_high is True and above is False and not high_clock:
        bounds.append(Bound(column, "<=", _micros(high_us)))
    return bounds


def _block_bounds(block: _Block, evaluator: _Evaluator, wanted: set[str]) -> dict[str, list[Bound]]:
    """Bounds for the tables in ``wanted`` that this block's FROM reads, from its WHERE clause."""
    node = block.node
    relations: list[_Relation] = []
    using: set[str] = set()
    if node.get("sample") is not None or not _relations(
        node.get("from_table") or {"type": "EMPTY"}, True, relations, using
    ):
        return {}
    if not any(r.table in wanted for r in relations):
        return {}
    # current_timestamp is a column name to DuckDB: it is the clock only when no column can have
    # that name (Sluice tables only, no alias of that name, no outer query).
    current_timestamp = (
        block.top
        and all(
            r.table is not None
            and "current_timestamp" not in {f.name for f in TABLES[r.table].schema.fields}
            for r in relations
        )
        and all(
            str(item.get("alias", "")).lower() != "current_timestamp"
            for item in node.get("select_list", [])
        )
    )

    def table_of(column: _Node) -> str | None:
        """The table in ``wanted`` whose time column ``column`` certainly is."""
        if column.get("class") != "COLUMN_REF":
            return None
        names = [str(n).lower() for n in column.get("column_names", [])]
        if len(names) == 1:
            owners = [
                r
                for r in relations
                if r.table is not None
                and names[0] in {f.name for f in TABLES[r.table].schema.fields}
            ]  # another relation with the column makes DuckDB fail: "Ambiguous reference"
            if len(owners) != 1:
                return None
            owner = owners[0]
        elif len(names) == 2:
            matches = [r for r in relations if r.name == names[0]]
            if len(matches) != 1:
                return None  # a column of an outer query, or of nothing
            owner = matches[0]
        else:
            return None
        if owner.table not in wanted or not owner.filtered or names[-1] in using:
            return None  # a USING column may be the other side's value (FULL JOIN)
        return owner.table if TABLES[owner.table].time_column == names[-1] else None

    def constant(side: _Node) -> tuple[bool, bool]:
        """Whether ``side`` is a supported constant, and whether it reads the clock."""
        if _literal(side):
            return True, False
        return (True, True) if _clock(side, current_timestamp) else (False, False)

    bounds: dict[str, list[Bound]] = {}
    for term in _conjuncts(node.get("where_clause")):
        table: str | None = None
        found: list[Bound] = []
        if term.get("class") == "COMPARISON" and term.get("type") in _COMPARISONS:
            left, right = term.get("left") or {}, term.get("right") or {}
            for column, other, column_left in ((left, right, True), (right, left, False)):
                table = table_of(column)
                if table is None:
                    continue
                ok, clock = constant(other)
                op = _COMPARISONS[term["type"]]
                pushed = op if column_left else _FLIPPED[op]
                if ok and (not clock or pushed in (">", ">=")):
                    found = _comparison_bounds(
                        evaluator, TABLES[table].time_column, term, column_left
                    )
                break
        elif term.get("class") == "BETWEEN":
            table = table_of(term.get("input") or {})
            low_ok, _ = constant(term.get("lower") or {})
            high_ok, high_clock = constant(term.get("upper") or {})
            if table is not None and low_ok and high_ok:
                found = _between_bounds(evaluator, TABLES[table].time_column, term, high_clock)
        if table is not None and found:
            bounds.setdefault(table, []).extend(found)
    return bounds


def extract_bounds(
    sql: str, now: datetime | None = None, con: duckdb.DuckDBPyConnection | None = None
) -> dict[str, list[Bound]]:
    """Per table, the time-column predicates that certainly filter every row the query reads of it.

    Conservative by design (see the module docstring): in any doubt a table gets no bound. ``con``
    is the session the query will run in (a new UTC session when None); ``now`` fixes the clock
    (DuckDB's, read before the query runs, when None).
    """
    own = con is None
    con = con or _session()
    try:
        tree = _serialize(con, sql)
        if tree is None or len(tree["statements"]) != 1:
            return {}  # several statements could read a table twice, or change the session
        scan = _Scan()
        try:
            scan.walk(tree["statements"][0]["node"], top=True)
        except RecursionError:
            return {}
        if scan.unknown:
            return {}
        wanted = {t for t, n in scan.refs.items() if n == 1 and t not in scan.doubtful}
        if not wanted:
            return {}
        evaluator = _Evaluator(con, now)
        bounds: dict[str, list[Bound]] = {}
        for block in scan.blocks:
            for table, found in _block_bounds(block, evaluator, wanted).items():
                bounds.setdefault(table, []).extend(found)
        return bounds
    finally:
        if own:
            con.close()


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
    receives one ``TablePlan`` per table read.
    """
    con = _session()
    try:
        bounds = extract_bounds(sql, con=con) if sql is not None and prune else {}
        for name in tables_named_in(sql, con) if sql is not None else list(TABLES):
            try:
                table = catalog.load_table(f"{namespace}.{name}")
            except NoSuchTableError:
                raise QueryError(
                    f"table {name} does not exist in namespace {namespace!r} yet (the stream job "
                    "creates the tables on its first run)"
                ) from None
            plan = TablePlan(name, bounds.get(name, []))
            con.register(name, _read(table, plan))
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
    ``QueryError`` for unknown tables and SQL errors.
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
