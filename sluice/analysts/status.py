"""The figures of ``sluice status``: rates, lag, last commit per table, dead letters by reason.

In: a catalog (local SQLite or Glue), its namespace, the time now.
Out: a ``Status`` value (``as_dict`` is its JSON form): per table its last commit (time, operation,
rows added, snapshots) and the source positions it holds; per source its events, events per minute
of ingest time, rate and lag; dead letters counted by source, stage and reason; per-minute window
metrics (IoT metric values and devices, web requests, 5xx and bytes). ``StatusError`` (one line)
when there are no tables or one cannot be read.
Why: the CloudWatch dashboard's figures, for a local run, from the tables alone: commit metadata
and positions come from Iceberg snapshot summaries (no data file read); the rest reads only the
columns it counts (``ingest_time``, a few window and dead-letter columns) and groups them in DuckDB.
Definitions:
- a source's *lag* is now minus the newest ``ingest_time`` committed (how stale its table is); its
  *commit delay* is its table's last commit time minus that newest ``ingest_time`` (edge to table).
- per-minute series end at the newest minute with data (so a finished run still shows its figures)
  and cover ``minutes`` minutes; a source's *rate* is its mean events per minute over the last
  ``RATE_MINUTES`` of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from sluice.analysts.query import READ_ERRORS, QueryError, read_failure
from sluice.core.contracts import Source
from sluice.tables.catalog import resume_positions, table_positions
from sluice.tables.specs import TABLES

__all__ = [
    "EVENT_TABLES",
    "RATE_MINUTES",
    "DeadLetterCount",
    "SourceStatus",
    "Status",
    "StatusError",
    "TableStatus",
    "WindowPoint",
    "status",
]

RATE_MINUTES = 5
"""A source's rate is its mean events per minute over this many of its newest minutes."""
EVENT_TABLES: dict[Source, str] = {
    Source.IOT: "iot_readings",
    Source.WEBLOG: "web_requests",
    Source.FEED: "feed_items",
}


class StatusError(QueryError):
    """No tables to report on, or a table whose metadata or files cannot be read (one line)."""


@dataclass(frozen=True, slots=True)
class TableStatus:
    """One table's last commit and what it holds, from its snapshot summaries."""

    table: str
    rows: int
    snapshots: int
    data_files: int
    last_commit: datetime | None
    last_operation: str | None
    """Iceberg's operation of the newest snapshot: append, overwrite, delete, replace."""
    rows_added: int
    """Rows the newest snapshot added (0 for a positions commit)."""
    commit_age_seconds: float | None
    positions: dict[str, int]
    """Per shard, the last sequence number whose records the table holds."""


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """One source's events in its event table."""

    source: str
    table: str
    events: int
    newest_ingest: datetime | None
    newest_event: datetime | None
    lag_seconds: float | None
    commit_delay_seconds: float | None
    rate_per_minute: float
    per_minute: list[tuple[datetime, int]] = field(default_factory=list)
    """(minute of ingest time, events), oldest first, minutes without events included."""


@dataclass(frozen=True, slots=True)
class DeadLetterCount:
    source: str
    stage: str
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class WindowPoint:
    """One minute of a window table, summed over its keys."""

    window_start: datetime
    values: dict[str, float]


@dataclass(frozen=True, slots=True)
class Status:
    generated_at: datetime
    minutes: int
    tables: list[TableStatus]
    sources: list[SourceStatus]
    dead_letters: list[DeadLetterCount]
    windows: dict[str, list[WindowPoint]]
    """Per window table (``iot_metrics_1m``, ``web_traffic_1m``), its per-minute figures."""
    resume_positions: dict[str, int]
    """Per shard held by every table, the smallest position: where a restarted job resumes."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: times as ISO-8601 strings."""
        return _jsonable(asdict(self))  # type: ignore[no-any-return]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


_WINDOW_SQL = {
    "iot_metrics_1m": """
        SELECT window_start, sum("count")::DOUBLE AS metric_values,
               count(DISTINCT device_id)::DOUBLE AS devices
        FROM rows GROUP BY window_start ORDER BY window_start""",
    "web_traffic_1m": """
        SELECT window_start, sum(requests)::DOUBLE AS requests,
               coalesce(sum(requests) FILTER (WHERE status_class = '5xx'), 0)::DOUBLE AS errors_5xx,
               sum(bytes)::DOUBLE AS bytes
        FROM rows GROUP BY window_start ORDER BY window_start""",
}
_WINDOW_COLUMNS = {
    "iot_metrics_1m": ("window_start", "count", "device_id"),
    "web_traffic_1m": ("window_start", "requests", "status_class", "bytes"),
}


