"""DuckDB's parse tree of a query: reading it, recognizing constants in it, and valuing them.

In: SQL text and a DuckDB connection (the session the query will run in).
Out: the parse tree as JSON objects (``serialize``, ``nodes``); a ``Scan`` of a whole tree: the
Sluice tables it references, its SELECT blocks, and any reason for doubt (a node kind or table
function this module does not know, a table hidden by a CTE or read with a schema, alias, AT or
SAMPLE); recognizers of the constants a pushed-down bound may be (``is_literal``: ``'text'``,
``$$text$$``, ``TIMESTAMP 'text'``, ...; ``is_clock``: ``now()`` or ``current_timestamp`` plus or
minus literal intervals); an ``Evaluator`` that writes a node back as SQL and runs probes; and the
guard of an analyst's session: ``read_only_refusal`` (why the SQL is not one read-only query, by
DuckDB's parser: statement types, and the query nodes of its tree) and ``lock_down`` (no file,
network or extension access from SQL, and no setting SQL can change back).
Why: the SQL is read by DuckDB (``json_serialize_sql``, built in) and every constant is written
back by DuckDB (``json_deserialize_sql``, checked to parse to the same tree) and valued by DuckDB
in the query's own session, never parsed or computed here: what this module does not recognize
exactly, it reports as doubt, and the caller then pushes nothing down.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson

from sluice.tables.specs import TABLES

__all__ = [
    "TABLE_REFS",
    "Block",
    "Evaluator",
    "Node",
    "Scan",
    "is_clock",
    "is_literal",
    "is_string",
    "lock_down",
    "nodes",
    "read_only_refusal",
    "serialize",
    "session",
]

Node = dict[str, Any]

_NO_LOCATION = 2**64 - 1  # the query_location of a node DuckDB's parser made up (not in the text)
# Everything the parse tree may hold; anything else (a node kind of a newer DuckDB) reads all tables.
_EXPRESSIONS = {
    "BETWEEN", "CASE", "CAST", "COLLATE", "COLUMN_REF", "COMPARISON", "CONJUNCTION", "CONSTANT",
    "DEFAULT", "FUNCTION", "LAMBDA", "LAMBDA_REF", "OPERATOR", "PARAMETER", "POSITIONAL_REFERENCE",
    "STAR", "SUBQUERY", "TYPE", "WINDOW",
}  # fmt: skip
_QUERY_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE"}
TABLE_REFS = {
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
_CLOCKS = {"now", "get_current_timestamp", "transaction_timestamp"}
_INTERVAL_UNITS = {
    "to_microseconds", "to_milliseconds", "to_seconds", "to_minutes", "to_hours", "to_days",
    "to_weeks", "to_months", "to_quarters", "to_years", "to_decades", "to_centuries",
    "to_millennia",
}  # fmt: skip


def session() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the session settings every query runs with."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


# Set, in this order, before any SQL of the analyst runs: verified on DuckDB 2.0.1 (after them,
# read_text/read_csv/glob/COPY/ATTACH/INSTALL/LOAD/EXPORT fail with a Permission Error, functions of
# extensions not loaded are unknown, and SET/RESET of any option fail: "the configuration has been
# locked"). Arrow tables registered later, and spilling to the temporary directory, still work.
_LOCKED_SETTINGS = (
    ("enable_external_access", "false"),  # no file or URL read or written by SQL, no INSTALL/LOAD
    ("autoload_known_extensions", "false"),  # no extension loaded because a query names a function
    ("autoinstall_known_extensions", "false"),  # and none downloaded
    ("python_enable_replacements", "false"),  # no Python variable scanned as a table by its name
    ("lock_configuration", "true"),  # last: no SQL can turn any of the above back on
)


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """Forbid the session any external access, extension loading and setting change, for good."""
    for name, value in _LOCKED_SETTINGS:
        con.execute(f"SET {name} = {value}")


# The statements an analyst's query may be (``WITH``, ``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``,
# ``FROM``, ``TABLE``, ``PIVOT ... IN`` are all SELECT statements to DuckDB's parser), and the query
# nodes its tree may hold: a SELECT can also hide INSERT, UPDATE, DELETE or COPY ... TO in a CTE
# (``INSERT_QUERY_NODE``, ``COPY_QUERY_NODE``, ...).
READ_ONLY_KINDS = "SELECT, WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN"
_READ_ONLY_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"}
_STATEMENT_NAMES = {
    "MULTI": "PIVOT without an IN list (several statements)",
    "LOAD": "INSTALL or LOAD",
}


def read_only_refusal(con: duckdb.DuckDBPyConnection, sql: str) -> str | None:
    """Why ``sql`` is not exactly one read-only query (None when it is), read by DuckDB's parser.

    Raises ``duckdb.ParserException`` for SQL DuckDB cannot parse.
    """
    statements = con.extract_statements(sql)
    if not statements:
        return "no SQL statement given"
    if len(statements) > 1:
        return f"one statement at a time, this SQL has {len(statements)}"
    return _statement_refusal(con, statements[0])


def _statement_refusal(con: duckdb.DuckDBPyConnection, statement: Any) -> str | None:
    kind = statement.type.name
    if kind == "EXPLAIN":
        inner = _explained(statement.query)
        try:
            statements = con.extract_statements(inner) if inner is not None else []
        except duckdb.ParserException:  # EXPLAIN (FORMAT json) ...: options this does not read
            statements = []
        if len(statements) != 1 or statements[0].type.name != "SELECT":
            return f"only EXPLAIN [ANALYZE] of a query is read-only ({READ_ONLY_KINDS})"
        return _statement_refusal(con, statements[0])
    if kind != "SELECT":
        what = _STATEMENT_NAMES.get(kind, kind)
        return f"{what} is not a read-only query ({READ_ONLY_KINDS})"
    tree = serialize(con, statement.query)
    if tree is None:
        return "DuckDB cannot serialize the parse tree to check it (nested too deep?)"
    writers = sorted(_query_node_kinds(tree) - _READ_ONLY_NODES)
    if writers:
        names = ", ".join(w.removesuffix("_NODE").removesuffix("_QUERY") for w in writers)
        return f"a query holding {names} is not read-only ({READ_ONLY_KINDS})"
    return None


def _explained(sql: str) -> str | None:
    """The text ``EXPLAIN [ANALYZE]`` explains, by DuckDB's tokenizer; None if written otherwise."""
    tokens = duckdb.tokenize(sql)
    ends = [start for start, _ in tokens[1:]] + [len(sql)]
    words = [
        (start, sql[start:end].strip().upper())
        for (start, kind), end in zip(tokens, ends, strict=True)
        if kind != duckdb.token_type.comment
    ]
    if not words or words[0][1] != "EXPLAIN":
        return None
    rest = words[2:] if len(words) > 1 and words[1][1] == "ANALYZE" else words[1:]
    return sql[rest[0][0] :] if rest else None


