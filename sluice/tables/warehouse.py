"""The Iceberg warehouse: catalog access and the exactly-once table writer.

In: ``JobBatch`` values from the stream stages (see ``sluice.stream.stages``), in any number of flushes.
Out: rows in the six tables (see ``sluice.tables.specs``), each table's commit carrying the source
positions it covers in its snapshot summary (property ``sluice.positions``).

Exactly-once, without any runner state:
- A table's positions say, per shard, the last Kinesis sequence number whose records are in it. They
  are written in the same Iceberg commit as the rows (an atomic metadata swap), so rows and positions
  can never disagree, whatever moment the process dies at.
- On start the job reads every table's positions and resumes each shard after the *smallest* of them;
  while replaying, each table skips records at or before its own position. A table is written at most
  once per record.
- Window tables keep their mergeable state (``state`` column): a flush merges the new partial
  aggregates into the stored rows of the affected windows and rewrites those windows (delete + append in
  one transaction). Late data within the allowed lateness therefore updates its window; a window's rows
  are replaced, never duplicated.
- Batches of one shard are committed only as a contiguous chain (``previous_sequence`` links), so a
  position never passes a batch that has not been written.
- Re-driven events (``Event.redrive_of`` set, see ``sluice.tables.redrive``) are delivered at least once, so
  they are also de-duplicated by ``event_id``: when a flush holds any (``JobBatch.redriven``), the
  writer looks their ids up in the event table and drops those already there (and repeats within
  the flush) before appending, and leaves them out of the window partials too (a batch that lost
  one is re-aggregated from its remaining events). Batches without re-driven events take the plain
  path, with no lookup. One narrow gap: if the process dies after an event table's commit and
  before the window tables', the replay counts in the windows every re-driven event of that flush
  the event table already covers, including a duplicate it had dropped.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError
from pyiceberg.expressions import In
from pyiceberg.table import Table

from sluice.core.contracts import Source
from sluice.stream.stages import Event, JobBatch
from sluice.tables.specs import (
    TABLES,
    WINDOW_TABLES,
    Stamped,
    WindowTable,
    dead_letter_rows,
    feed_rows,
    iot_rows,
    web_rows,
)
from sluice.transform.aggregate import merge_maps

__all__ = [
    "POSITIONS_PROPERTY",
    "START_PROPERTY",
    "ExactlyOnceWriter",
    "WarehouseSettings",
    "ensure_tables",
    "first_start",
    "open_catalog",
    "table_positions",
]

POSITIONS_PROPERTY = "sluice.positions"
START_PROPERTY = "sluice.start"
"""Table property: where the job first started reading (a timestamp, or trim_horizon), kept so that a
shard some table holds no position for is re-read from there, not from a later LATEST."""
EVENT_TABLES = {
    Source.IOT: "iot_readings",
    Source.WEBLOG: "web_requests",
    Source.FEED: "feed_items",
}
ROW_BUILDERS = {Source.IOT: iot_rows, Source.WEBLOG: web_rows, Source.FEED: feed_rows}
Position = tuple[str, int, int]
"""(shard_id, sequence, sub_sequence): where an event sits in the stream."""


class WarehouseSettings(BaseSettings):
    """Where the tables live. Local default: a SQLite catalog and a warehouse folder under ``.sluice/``."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="ignore", frozen=True)

    catalog: Literal["sql", "glue"] = Field(
        default="sql", description="Catalog: 'sql' (SQLite) or 'glue'."
    )
    state_dir: Path = Field(
        default=Path(".sluice"), description="Local catalog and warehouse folder."
    )
    catalog_uri: str | None = Field(
        default=None, description="SQL catalog URI; default: SQLite in state_dir."
    )
    warehouse: str | None = Field(
        default=None, description="Warehouse location: file:// folder or s3://bucket/prefix."
    )
    namespace: str = Field(default="sluice", description="Catalog namespace (Glue database).")
    hourly_tables: tuple[str, ...] = Field(
        default=(), description="Tables partitioned by hour instead of day (high-volume ones)."
    )

    def resolved_warehouse(self) -> str:
        if self.warehouse:
            return self.warehouse
        return (self.state_dir.resolve() / "warehouse").as_uri()

    def resolved_catalog_uri(self) -> str:
        return self.catalog_uri or f"sqlite:///{self.state_dir.resolve() / 'catalog.db'}"


