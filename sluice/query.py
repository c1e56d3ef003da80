"""Query the Iceberg tables with DuckDB, without any DuckDB extension (nothing is downloaded).

In: a catalog (local SQLite or Glue) and SQL naming the tables by their plain names.
Out: a DuckDB relation / rows. Tables are read through pyiceberg (``scan().to_arrow()``) and registered
as Arrow views, so only the tables a query names are read.
"""

from __future__ import annotations

import re
from typing import Any

import duckdb
from pyiceberg.catalog import Catalog

from sluice.tables import TABLES

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def tables_named_in(sql: str) -> list[str]:
    """The Sluice tables a SQL text mentions (a word match; an unused one only costs a read)."""
    words = set(_WORD.findall(sql))
    return [name for name in TABLES if name in words]


def connect(catalog: Catalog, namespace: str, sql: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the tables ``sql`` names (all tables when ``sql`` is None) registered."""
    con = duckdb.connect()
    for name in tables_named_in(sql) if sql is not None else list(TABLES):
        arrow = catalog.load_table(f"{namespace}.{name}").scan().to_arrow()
        con.register(name, arrow)
    return con


def run(catalog: Catalog, namespace: str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of ``sql`` over the tables."""
    con = connect(catalog, namespace, sql)
    try:
        relation = con.sql(sql)
        return list(relation.columns), relation.fetchall()
    finally:
        con.close()
