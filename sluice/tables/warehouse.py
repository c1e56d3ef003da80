"""The Iceberg warehouse: catalog access and the exactly-once table writer.

In: ``JobBatch`` values from the stream stages (see ``sluice.stream.stages``), in any number of flushes.
Out: rows in the six tables (see ``sluice.tables.specs``), each table's commit carrying the source
positions it covers in its snapshot summary (property ``sluice.positions``).
Dead letters (stage ``write``): a record that cannot become a row (a value its column cannot hold),
and the new contributions to a window whose row cannot be stored; every other record still lands.

Exactly-once, without any runner state:
- A table's positions say, per shard, the last Kinesis sequence number whose records are in it. They
  are written in the same Iceberg commit as the rows (an atomic metadata swap), so rows and positions
  can never disagree, whatever moment the process dies at.
- On start the job reads every table's positions and resumes each shard after the *smallest* of them;
  while replaying, each table skips records at or before its own position. A table is written at most
  once per record.
- A flush that gives a table nothing writes no snapshot to it (no empty commits). Such a table's
  positions fall behind; it records them with a snapshot of no rows (a *positions commit*) once they
  are ``positions_commit_seconds`` old, at once when a shard is new to it, and for every table when
  the job stops cleanly (``catch_up``). So an idle table holds resume back by at most that long: a
  restart re-reads at most that much of the stream, which every other table skips.
- Window tables keep their mergeable state (``state`` column): a flush merges the new partial
  aggregates into the stored rows of the affected windows and rewrites those windows in *one*
  snapshot (the data files holding them are replaced by files holding the merged rows and the
  files' other rows). Late data within the allowed lateness therefore updates its window; a window's
  rows are replaced, never duplicated.
- Batches of one shard are committed only as a contiguous chain (``previous_sequence`` links), so a
  position never passes a batch that has not been written.
- Duplicates by event id land once (edges retry, re-drives are delivered at least once): an event
  whose ``event_id`` and event time equal those of a row of its event table, or of an earlier event
  of the flush, is dropped from the event table and left out of the window partials (a batch that
  lost one is re-aggregated from its remaining events). The lookup reads the ``event_id`` and
  ``event_time`` columns of the rows in the event-time ranges the flush's events fall in (partition
  and file pruning by event time), so it costs a read of recent files, not of the table.
- Decisions are made so that every table, however far behind the others a crash left it, decides
  each record as an uninterrupted run does: window tables commit *before* their event table and
  whenever it commits, so a window table is never behind its event table; the duplicates among the
  records a window table already holds but its event table not yet are decided first. A record that
  cannot become a row is found whenever the event table or ``dead_letters`` has yet to write it, so
  its dead letter is never lost nor doubled.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    GreaterThanOrEqual,
    In,
    LessThanOrEqual,
    Or,
)
from pyiceberg.expressions.literals import literal
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from sluice.core.contracts import DeadLetter, ErrorType, Source, Stage
from sluice.core.deadletters import dead_letter
from sluice.core.errors import ConfigError
from sluice.stream.stages import Event, JobBatch, describe_exception, event_dead_letter
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
    "DEFAULT_POSITIONS_COMMIT_SECONDS",
    "METADATA_VERSIONS_KEPT",
    "POSITIONS_PROPERTY",
    "START_PROPERTY",
    "TABLE_PROPERTIES",
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
METADATA_VERSIONS_KEPT = 10
"""Previous ``metadata.json`` files a table keeps; older ones are deleted at each commit."""
TABLE_PROPERTIES = {
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": str(METADATA_VERSIONS_KEPT),
}
"""Properties every table gets, new or existing (``ensure_tables``): without them every commit leaves
a ``metadata.json`` listing every snapshot behind for good, so metadata grows with the square of the
commits."""
DEFAULT_POSITIONS_COMMIT_SECONDS = 300.0
"""How long a table that receives nothing may leave its positions unrecorded (see the docstring)."""
EVENT_TABLES = {
    Source.IOT: "iot_readings",
    Source.WEBLOG: "web_requests",
    Source.FEED: "feed_items",
}
ROW_BUILDERS: dict[Source, Callable[[Iterable[Stamped]], pa.Table]] = {
    Source.IOT: iot_rows,
    Source.WEBLOG: web_rows,
    Source.FEED: feed_rows,
}
WINDOW_OF = {window.source: window for window in WINDOW_TABLES.values()}
Position = tuple[str, int, int]
"""(shard_id, sequence, sub_sequence): where an event sits in the stream."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_LOOKUP_RANGES = 16
"""At most this many event-time ranges in one duplicate lookup (nearby ranges are merged)."""
_LOOKUP_GAP = timedelta(minutes=1)
"""Candidate event times closer than this share a lookup range."""


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


