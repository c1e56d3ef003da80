"""Which tables a query reads, and the time bounds that certainly filter every row it reads of each.

In: SQL naming the Sluice tables by their plain names; the DuckDB session it will run in.
Out: ``tables_named_in``: the tables the SQL reads; ``extract_bounds``: per table, the ``Bound``s
(``column op timestamp``) that may be pushed down to its pyiceberg scan, which prunes partitions
and files (DuckDB still applies the whole query).
Why this conservative: a pushed-down predicate that does not hold for every row the query reads of
a table gives a wrong answer without an error, so the query is read from DuckDB's own parse tree
(``sluice.analysts.sql_tree``) and every bound's value is computed by DuckDB, never parsed here.

A predicate is pushed down only when it is a comparison (``>=``, ``>``, ``<=``, ``<``, ``=``,
``BETWEEN``) of the table's time column (its partition source; bare, or qualified by the table's
name or alias) with a literal (``'text'``, ``$$text$$``, ``TIMESTAMP 'text'``, ``TIMESTAMPTZ
'text'``, ``DATE 'text'``) or with ``now()`` or ``current_timestamp`` plus or minus literal
intervals (as a lower bound only: DuckDB reads the clock later, when the bound is weaker); it is an
AND term of the WHERE clause of the SELECT block whose FROM reads the table (any join but
POSITIONAL, ASOF, NATURAL or USING the time column, and not from the right side of SEMI/ANTI); and
the query is one SELECT statement naming the table once, with no node kind or table function
``sql_tree`` does not know. Anything else (explicit casts, arithmetic on a literal, OR, NOT, CASE,
a correlated column) pushes nothing down: in any doubt the whole table is read.

A bound is the constant as DuckDB evaluates it in the query's own session (UTC, as Athena); a probe
then asks DuckDB whether timestamps one microsecond either side of it pass the comparison as the
query writes it, and a bound the probe does not confirm is dropped. So a ``TIMESTAMP`` literal's UTC
offset is ignored (DuckDB drops it: a TIMESTAMP has no zone) while a ``TIMESTAMPTZ`` literal's or a
plain string's is applied (the string is cast to the column's TIMESTAMPTZ), as DuckDB compares them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
from pyiceberg.expressions import (
    BooleanExpression,
    EqualTo,
    GreaterThan,
    GreaterThanOrEqual,
    LessThan,
    LessThanOrEqual,
)

from sluice.analysts.sql_tree import (
    TABLE_REFS,
    Block,
    Evaluator,
    Node,
    Scan,
    is_clock,
    is_literal,
    is_string,
    nodes,
    serialize,
    session,
)
from sluice.tables.specs import TABLES

__all__ = ["Bound", "extract_bounds", "tables_named_in"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_JOINS = {"INNER", "LEFT", "RIGHT", "OUTER", "SEMI", "ANTI"}
_COMPARISONS = {
    "COMPARE_GREATERTHANOREQUALTO": ">=",
    "COMPARE_GREATERTHAN": ">",
    "COMPARE_LESSTHANOREQUALTO": "<=",
    "COMPARE_LESSTHAN": "<",
    "COMPARE_EQUAL": "=",
}
_FLIPPED = {">=": "<=", ">": "<", "<=": ">=", "<": ">", "=": "="}
# The types DuckDB compares with a TIMESTAMPTZ column by casting them to TIMESTAMPTZ (VARCHAR: a
# string literal, which DuckDB casts to the column's type).
_TIME_TYPES = {"TIMESTAMP WITH TIME ZONE", "TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "DATE"}


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


def tables_named_in(sql: str, con: duckdb.DuckDBPyConnection | None = None) -> list[str]:
    """The Sluice tables a SQL text reads: its table references, by DuckDB's parser.

    SQL DuckDB cannot serialize (DESCRIBE, PIVOT, EXPLAIN, a syntax error) falls back to a word
    match of the whole text: an unused table only costs a read.
    """
    own = con is None
    con = con or session()
    try:
        tree = serialize(con, sql)
    finally:
        if own:
            con.close()
    try:
        words = {
            str(n.get("table_name", "")).lower()
            for n in nodes(tree["statements"] if tree is not None else [])
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


def _relations(ref: Node, filtered: bool, out: list[_Relation], using: set[str]) -> bool:
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
    if kind in TABLE_REFS:
        out.append(_Relation(alias, None, False))
        return True
    return False


def _conjuncts(node: Node | None) -> list[Node]:
    if node is None:
        return []
    if node.get("class") == "CONJUNCTION" and node.get("type") == "CONJUNCTION_AND":
        return [term for child in node.get("children", []) for term in _conjuncts(child)]
    return [node]


def _micros(value: int) -> datetime | None:
    """The instant ``value`` microseconds after the epoch; None past Python's years 1 to 9999."""
    try:
        return _EPOCH + timedelta(microseconds=value)
    except OverflowError:  # DuckDB's timestamps reach years 290309 BC to 294247
        return None


def _comparison_bounds(
    evaluator: Evaluator, column: str, node: Node, column_left: bool
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
    if kind not in _TIME_TYPES and not (kind == "VARCHAR" and is_string(constant)):
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
    value = _micros(micros)
    return [Bound(column, pushed, value)] if certain and value is not None else []


def _between_bounds(evaluator: Evaluator, column: str, node: Node, high_clock: bool) -> list[Bound]:
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
        if kind not in _TIME_TYPES and not (kind == "VARCHAR" and is_string(side)):
            return []
    # The timestamps passing form one interval: each end is where a pass meets a fail. A clock
    # in the high end moves it up by the time the query runs: only the low end is certain then.
    bounds = []
    low_value, high_value = _micros(low_us), _micros(high_us)
    if at_low is True and below is False and low_value is not None:
        bounds.append(Bound(column, ">=", low_value))
    if at_high is True and above is False and not high_clock and high_value is not None:
        bounds.append(Bound(column, "<=", high_value))
    return bounds


def _block_bounds(block: Block, evaluator: Evaluator, wanted: set[str]) -> dict[str, list[Bound]]:
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

    def table_of(column: Node) -> str | None:
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

    def constant(side: Node) -> tuple[bool, bool]:
        """Whether ``side`` is a supported constant, and whether it reads the clock."""
        if is_literal(side):
            return True, False
        return (True, True) if is_clock(side, current_timestamp) else (False, False)

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
    con = con or session()
    try:
        tree = serialize(con, sql)
        if tree is None or len(tree["statements"]) != 1:
            return {}  # several statements could read a table twice, or change the session
        scan = Scan()
        try:
            scan.walk(tree["statements"][0]["node"], top=True)
        except RecursionError:
            return {}
        if scan.unknown:
            return {}
        wanted = {t for t, n in scan.refs.items() if n == 1 and t not in scan.doubtful}
        if not wanted:
            return {}
        evaluator = Evaluator(con, now)
        bounds: dict[str, list[Bound]] = {}
        for block in scan.blocks:
            for table, found in _block_bounds(block, evaluator, wanted).items():
                bounds.setdefault(table, []).extend(found)
        return bounds
    finally:
        if own:
            con.close()