def _query_node_kinds(tree: Any) -> set[str]:
    """The kinds of query node (``SELECT_NODE``, ``INSERT_QUERY_NODE``...) anywhere in a tree."""
    kinds: set[str] = set()
    stack = [tree]  # not recursive: a deep tree must not exhaust Python's stack
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            kind = item.get("type")
            if isinstance(kind, str) and kind.endswith("_NODE"):
                kinds.add(kind)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return kinds


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    """The one row of a query (fetched to the end: DuckDB refuses other work on an open result)."""
    rows = con.execute(sql, params).fetchall()
    return rows[0] if len(rows) == 1 else None


def serialize(con: duckdb.DuckDBPyConnection, sql: str) -> Node | None:
    """DuckDB's parse tree of ``sql``; None for a syntax error or a statement other than SELECT."""
    try:
        row = _one(con, "SELECT json_serialize_sql(?::VARCHAR)", [sql])
        tree = orjson.loads(row[0]) if row else None
    except (duckdb.Error, orjson.JSONDecodeError):  # JSON nested too deep for orjson, too
        return None
    if not isinstance(tree, dict) or tree.get("error") is not False:
        return None  # {"error": true, "error_type": "parser", "error_message": ...}
    return tree


def nodes(tree: Any) -> Iterator[Node]:
    """Every JSON object of a parse tree."""
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from nodes(value)


@dataclass(frozen=True, slots=True)
class Block:
    """One SELECT block of the query, where the scan found it."""

    node: Node
    top: bool  # not inside a subquery: no outer query's column can be seen from it


@dataclass(slots=True)
class Scan:
    """What the whole parse tree says: table references, SELECT blocks, and any reason for doubt."""

    refs: Counter[str] = field(default_factory=Counter)
    doubtful: set[str] = field(default_factory=set)
    unknown: bool = False
    blocks: list[Block] = field(default_factory=list)

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
        elif kind in TABLE_REFS:
            self._table_ref(node)
        elif kind is not None and kind not in _OTHER_NODES:
            self.unknown = True
        for value in node.values():
            self.walk(value)

    def _query(self, node: Node, top: bool) -> None:
        for entry in node.get("cte_map", {}).get("map", []):
            if str(entry.get("key", "")).lower() in TABLES:
                self.doubtful.add(str(entry["key"]).lower())  # a CTE hiding a table
            value = entry.get("value", {})
            self.walk(value.get("query_node"), top)
            self.walk({k: v for k, v in value.items() if k != "query_node"})
        if node["type"] == "SELECT_NODE":
            self.blocks.append(Block(node, top))
        for key, value in node.items():
            if key == "cte_map":
                continue
            if node["type"] != "SELECT_NODE" and key in ("children", "left", "right"):
                for child in value if isinstance(value, list) else [value]:
                    self.walk(child, top)  # the members of a UNION see what the UNION sees
            else:
                self.walk(value)

    def _table_ref(self, node: Node) -> None:
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