def open_catalog(settings: WarehouseSettings) -> Catalog:
    """The configured catalog. ``AWS_ENDPOINT_URL`` (a local endpoint) applies to Glue and S3 as well."""
    properties: dict[str, str] = {"warehouse": settings.resolved_warehouse()}
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        properties["s3.endpoint"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        properties["s3.region"] = region
    if settings.catalog == "glue":
        from pyiceberg.catalog.glue import GlueCatalog

        if endpoint:
            properties["glue.endpoint"] = endpoint
        if region:
            properties["glue.region"] = region
        return GlueCatalog("glue", **properties)
    from pyiceberg.catalog.sql import SqlCatalog

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    if properties["warehouse"].startswith("file://"):
        Path(properties["warehouse"].removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    return SqlCatalog("sluice", uri=settings.resolved_catalog_uri(), **properties)


def ensure_tables(catalog: Catalog, settings: WarehouseSettings) -> dict[str, Table]:
    """Create the namespace and any missing table (format v2); return every table by name."""
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace(settings.namespace)
    tables: dict[str, Table] = {}
    for name, definition in TABLES.items():
        identifier = f"{settings.namespace}.{name}"
        try:
            tables[name] = catalog.load_table(identifier)
        except NoSuchTableError:
            granularity: Literal["day", "hour"] = (
                "hour" if name in settings.hourly_tables else "day"
            )
            tables[name] = catalog.create_table(
                identifier,
                schema=definition.schema,
                partition_spec=definition.partition_spec(granularity),
                properties={"format-version": "2", "comment": definition.description},
            )
    return tables


def table_positions(table: Table) -> dict[str, int]:
    """The source positions committed with the table's newest snapshot that records them."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if POSITIONS_PROPERTY in props:
            return {shard: int(seq) for shard, seq in json.loads(props[POSITIONS_PROPERTY]).items()}
        snapshot = (
            table.snapshot_by_id(snapshot.parent_snapshot_id)
            if snapshot.parent_snapshot_id
            else None
        )
    return {}


def first_start(tables: Mapping[str, Table], resolved: str) -> str:
    """The start every table agreed on at the job's first run, recording ``resolved`` where missing.

    ``resolved`` is the configured start made absolute: ``trim_horizon`` or an epoch-seconds
    timestamp (LATEST resolved to the moment of the first start). Tables that already hold a start
    keep it (the earliest wins if a crash left them different); the rest get that value.
    """
    recorded = [
        t.properties[START_PROPERTY] for t in tables.values() if START_PROPERTY in t.properties
    ]
    start = _earliest(recorded) if recorded else resolved
    for table in tables.values():
        if table.properties.get(START_PROPERTY) != start:
            with table.transaction() as tx:
                tx.set_properties({START_PROPERTY: start})
    return start


def _earliest(starts: Iterable[str]) -> str:
    values = list(starts)
    if "trim_horizon" in values:
        return "trim_horizon"
    return min(values, key=float)


@dataclass(slots=True)
class FlushReport:
    """What one flush committed: rows per table and the batches it covered."""

    rows: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    held_back: int = 0
    redrive_duplicates: int = 0
    """Re-driven events dropped because their ``event_id`` had already landed."""


class ExactlyOnceWriter:
    """Buffers batches and commits them to every table with positions (see the module docstring)."""

    def __init__(self, tables: Mapping[str, Table], window_seconds: int) -> None:
        self.tables = dict(tables)
        self.window_seconds = window_seconds
        self.positions: dict[str, dict[str, int]] = {
            name: table_positions(t) for name, t in tables.items()
        }
        self._pending: dict[str, list[JobBatch]] = {}
        self._chain_end: dict[str, int] = {}

    def resume_positions(self) -> dict[str, int]:
        """Per shard, where the job must resume: after the smallest position over all tables.

        A shard missing from any table is left out: it is read from the configured start, and the
        tables that have it skip what they hold.
        """
        shards = (
            set.intersection(*(set(p) for p in self.positions.values()))
            if self.positions
            else set()
        )
        return {shard: min(p[shard] for p in self.positions.values()) for shard in shards}

    @property
    def pending_batches(self) -> int:
        return sum(len(b) for b in self._pending.values())

    def add(self, batch: JobBatch) -> None:
        self._pending.setdefault(batch.shard_id, []).append(batch)

    def _ready(self) -> tuple[list[JobBatch], int]:
        """The batches forming contiguous chains per shard; the rest wait for their predecessor."""
        ready: list[JobBatch] = []
        held = 0
        for shard, batches in self._pending.items():
            batches.sort(key=lambda b: b.first_sequence)
            end = self._chain_end.get(shard)
            keep: list[JobBatch] = []
            for batch in batches:
                if end is None or batch.previous_sequence is None or batch.previous_sequence == end:
                    ready.append(batch)
                    end = batch.last_sequence
                else:
                    keep.append(batch)
            if end is not None:
                self._chain_end[shard] = end
            self._pending[shard] = keep
            held += len(keep)
        return ready, held

    def flush(self) -> FlushReport:
        """Commit every buffered contiguous batch to every table (one transaction per table)."""
        batches, held = self._ready()
        report = FlushReport(batches=len(batches), held_back=held)
        if not batches:
            return report
        redriven = any(b.redriven for b in batches)
        dropped: dict[Source, set[Position]] = {}
        for source, name in EVENT_TABLES.items():
            if redriven and (landed := self._landed_redrives(name, source, batches)):
                dropped[source] = landed
                report.redrive_duplicates += len(landed)
                fresh = self._fresh(
                    name,
                    batches,
                    lambda b, s=source, d=landed: [
                        e
                        for e in b.events.get(s, [])
                        if (b.shard_id, e.sequence, e.sub_sequence) not in d
                    ],
                )
            else:
                fresh = self._fresh(name, batches, lambda b, s=source: b.events.get(s, []))
            self._append(
                name,
                ROW_BUILDERS[source](Stamped(e.event_id, e.ingest_time, e.record) for e in fresh),
                batches,
                report,
            )
        letters = self._fresh("dead_letters", batches, lambda b: b.dead_letters)
        self._append("dead_letters", dead_letter_rows(e.record for e in letters), batches, report)
        for window in WINDOW_TABLES.values():
            self._merge_windows(window, batches, report, dropped.get(window.source))
        return report

    def _landed_redrives(
        self, name: str, source: Source, batches: Iterable[JobBatch]
    ) -> set[Position]:
        """Positions of the re-driven events, new to table ``name``, whose event id already landed.

        Landed means: a row of the table has the id, or an earlier event of these batches has it.
        """
        committed = self.positions[name]
        candidates: list[tuple[str, Event]] = []
        for batch in batches:
            if not batch.redriven:
                continue
            done = committed.get(batch.shard_id, -1)
            candidates.extend(
                (batch.shard_id, e)
                for e in batch.events.get(source, [])
                if e.redrive_of is not None and e.sequence > done
            )
        if not candidates:
            return set()
        ids = sorted({e.event_id for _, e in candidates})
        stored = (
            self.tables[name]
            .scan(row_filter=In(term="event_id", literals=ids), selected_fields=("event_id",))
            .to_arrow()
        )
        seen: set[str] = set(stored.column("event_id").to_pylist())
        landed: set[Position] = set()
        for shard, event in candidates:
            if event.event_id in seen:
                landed.add((shard, event.sequence, event.sub_sequence))
            else:
                seen.add(event.event_id)
        return landed

    def _fresh(self, name: str, batches: Iterable[JobBatch], pick: Any) -> list[Event]:
        committed = self.positions[name]
        out: list[Event] = []
        for batch in batches:
            done = committed.get(batch.shard_id, -1)
            if batch.first_sequence > done:
                out.extend(pick(batch))
            elif batch.last_sequence > done:
                out.extend(e for e in pick(batch) if e.sequence > done)
        return out

    def _new_positions(self, name: str, batches: Iterable[JobBatch]) -> dict[str, int]:
        positions = dict(self.positions[name])
        for batch in batches:
            positions[batch.shard_id] = max(positions.get(batch.shard_id, -1), batch.last_sequence)
        return positions

    def _properties(self, positions: Mapping[str, int]) -> dict[str, str]:
        return {POSITIONS_PROPERTY: json.dumps({s: str(q) for s, q in sorted(positions.items())})}

    def _append(
        self, name: str, rows: pa.Table, batches: list[JobBatch], report: FlushReport
    ) -> None:
        positions = self._new_positions(name, batches)
        if positions == self.positions[name]:
            return
        table = self.tables[name]
        table.append(_as_table_schema(rows, table), snapshot_properties=self._properties(positions))
        self.positions[name] = positions
        report.rows[name] = rows.num_rows

    def _partials(
        self, window: WindowTable, batches: list[JobBatch], dropped: set[Position] | None = None
    ) -> dict[Any, Any]:
        """Partial aggregates of records this table does not hold yet (``dropped`` left out)."""
        merged: dict[Any, Any] = {}
        done = self.positions[window.name]
        for batch in batches:
            position = done.get(batch.shard_id, -1)
            if batch.last_sequence <= position:
                continue
            skip: set[tuple[int, int]] = (
                {(q, sub) for shard, q, sub in dropped if shard == batch.shard_id}
                if dropped and batch.redriven
                else set()
            )
            if batch.first_sequence > position and not skip:
                partial = window.partials(batch)
            else:  # straddles the position (only right after a restart) or lost a re-driven
                # duplicate: recompute from its remaining records
                records = [
                    e.record
                    for e in batch.events.get(window.source, [])
                    if e.sequence > position and (e.sequence, e.sub_sequence) not in skip
                ]
                partial = window.aggregate(records, self.window_seconds)
            merge_maps(merged, partial)
        return merged

    def _merge_windows(
        self,
        window: WindowTable,
        batches: list[JobBatch],
        report: FlushReport,
        dropped: set[Position] | None = None,
    ) -> None:
        name = window.name
        positions = self._new_positions(name, batches)
        if positions == self.positions[name]:
            return
        table = self.tables[name]
        partials = self._partials(window, batches, dropped)
        starts = sorted({key[-1] for key in partials})
        properties = self._properties(positions)
        if not starts:
            table.append(table.schema().as_arrow().empty_table(), snapshot_properties=properties)
            self.positions[name] = positions
            return
        window_filter = In(term="window_start", literals=[s.isoformat() for s in starts])
        stored = table.scan(row_filter=window_filter).to_arrow()
        merged = _stored_state(window, stored)
        merge_maps(merged, partials, copy=False)
        rows = window.rows(sorted(merged.items(), key=_sort_key), self.window_seconds)
        with table.transaction() as tx:
            if stored.num_rows:
                tx.delete(window_filter, snapshot_properties=properties)
            tx.append(_as_table_schema(rows, table), snapshot_properties=properties)
        self.positions[name] = positions
        report.rows[name] = rows.num_rows


def _as_table_schema(rows: pa.Table, table: Table) -> pa.Table:
    """Rows in the table's own Arrow schema.

    A catalog assigns its own ids to nested fields, and a table may have gained optional columns
    (schema evolution) that this version of the job does not write: those are filled with nulls.
    """
    target = table.schema().as_arrow()
    for column in target:
        if column.name not in rows.column_names:
            rows = rows.append_column(column.name, pa.nulls(rows.num_rows, column.type))
    return rows.select(target.names).cast(target)


def _sort_key(item: tuple[Any, Any]) -> tuple[Any, ...]:
    key = item[0]
    return (key[-1], *key[:-1])


def _stored_state(window: WindowTable, stored: pa.Table) -> dict[Any, Any]:
    """The accumulators of stored window rows, keyed like the partial aggregates."""
    columns = stored.to_pydict()
    groups = [columns[name] for name in window.group_columns]
    return {
        (*(group[i] for group in groups), start.astimezone(UTC)): window.accumulator.from_bytes(
            columns["state"][i]
        )
        for i, start in enumerate(columns.get("window_start", []))
    }
