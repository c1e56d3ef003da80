"""What the commands share: rows written as a text table, CSV or JSON lines; the local catalog.

In: column names and rows; a ``--state-dir`` (or ``SLUICE_STATE_DIR``, or ``.sluice``).
Out: bytes on the given stream (CSV lines end with ``\\n``, as on every Unix tool); an open catalog.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from sluice.core.extras import require

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from sluice.tables.warehouse import WarehouseSettings

__all__ = ["FORMATS", "add_state_dir", "open_tables", "warehouse_settings", "write_rows"]

FORMATS = ("table", "csv", "json")


def write_rows(
    out: IO[bytes], columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str
) -> None:
    """Rows as an aligned text table, CSV (with a header) or JSON lines."""
    if fmt == "json":
        for row in rows:
            record = {c: _json_value(v) for c, v in zip(columns, row, strict=True)}
            out.write(orjson.dumps(record, default=str) + b"\n")
    elif fmt == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        out.write(text.getvalue().encode())
    else:
        cells = [list(columns), *[["" if v is None else str(v) for v in row] for row in rows]]
        widths = [max(len(str(row[i])) for row in cells) for i in range(len(columns))]
        lines = [
            "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        out.write(("\n".join(lines) + f"\n({len(rows)} rows)\n").encode())


def _json_value(value: Any) -> Any:
    """JSON has no infinities or NaN (orjson writes them as null): they are written as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "-inf", "nan"
    return value


def add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="local catalog and warehouse folder (default: SLUICE_STATE_DIR or .sluice)",
    )


def warehouse_settings(args: argparse.Namespace) -> WarehouseSettings:
    require("tables", "pyiceberg", "pyarrow")
    from sluice.tables.warehouse import WarehouseSettings

    return WarehouseSettings(**({"state_dir": args.state_dir} if args.state_dir else {}))


def open_tables(args: argparse.Namespace) -> tuple[Catalog, str]:
    """The catalog ``--state-dir`` names, and its namespace."""
    from sluice.tables.warehouse import open_catalog

    settings = warehouse_settings(args)
    return open_catalog(settings), settings.namespace