def _located(node: Node) -> bool:
    return bool(node.get("query_location", _NO_LOCATION) != _NO_LOCATION)


def _plain_function(node: Node, names: set[str], arity: int) -> bool:
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


def _arguments(node: Node) -> list[Node]:
    return [a.get("expression") or {} for a in node.get("arguments", [])]


def is_string(node: Node) -> bool:
    """A string constant: ``'text'`` or ``$$text$$``."""
    return node.get("class") == "CONSTANT" and (node.get("literal") or {}).get("kind") == "STRING"


def _typed_literal(node: Node) -> bool:
    """``TIMESTAMP 'text'``, ``INTERVAL 'text'``: a cast DuckDB's parser made of a typed literal.

    An explicit ``CAST('text' AS t)`` or ``'text'::t`` has both its string and its type in the text;
    in a typed literal one of them has no location of its own.
    """
    child, kind = node.get("child") or {}, node.get("type_expr") or {}
    return (
        node.get("class") == "CAST"
        and node.get("try_cast") is False
        and is_string(child)
        and not kind.get("children")
        and (not _located(child) or not _located(kind))
    )


def _number(node: Node) -> bool:
    """The amount of ``INTERVAL 2 HOURS``: a literal under the casts and trunc the parser adds."""
    if node.get("class") == "CONSTANT":
        return (node.get("literal") or {}).get("kind") in ("INTEGER", "NUMERIC", "STRING")
    if node.get("class") == "CAST" and not _located(node) and node.get("try_cast") is False:
        return _number(node.get("child") or {})
    if _plain_function(node, {"trunc"}, 1) and not _located(node):
        return _number(_arguments(node)[0])
    return False


def _interval(node: Node) -> bool:
    if _typed_literal(node):
        return str((node.get("type_expr") or {}).get("type_name", "")).upper() == "INTERVAL"
    return _plain_function(node, _INTERVAL_UNITS, 1) and _number(_arguments(node)[0])


def is_clock(node: Node, current_timestamp: bool) -> bool:
    """``now()``, ``current_timestamp``, plus or minus intervals: never decreasing with the clock."""
    if _plain_function(node, _CLOCKS, 0):
        return True
    if node.get("class") == "COLUMN_REF":
        names = [str(n).lower() for n in node.get("column_names", [])]
        return current_timestamp and names == ["current_timestamp"]
    if _plain_function(node, {"+"}, 2):
        left, right = _arguments(node)
        return (is_clock(left, current_timestamp) and _interval(right)) or (
            _interval(left) and is_clock(right, current_timestamp)
        )
    if _plain_function(node, {"-"}, 2):
        left, right = _arguments(node)
        return is_clock(left, current_timestamp) and _interval(right)
    return False


def is_literal(node: Node) -> bool:
    """A literal a bound may be: a string, or a typed literal (``TIMESTAMP 'text'``) but INTERVAL."""
    return is_string(node) or (
        _typed_literal(node)
        and str((node.get("type_expr") or {}).get("type_name", "")).upper() != "INTERVAL"
    )


def _fixed_clock(node: Any, now: Node) -> Any:
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


class Evaluator:
    """DuckDB evaluating constant expressions in the query's session (same settings, same clock)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, now: datetime | None) -> None:
        self.con = con
        self.template = serialize(con, "SELECT NULL")  # a statement to put an expression in
        self.fixed = now is not None
        self.clock: Node | None = None  # ``now`` as a TIMESTAMPTZ literal
        if now is not None:
            stamp = now.astimezone(UTC).isoformat()
            self.clock = self._expression(f"CAST('{stamp}' AS TIMESTAMPTZ)")

    def _expression(self, sql: str) -> Node | None:
        tree = serialize(self.con, f"SELECT {sql}")
        if tree is None or len(tree["statements"]) != 1:
            return None
        select = tree["statements"][0]["node"]
        if select.get("type") != "SELECT_NODE" or len(select.get("select_list", [])) != 1:
            return None
        node: Node = select["select_list"][0]
        return node

    def text(self, node: Node) -> str | None:
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
        except (duckdb.Error, orjson.JSONEncodeError):  # JSON nested too deep for orjson, too
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
        """The one row of ``sql`` in the session; None when DuckDB refuses it."""
        try:
            row = _one(self.con, sql)
        except duckdb.Error:
            return None
        return tuple(row) if row is not None else None
