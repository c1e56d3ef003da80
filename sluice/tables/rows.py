"""Row building and file selection for the exactly-once writer (``sluice.tables.warehouse``).

In: events and window states of a flush, a table.
Out: Arrow rows in the table's own schema (the records no column can hold found by halving and
returned apart, for their dead letters), the event-time ranges a duplicate lookup reads, the data
files holding given windows, the stored window states keyed like the partials.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import (
    AlwaysTrue,
    In,
)
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from sluice.core.contracts import DeadLetter
from sluice.stream.stages import Event, describe_exception
from sluice.tables.specs import (
    WindowTable,
)

__all__ = [
    "as_table_schema",
    "build_rows",
    "concat_rows",
    "letter_event",
    "stored_state",
    "time_ranges",
    "window_files",
    "window_sort_key",
]


def build_rows(
    build: Callable[[Sequence[Any]], pa.Table], items: Sequence[Any]
) -> tuple[pa.Table, dict[int, str]]:
    """``build(items)``, or, if that fails, the rows of every item that can be built (halving the
    failing runs until single items) and, by index, why each other item cannot."""
    try:
        return build(items), {}
    except Exception:  # noqa: BLE001, S110 - isolate the items at fault below
        pass
    parts: list[pa.Table] = []
    failures: dict[int, str] = {}

    def visit(low: int, high: int) -> None:
        try:
            parts.append(build(items[low:high]))
            return
        except Exception as err:  # noqa: BLE001 - an item of this run is at fault
            if high - low == 1:
                failures[low] = describe_exception(err)
                return
        middle = (low + high) // 2
        visit(low, middle)
        visit(middle, high)

    visit(0, len(items))
    return (pa.concat_tables(parts) if parts else build([])), failures


def time_ranges(times: Sequence[int], gap: int, limit: int) -> list[tuple[int, int]]:
    """Sorted distinct ``times`` as at most ``limit`` ranges; times within ``gap`` share one."""
    ranges: list[list[int]] = []
    for at in times:
        if ranges and at - ranges[-1][1] <= gap:
            ranges[-1][1] = at
        else:
            ranges.append([at, at])
    if len(ranges) > limit:  # keep the widest gaps between ranges, merge across the others
        gaps = sorted(
            (ranges[i + 1][0] - ranges[i][1] for i in range(len(ranges) - 1)), reverse=True
        )
        return time_ranges(times, gaps[limit - 1], limit)
    return [(low, high) for low, high in ranges]


def window_files(
    table: Table, starts: Sequence[datetime]
) -> tuple[pa.Table, list[pa.Table], list[DataFile]]:
    """The stored rows of windows ``starts``, the other rows of the files holding them, and those
    files (to be replaced: copy-on-write, one snapshot)."""
    target = table.schema().as_arrow()
    stored: list[pa.Table] = [target.empty_table()]
    kept: list[pa.Table] = []
    replaced: list[DataFile] = []
    window_filter = In(term="window_start", literals=[s.isoformat() for s in starts])
    reader = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    for task in table.scan(row_filter=window_filter).plan_files():
        rows = reader.to_table([task])
        column = rows.column("window_start")
        hit = pc.is_in(column, value_set=pa.array(starts).cast(column.type))
        if not pc.any(hit).as_py():
            continue
        stored.append(rows.filter(hit))
        kept.append(rows.filter(pc.invert(hit)))
        replaced.append(task.file)
    return concat_rows(table, stored), kept, replaced


def concat_rows(table: Table, parts: Sequence[pa.Table]) -> pa.Table:
    return pa.concat_tables([as_table_schema(part, table) for part in parts])


def letter_event(event: Event, letter: DeadLetter) -> Event:
    """``letter`` as a dead-letter event at ``event``'s position."""
    return Event(event.sequence, event.sub_sequence, event.arrival, letter.dead_letter_id,
                 letter.first_seen, letter)  # fmt: skip


def as_table_schema(rows: pa.Table, table: Table) -> pa.Table:
    """Rows in the table's own Arrow schema.

    A catalog assigns its own ids to nested fields, and a table may have gained optional columns
    (schema evolution) that this version of the job does not write: those are filled with nulls.
    """
    target = table.schema().as_arrow()
    for column in target:
        if column.name not in rows.column_names:
            rows = rows.append_column(column.name, pa.nulls(rows.num_rows, column.type))
    return rows.select(target.names).cast(target)


def window_sort_key(item: tuple[Any, Any]) -> tuple[Any, ...]:
    key = item[0]
    return (key[-1], *key[:-1])


def stored_state(window: WindowTable, stored: pa.Table) -> dict[Any, Any]:
    """The accumulators of stored window rows, keyed like the partial aggregates."""
    columns = stored.to_pydict()
    groups = [columns[name] for name in window.group_columns]
    return {
        (*(group[i] for group in groups), start.astimezone(UTC)): window.accumulator.from_bytes(
            columns["state"][i]
        )
        for i, start in enumerate(columns.get("window_start", []))
    }