def _local_folder(location: str) -> Path | None:
    """The folder of a file:// (or plain path) location; None for any other scheme."""
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return None
    return Path(unquote(parsed.path)).resolve()


class LocalSqlCatalog(SqlCatalog):
    """A SQL catalog over a local warehouse that only hands out tables stored inside that warehouse.

    Iceberg metadata holds absolute paths. A copied (or moved) state folder therefore still points
    at the original's files, and writing or maintaining its tables would change the original (a
    copy's ``sluice maintain`` deleted the original's files). Loading such a table stops with a
    ``ConfigError`` instead, before any file is read or written.
    """

    def __init__(self, name: str, root: Path, **properties: str) -> None:
        self.root = root
        super().__init__(name, **properties)

    def _convert_orm_to_iceberg(self, orm_table: IcebergTables) -> Table:
        self._check_inside(orm_table.table_name, orm_table.metadata_location or "")
        table = super()._convert_orm_to_iceberg(orm_table)
        self._check_inside(orm_table.table_name, table.location())
        return table

    def _check_inside(self, name: str, location: str) -> None:
        folder = _local_folder(location)
        if folder is not None and not folder.is_relative_to(self.root):
            raise ConfigError(
                f"table {name!r} of the catalog {self.properties.get('uri')} is stored at "
                f"{location}, outside this state folder's warehouse {self.root}: the state folder "
                "was copied or moved, and Iceberg metadata holds absolute paths. Use the original "
                "folder, or start an empty one and fill it with `sluice replay`"
            )


def open_catalog(settings: WarehouseSettings) -> Catalog:
    """The configured catalog. ``AWS_ENDPOINT_URL`` (a local endpoint) applies to Glue and S3 as well.

    A SQL catalog over a file:// warehouse refuses tables stored outside it (``LocalSqlCatalog``).
    """
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
    from sqlalchemy.exc import OperationalError

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    root = _local_folder(properties["warehouse"])
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    uri = settings.resolved_catalog_uri()
    for attempt in range(2):
        try:
            if root is None:
                return SqlCatalog("sluice", uri=uri, **properties)
            return LocalSqlCatalog("sluice", root, uri=uri, **properties)
        except OperationalError:
            # A new catalog's own tables, created by another process at the same moment
            # ("table iceberg_tables already exists"): the second attempt finds them.
            if attempt:
                raise
    raise AssertionError("unreachable")


def ensure_tables(catalog: Catalog, settings: WarehouseSettings) -> dict[str, Table]:
    """Create the namespace and any missing table (format v2); return every table by name.

    Tables that exist get ``TABLE_PROPERTIES`` where they lack them. Safe when several processes
    start on a new catalog at once: a table another one created first is loaded instead.
    """
    try:
        catalog.create_namespace(settings.namespace)
    except NamespaceAlreadyExistsError:
        pass
    except Exception:  # a backend's own error when another process won the race
        if not catalog.namespace_exists(settings.namespace):
            raise
    tables: dict[str, Table] = {}
    for name, definition in TABLES.items():
        identifier = f"{settings.namespace}.{name}"
        try:
            table = catalog.load_table(identifier)
        except NoSuchTableError:
            granularity: Literal["day", "hour"] = (
                "hour" if name in settings.hourly_tables else "day"
            )
            try:
                table = catalog.create_table(
                    identifier,
                    schema=definition.schema,
                    partition_spec=definition.partition_spec(granularity),
                    properties={
                        "format-version": "2",
                        "comment": definition.description,
                        **TABLE_PROPERTIES,
                    },
                )
            except TableAlreadyExistsError:  # another process created it in the meantime
                table = catalog.load_table(identifier)
        tables[name] = _set_missing_properties(table, TABLE_PROPERTIES)
    return tables