def status(catalog: Catalog, namespace: str, now: datetime, minutes: int = 60) -> Status:
    """The figures of every existing table (see the module docstring); ``minutes`` per series."""
    tables = _load_tables(catalog, namespace)
    if not tables:
        raise StatusError(
            f"no tables in namespace {namespace!r} yet (the stream job creates them on its first run)"
        )
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        try:
            table_figures = [_table_status(name, t, now) for name, t in tables.items()]
            commits = {t.table: t.last_commit for t in table_figures}
            sources = [
                _source_status(con, source, name, tables[name], now, minutes, commits[name])
                for source, name in EVENT_TABLES.items()
                if name in tables
            ]
            letters = _dead_letters(con, tables["dead_letters"]) if "dead_letters" in tables else []
            windows = {
                name: _window_points(con, name, tables[name], minutes)
                for name in _WINDOW_SQL
                if name in tables
            }
        except READ_ERRORS as err:
            raise StatusError(f"cannot read the tables: {read_failure(err)}") from err
    finally:
        con.close()
    return Status(
        generated_at=now,
        minutes=minutes,
        tables=table_figures,
        sources=sources,
        dead_letters=letters,
        windows=windows,
        resume_positions=resume_positions(t.positions for t in table_figures),
    )


def _load_tables(catalog: Catalog, namespace: str) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    for name in TABLES:
        try:
            tables[name] = catalog.load_table(f"{namespace}.{name}")
        except NoSuchTableError:
            continue
        except READ_ERRORS as err:
            raise StatusError(f"cannot read table {name}: {read_failure(err)}") from err
    return tables


def _table_status(name: str, table: Table, now: datetime) -> TableStatus:
    snapshot = table.current_snapshot()
    summary = snapshot.summary if snapshot else None
    props = summary.additional_properties if summary else {}
    committed = datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC) if snapshot else None
    return TableStatus(
        table=name,
        rows=int(props.get("total-records", 0)),
        snapshots=len(table.snapshots()),
        data_files=int(props.get("total-data-files", 0)),
        last_commit=committed,
        last_operation=str(summary.operation.value) if summary else None,
        rows_added=int(props.get("added-records", 0)),
        commit_age_seconds=(now - committed).total_seconds() if committed else None,
        positions=table_positions(table),
    )


def _columns(table: Table, columns: Sequence[str]) -> pa.Table:
    return table.scan(selected_fields=tuple(columns)).to_arrow()


def _minute_series(
    con: duckdb.DuckDBPyConnection, sql: str, minutes: int
) -> list[tuple[datetime, list[float]]]:
    """Rows of ``sql`` (a minute, then figures), the last ``minutes`` minutes up to the newest one,
    with the minutes between that have no row filled with zeros."""
    found = {row[0]: [float(v) for v in row[1:]] for row in con.sql(sql).fetchall()}
    if not found:
        return []
    width = len(next(iter(found.values())))
    newest = max(found)
    first = newest - timedelta(minutes=minutes - 1)
    return [
        (minute, found.get(minute, [0.0] * width))
        for minute in (first + timedelta(minutes=i) for i in range(minutes))
    ]


def _source_status(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    name: str,
    table: Table,
    now: datetime,
    minutes: int,
    committed: datetime | None,
) -> SourceStatus:
    con.register("rows", _columns(table, ("ingest_time", "event_time")))
    try:
        [(events, newest_ingest, newest_event)] = con.sql(
            "SELECT count(*), max(ingest_time), max(event_time) FROM rows"
        ).fetchall()
        series = _minute_series(
            con,
            "SELECT date_trunc('minute', ingest_time) AS m, count(*) FROM rows GROUP BY m",
            minutes,
        )
    finally:
        con.unregister("rows")
    recent = [values[0] for _, values in series[-RATE_MINUTES:]]
    return SourceStatus(
        source=source.value,
        table=name,
        events=int(events),
        newest_ingest=newest_ingest,
        newest_event=newest_event,
        lag_seconds=(now - newest_ingest).total_seconds() if newest_ingest else None,
        commit_delay_seconds=(
            (committed - newest_ingest).total_seconds() if committed and newest_ingest else None
        ),
        rate_per_minute=sum(recent) / len(recent) if recent else 0.0,
        per_minute=[(minute, int(values[0])) for minute, values in series],
    )


def _dead_letters(con: duckdb.DuckDBPyConnection, table: Table) -> list[DeadLetterCount]:
    con.register("rows", _columns(table, ("source", "stage", "error_type")))
    try:
        found = con.sql(
            "SELECT source, stage, error_type, count(*) AS n FROM rows "
            "GROUP BY ALL ORDER BY n DESC, source, stage, error_type"
        ).fetchall()
    finally:
        con.unregister("rows")
    return [DeadLetterCount(s, st, e, int(n)) for s, st, e, n in found]


def _window_points(
    con: duckdb.DuckDBPyConnection, name: str, table: Table, minutes: int
) -> list[WindowPoint]:
    con.register("rows", _columns(table, _WINDOW_COLUMNS[name]))
    try:
        names = list(con.sql(_WINDOW_SQL[name]).columns[1:])
        series = _minute_series(con, _WINDOW_SQL[name], minutes)
    finally:
        con.unregister("rows")
    return [WindowPoint(minute, dict(zip(names, values, strict=True))) for minute, values in series]