def _set_missing_properties(table: Table, properties: Mapping[str, str]) -> Table:
    """Give ``table`` every one of ``properties`` it lacks; a concurrent change is re-read once."""
    for attempt in range(2):
        missing = {k: v for k, v in properties.items() if table.properties.get(k) != v}
        if not missing:
            break
        try:
            with table.transaction() as tx:
                tx.set_properties(missing)
        except CommitFailedException:
            if attempt:
                raise
            table = table.refresh()
    return table


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
    keep it (the earliest wins if a crash, or two jobs starting together, left them different); the
    rest get that value.
    """
    for attempt in range(2):
        recorded = [
            t.properties[START_PROPERTY] for t in tables.values() if START_PROPERTY in t.properties
        ]
        start = _earliest(recorded) if recorded else resolved
        try:
            for table in tables.values():
                if table.properties.get(START_PROPERTY) != start:
                    with table.transaction() as tx:
                        tx.set_properties({START_PROPERTY: start})
            return start
        except CommitFailedException:  # another job recorded its start meanwhile: agree with it
            if attempt:
                raise
            for table in tables.values():
                table.refresh()
    return start


def _earliest(starts: Iterable[str]) -> str:
    values = list(starts)
    if "trim_horizon" in values:
        return "trim_horizon"
    return min(values, key=float)


@dataclass(slots=True)
class FlushReport:
    """What one flush committed: rows per table (0 for a positions commit) and the batches it covered."""

    rows: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    held_back: int = 0
    duplicates: int = 0
    """Events dropped because their ``event_id`` (at the same event time) had already landed."""
    redrive_duplicates: int = 0
    """Of ``duplicates``, the re-driven events."""
    dead_lettered: int = 0
    """Dead letters the writer made (records that cannot be stored)."""


@dataclass(slots=True)
class _EventPlan:
    """What a flush does to one event table: its rows and the events its window table leaves out."""

    rows: pa.Table
    dropped: set[Position]


@dataclass(slots=True)
class _WindowPlan:
    """A window table's rewrite: the files it replaces and every row of the files replacing them."""

    rows: pa.Table | None = None
    replaced: list[DataFile] = field(default_factory=list)


def _instant(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND


def _position(shard: str, event: Event) -> Position:
    return (shard, event.sequence, event.sub_sequence)


class ExactlyOnceWriter:
    """Buffers batches and commits them to every table with positions (see the module docstring).

    ``positions_commit_seconds``: how long a table that receives nothing may leave its positions
    unrecorded. ``deduplicate``: drop repeated event ids (on by default; off, only re-driven events
    are de-duplicated). ``clock``: epoch seconds now (tests pass their own).
    """

    def __init__(
        self,
        tables: Mapping[str, Table],
        window_seconds: int,
        *,
        positions_commit_seconds: float = DEFAULT_POSITIONS_COMMIT_SECONDS,
        deduplicate: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tables = dict(tables)
        self.window_seconds = window_seconds
        self.positions_commit_seconds = positions_commit_seconds
        self.deduplicate = deduplicate
        self.clock = clock
        self.positions: dict[str, dict[str, int]] = {
            name: table_positions(t) for name, t in tables.items()
        }
        self._committed_at: dict[str, float] = {
            name: (snapshot.timestamp_ms / 1000 if (snapshot := t.current_snapshot()) else 0.0)
            for name, t in tables.items()
        }
        self._pending: dict[str, list[JobBatch]] = {}
        self._chain_end: dict[str, int] = {}
        self._flushed: dict[str, int] = {}
        """Per shard, the end of what every flush of this writer decided and committed in full."""
        self._broken = False
        """A flush failed part-way: its tables disagree until a restart replays it."""

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

    # --- one flush ---------------------------------------------------------------------------------

    def flush(self) -> FlushReport:
        """Commit every buffered contiguous batch to the tables it gives something (see the docstring).

        Everything is decided before anything is committed; then the window tables commit, then the
        event tables, then ``dead_letters`` (one transaction, one snapshot each).
        """
        batches, held = self._ready()
        report = FlushReport(batches=len(batches), held_back=held)
        if not batches:
            return report
        self._broken = True  # until every commit of this flush is done
        self._flush(batches, report)
        for batch in batches:
            self._flushed[batch.shard_id] = max(
                self._flushed.get(batch.shard_id, -1), batch.last_sequence
            )
        self._broken = False
        return report

    def _flush(self, batches: list[JobBatch], report: FlushReport) -> None:
        now = self.clock()
        letters: list[tuple[str, Event]] = []
        events = {
            source: self._plan_events(source, name, batches, letters, report)
            for source, name in EVENT_TABLES.items()
        }
        windows: dict[str, _WindowPlan | None] = {}
        for window in WINDOW_TABLES.values():
            plan = events[window.source]
            event_commits = self._commits(
                EVENT_TABLES[window.source], plan.rows.num_rows > 0, batches, now
            )
            windows[window.name] = self._plan_window(
                window, batches, plan.dropped, letters, report, now=now, forced=event_commits
            )
        letter_rows = self._letter_rows(
            self._fresh("dead_letters", batches, lambda b: b.dead_letters)
            + [e for shard, e in letters if self._is_fresh("dead_letters", (shard, e.sequence))],
            report,
        )

        for name, window_plan in windows.items():
            if window_plan is not None:
                self._commit_window(name, window_plan, batches, now, report)
        for source, name in EVENT_TABLES.items():
            rows = events[source].rows
            if self._commits(name, rows.num_rows > 0, batches, now):
                self._commit_rows(name, rows, self._new_positions(name, batches), now, report)
        if self._commits("dead_letters", letter_rows.num_rows > 0, batches, now):
            positions = self._new_positions("dead_letters", batches)
            self._commit_rows("dead_letters", letter_rows, positions, now, report)

    def catch_up(self) -> list[str]:
        """Record, with a positions commit, every table's positions up to what this writer flushed.

        For a clean stop: then the next start resumes where this one ended, not up to
        ``positions_commit_seconds`` earlier. Window tables go first (never behind their event
        table). Nothing after a flush that failed part-way (its tables must replay it). Returns
        the tables committed.
        """
        done: list[str] = []
        if self._broken:
            return done
        names = [*WINDOW_TABLES, *EVENT_TABLES.values(), "dead_letters"]
        for name in (n for n in names if n in self.tables):
            positions = dict(self.positions[name])
            for shard, end in self._flushed.items():
                positions[shard] = max(positions.get(shard, -1), end)
            if positions != self.positions[name]:
                empty = self.tables[name].schema().as_arrow().empty_table()
                self._commit_rows(name, empty, positions, self.clock(), FlushReport())
                done.append(name)
        return done

    def _is_fresh(self, name: str, where: tuple[str, int]) -> bool:
        """Whether table ``name`` has yet to write the record at ``(shard, sequence)``."""
        return where[1] > self.positions[name].get(where[0], -1)

    def _commits(self, name: str, rows: bool, batches: Sequence[JobBatch], now: float) -> bool:
        """Whether table ``name`` commits in this flush: it has ``rows``, or its positions are due."""
        positions = self._new_positions(name, batches)
        current = self.positions[name]
        if positions == current:
            return False
        if rows:
            return True
        return bool(set(positions) - set(current)) or (
            now - self._committed_at[name] >= self.positions_commit_seconds
        )

    # --- event tables ------------------------------------------------------------------------------

    def _plan_events(
        self,
        source: Source,
        name: str,
        batches: Sequence[JobBatch],
        letters: list[tuple[str, Event]],
        report: FlushReport,
    ) -> _EventPlan:
        """The rows of ``name`` for this flush, and the events its window table must leave out.

        Rows are built for every event the event table or ``dead_letters`` has not written yet, so
        a record that cannot become a row gets its dead letter whichever of the two is behind.
        """
        own = self.positions[name]
        letters_done = self.positions["dead_letters"]
        window = WINDOW_OF.get(source)
        counted = self.positions[window.name] if window is not None else own
        checked: list[tuple[str, Event]] = []
        for batch in batches:
            low = min(own.get(batch.shard_id, -1), letters_done.get(batch.shard_id, -1))
            if batch.last_sequence > low:
                checked.extend(
                    (batch.shard_id, e) for e in batch.events.get(source, []) if e.sequence > low
                )
        rows, failures = _build_rows(
            ROW_BUILDERS[source], [Stamped(e.event_id, e.ingest_time, e.record) for _, e in checked]
        )
        dropped: set[Position] = set()
        for index, message in failures.items():
            shard, event = checked[index]
            dropped.add(_position(shard, event))
            letter = event_dead_letter(
                shard, source, event, Stage.WRITE, ErrorType.SCHEMA_VIOLATION,
                f"cannot be stored in {name}: {message}",
            )  # fmt: skip
            letters.append((shard, _letter_event(event, letter)))
            report.dead_lettered += 1
        built = [c for i, c in enumerate(checked) if i not in failures] if failures else checked
        # Row r of ``rows`` is ``built[r]``; the event table takes the rows it has not written yet
        # that are no copies.
        fresh = [r for r, (shard, e) in enumerate(built) if e.sequence > own.get(shard, -1)]
        copies = self._duplicates(name, rows, built, fresh, counted)
        for r in copies:
            shard, event = built[r]
            dropped.add(_position(shard, event))
            report.redrive_duplicates += event.redrive_of is not None
        report.duplicates += len(copies)
        if len(fresh) == len(built) and not copies:
            return _EventPlan(rows, dropped)
        keep = [r for r in fresh if r not in copies]
        return _EventPlan(rows.take(pa.array(keep, pa.int64())), dropped)

    def _duplicates(
        self,
        name: str,
        rows: pa.Table,
        built: Sequence[tuple[str, Event]],
        fresh: Sequence[int],
        counted: Mapping[str, int],
    ) -> set[int]:
        """The rows among ``fresh`` that are copies: their event id and event time already landed.

        Landed: a row of table ``name`` has that id and time, or an earlier fresh row has. Rows of
        events its window table already counted (at or before ``counted``) go first, so a replay
        after a crash between the two tables' commits decides as the original run did.
        """
        if not self.deduplicate:
            fresh = [r for r in fresh if built[r][1].redrive_of is not None]
        if not fresh:
            return set()
        ids = rows.column("event_id").to_pylist()
        times = pc.cast(rows.column("event_time"), pa.int64()).to_pylist()
        ordered = sorted(fresh, key=lambda r: built[r][1].sequence > counted.get(built[r][0], -1))
        landed = self._landed(name, {ids[r] for r in ordered}, [times[r] for r in ordered])
        copies: set[int] = set()
        for r in ordered:  # stable sort: chain order within each group
            key = (ids[r], times[r])
            if key in landed:
                copies.add(r)
            else:
                landed.add(key)
        return copies

    def _landed(self, name: str, ids: set[str], times: Sequence[int]) -> set[tuple[str, int]]:
        """(event id, event time in µs) of the rows of ``name`` with one of ``ids``, read from the
        event-time ranges ``times`` (µs) fall in."""
        ranges = _time_ranges(sorted(set(times)), _LOOKUP_GAP // _MICROSECOND, _LOOKUP_RANGES)
        terms: list[BooleanExpression] = [
            And(
                GreaterThanOrEqual(term="event_time", value=literal(_instant(low).isoformat())),
                LessThanOrEqual(term="event_time", value=literal(_instant(high).isoformat())),
            )
            for low, high in ranges
        ]
        stored = (
            self.tables[name]
            .scan(
                row_filter=terms[0] if len(terms) == 1 else Or(*terms),
                selected_fields=("event_id", "event_time"),
            )
            .to_arrow()
        )
        wanted = pa.array(sorted(ids), pa.string())
        stored = stored.filter(pc.is_in(stored.column("event_id"), value_set=wanted))
        micros = pc.cast(stored.column("event_time"), pa.int64()).to_pylist()
        return set(zip(stored.column("event_id").to_pylist(), micros, strict=True))

    # --- window tables -----------------------------------------------------------------------------

    def _plan_window(
        self,
        window: WindowTable,
        batches: list[JobBatch],
        dropped: set[Position],
        letters: list[tuple[str, Event]],
        report: FlushReport,
        *,
        now: float,
        forced: bool,
    ) -> _WindowPlan | None:
        """The rewrite of ``window`` for this flush; None when it does not commit.

        ``forced``: its event table commits, so it commits too (positions only if nothing changed).
        """
        name = window.name
        positions = self._new_positions(name, batches)
        if positions == self.positions[name]:
            return None
        partials = self._partials(window, batches, dropped)
        if not partials:
            return _WindowPlan() if forced or self._commits(name, False, batches, now) else None
        table = self.tables[name]
        starts = sorted({key[-1] for key in partials})
        stored, kept, replaced = _window_files(table, starts)
        merged = _stored_state(window, stored)
        previous = dict(merged)
        merge_maps(merged, partials, copy=False)
        items = sorted(merged.items(), key=_sort_key)
        try:
            rows = window.rows(items, self.window_seconds)
        except Exception:  # noqa: BLE001 - find the windows at fault; the others still land
            rows = self._window_rows_isolated(
                window, batches, dropped, items, previous, letters, report
            )
        return _WindowPlan(_concat(table, [_as_table_schema(rows, table), *kept]), replaced)

    def _window_rows_isolated(
        self,
        window: WindowTable,
        batches: list[JobBatch],
        dropped: set[Position],
        items: list[tuple[Any, Any]],
        previous: Mapping[Any, Any],
        letters: list[tuple[str, Event]],
        report: FlushReport,
    ) -> pa.Table:
        """Window rows built one window at a time: a window whose merged row cannot be stored keeps
        its stored row, and each event that contributed to it now becomes a dead letter."""
        good: list[pa.Table] = []
        failed: dict[Any, str] = {}
        for key, state in items:
            try:
                good.append(window.rows([(key, state)], self.window_seconds))
            except Exception as err:  # noqa: BLE001 - this window's events become dead letters
                failed[key] = describe_exception(err)
                if key in previous:
                    good.append(window.rows([(key, previous[key])], self.window_seconds))
        done = self.positions[window.name]
        for batch in batches:
            for event in batch.events.get(window.source, []):
                position = _position(batch.shard_id, event)
                if event.sequence <= done.get(batch.shard_id, -1) or position in dropped:
                    continue
                hit = [
                    k for k in window.aggregate([event.record], self.window_seconds) if k in failed
                ]
                if hit and self._is_fresh("dead_letters", (batch.shard_id, event.sequence)):
                    letter = event_dead_letter(
                        batch.shard_id, window.source, event, Stage.WRITE,
                        ErrorType.SCHEMA_VIOLATION,
                        f"its window in {window.name} cannot be stored: {failed[hit[0]]}",
                    )  # fmt: skip
                    letters.append((batch.shard_id, _letter_event(event, letter)))
                    report.dead_lettered += 1
        return pa.concat_tables(good) if good else window.rows([], self.window_seconds)

    def _partials(
        self, window: WindowTable, batches: list[JobBatch], dropped: set[Position]
    ) -> dict[Any, Any]:
        """Partial aggregates of records this table does not hold yet (``dropped`` left out)."""
        merged: dict[Any, Any] = {}
        done = self.positions[window.name]
        for batch in batches:
            position = done.get(batch.shard_id, -1)
            if batch.last_sequence <= position:
                continue
            skip = {(q, sub) for shard, q, sub in dropped if shard == batch.shard_id}
            if batch.first_sequence > position and not skip:
                partial = window.partials(batch)
            else:  # straddles the position (only right after a restart) or lost a dropped
                # event (a duplicate, or one that cannot be stored): recompute from the rest
                records = [
                    e.record
                    for e in batch.events.get(window.source, [])
                    if e.sequence > position and (e.sequence, e.sub_sequence) not in skip
                ]
                partial = window.aggregate(records, self.window_seconds)
            merge_maps(merged, partial)
        return merged

    def _commit_window(
        self,
        name: str,
        plan: _WindowPlan,
        batches: list[JobBatch],
        now: float,
        report: FlushReport,
    ) -> None:
        """One snapshot: the replaced files out, the files holding ``plan.rows`` in."""
        if plan.rows is None:
            empty = self.tables[name].schema().as_arrow().empty_table()
            self._commit_rows(name, empty, self._new_positions(name, batches), now, report)
            return
        table = self.tables[name]
        positions = self._new_positions(name, batches)
        properties = self._properties(positions)
        with table.transaction() as tx:
            update = tx.update_snapshot(snapshot_properties=properties)
            with update.overwrite() if plan.replaced else update.fast_append() as producer:
                for data_file in _dataframe_to_data_files(
                    table_metadata=tx.table_metadata,
                    df=plan.rows,
                    io=table.io,
                    write_uuid=producer.commit_uuid,
                ):
                    producer.append_data_file(data_file)
                for data_file in plan.replaced:
                    producer.delete_data_file(data_file)
        self.positions[name] = positions
        self._committed_at[name] = now
        report.rows[name] = plan.rows.num_rows

    # --- shared ------------------------------------------------------------------------------------

    def _letter_rows(self, letters: list[Event], report: FlushReport) -> pa.Table:
        """Rows of ``dead_letters``; a letter that cannot be stored is replaced by one saying so."""
        rows, failures = _build_rows(dead_letter_rows, [e.record for e in letters])
        if not failures:
            return rows
        replacements = []
        for index, message in failures.items():
            original: DeadLetter = letters[index].record
            try:
                raw = original.model_dump_json()
            except Exception:  # noqa: BLE001 - text JSON cannot hold (lone surrogates): escape it
                raw = json.dumps(original.model_dump(mode="json"), ensure_ascii=True, default=str)
            replacements.append(
                dead_letter(
                    original.source, Stage.WRITE, ErrorType.SCHEMA_VIOLATION,
                    f"dead letter {original.dead_letter_id} cannot be stored: {message}",
                    raw, first_seen=original.first_seen,
                    identity=(original.dead_letter_id,),
                )
            )  # fmt: skip
            report.dead_lettered += 1
        return pa.concat_tables([rows, dead_letter_rows(replacements)])

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

    def _commit_rows(
        self,
        name: str,
        rows: pa.Table,
        positions: dict[str, int],
        now: float,
        report: FlushReport,
    ) -> None:
        """Append ``rows`` (none: a positions commit) with ``positions``, in one snapshot."""
        table = self.tables[name]
        table.append(_as_table_schema(rows, table), snapshot_properties=self._properties(positions))
        self.positions[name] = positions
        self._committed_at[name] = now
        report.rows[name] = rows.num_rows


def _build_rows(
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


def _time_ranges(times: Sequence[int], gap: int, limit: int) -> list[tuple[int, int]]:
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
        return _time_ranges(times, gaps[limit - 1], limit)
    return [(low, high) for low, high in ranges]


def _window_files(
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
    return _concat(table, stored), kept, replaced


def _concat(table: Table, parts: Sequence[pa.Table]) -> pa.Table:
    return pa.concat_tables([_as_table_schema(part, table) for part in parts])


def _letter_event(event: Event, letter: DeadLetter) -> Event:
    """``letter`` as a dead-letter event at ``event``'s position."""
    return Event(event.sequence, event.sub_sequence, event.arrival, letter.dead_letter_id,
                 letter.first_seen, letter)  # fmt: skip


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
