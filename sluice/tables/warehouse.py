"""The exactly-once table writer (the catalog side is ``sluice.tables.catalog``, row building
``sluice.tables.rows``; the catalog names are re-exported here for the writer's users).

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
  snapshot (the data files holding them are replaced by files holding the merged rows, and files
  of their own holding those files' other rows, so the next flush rewrites only the files of the
  windows it changes, not every window stored in the partition so far). Late data within the
  allowed lateness therefore updates its window; a window's rows are replaced, never duplicated.
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

import itertools
import json
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import (
    And,
    BooleanExpression,
    GreaterThanOrEqual,
    LessThanOrEqual,
    Or,
)
from pyiceberg.expressions.literals import literal
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from sluice.core.contracts import DeadLetter, ErrorType, Source, Stage
from sluice.core.deadletters import dead_letter
from sluice.stream.stages import Event, JobBatch, describe_exception, event_dead_letter
from sluice.tables.catalog import (
    METADATA_VERSIONS_KEPT,
    POSITIONS_PROPERTY,
    START_PROPERTY,
    TABLE_PROPERTIES,
    WarehouseSettings,
    ensure_tables,
    first_start,
    open_catalog,
    resume_positions,
    table_positions,
)
from sluice.tables.ownership import OWNER_PROPERTY, Owner, WriterFenced, check_owner
from sluice.tables.rows import (
    as_table_schema,
    build_rows,
    concat_rows,
    letter_event,
    stored_state,
    time_ranges,
    window_files,
    window_sort_key,
)
from sluice.tables.specs import (
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
    "DEFAULT_MAX_BUFFERED_RECORDS",
    "DEFAULT_POSITIONS_COMMIT_SECONDS",
    "METADATA_VERSIONS_KEPT",
    "POSITIONS_PROPERTY",
    "START_PROPERTY",
    "TABLE_PROPERTIES",
    "ExactlyOnceWriter",
    "WarehouseSettings",
    "batch_records",
    "ensure_tables",
    "first_start",
    "open_catalog",
    "table_positions",
]

DEFAULT_MAX_BUFFERED_RECORDS = 50_000
"""Most records a job's writer buffers before it commits early (``JobSettings.max_buffered_records``)."""
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
_LETTER_HORIZON = timedelta(days=7)
"""A dead letter first seen up to this long after one of the same id and raw input is a copy."""
_LOOKUP_GAP = timedelta(minutes=1)
"""Candidate event times closer than this share a lookup range."""
COMMIT_ATTEMPTS = 12
"""Tries of one flush against commits of other writers (each after re-reading the tables)."""
_CONFLICT_BACKOFF_SECONDS = 0.05
"""First wait before a flush is tried again after a conflict (doubles, with jitter, up to 1 s)."""


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
    conflicts: int = 0
    """Commits another writer got in first; the flush was decided again on the new snapshots."""


@dataclass(slots=True)
class _EventPlan:
    """What a flush does to one event table: its rows and the events its window table leaves out."""

    rows: pa.Table
    dropped: set[Position]


@dataclass(slots=True)
class _WindowPlan:
    """A window table's rewrite: the files it replaces and every row of the files replacing them.

    ``rows`` are the merged rows of the windows the flush changed, ``kept`` the replaced files'
    other rows: written to files of their own, so a later flush rewrites only the files of the
    windows it changes, not every window of the partition stored so far.
    """

    rows: pa.Table | None = None
    replaced: list[DataFile] = field(default_factory=list)
    kept: pa.Table | None = None


def batch_records(batch: JobBatch) -> int:
    """Events and dead letters in ``batch`` (what a flush turns into rows)."""
    return sum(len(e) for e in batch.events.values()) + len(batch.dead_letters)


def _instant(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND


def _position(shard: str, event: Event) -> Position:
    return (shard, event.sequence, event.sub_sequence)


class ExactlyOnceWriter:
    """Buffers batches and commits them to every table with positions (see the module docstring).

    ``positions_commit_seconds``: how long a table that receives nothing may leave its positions
    unrecorded. ``deduplicate``: drop repeated event ids (on by default; off, only re-driven events
    are de-duplicated). ``owner``: the job this writer commits for (``sluice.tables.ownership``);
    every commit records it, and a table a newer job claimed fences this writer (``WriterFenced``).
    ``clock``: epoch seconds now (tests pass their own).

    Several writers may commit to the same tables at once (parallel workers of one job, each
    writing the shards it reads). Every commit is a compare-and-swap on the snapshot this writer
    read (pyiceberg's own retries are off, see ``TABLE_PROPERTIES``). On a conflict the writer
    re-reads every table and compares, for each shard of the flush, the table's position with the
    one it built on: if the other writer advanced only other shards, the flush is decided again on
    the new snapshots (rows, window merges and duplicate lookups included) and retried; if it
    committed records of a shard of this flush, or the table belongs to a newer job, this writer
    is fenced and writes nothing more.
    """

    def __init__(
        self,
        tables: Mapping[str, Table],
        window_seconds: int,
        *,
        positions_commit_seconds: float = DEFAULT_POSITIONS_COMMIT_SECONDS,
        deduplicate: bool = True,
        owner: Owner | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tables = dict(tables)
        self.owner = owner
        if owner is not None:
            for name, table in self.tables.items():
                check_owner(name, table, owner)
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
        """Per shard, where the job must resume (``resume_positions`` over every table)."""
        return resume_positions(self.positions.values())

    @property
    def pending_batches(self) -> int:
        return sum(len(b) for b in self._pending.values())

    @property
    def pending_records(self) -> int:
        """Events and dead letters in the buffered batches (what a flush turns into rows)."""
        return sum(batch_records(batch) for batches in self._pending.values() for batch in batches)

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
                if (
                    end is None
                    or batch.previous_sequence is None
                    or batch.previous_sequence == end
                    or self._written_through(shard, batch.previous_sequence, end)
                ):
                    ready.append(batch)
                    end = batch.last_sequence
                else:
                    keep.append(batch)
            if end is not None:
                self._chain_end[shard] = end
            self._pending[shard] = keep
            held += len(keep)
        return ready, held

    def _written_through(self, shard: str, previous: int, end: int) -> bool:
        """Whether another writer of this job carried ``shard`` on from ``end`` to ``previous``.

        A runner may hand a shard's reading (the restriction) to another worker between bundles
        and back; the batches then continue that worker's chain, which some table's positions show.
        """
        if previous < end:
            return False
        # Fresh copies: the writer's own tables stay at the snapshots its positions describe.
        fresh = [t.catalog.load_table(t.name()) for t in self.tables.values()]
        return any(table_positions(t).get(shard, -1) >= previous for t in fresh)

    # --- commits against other writers ---------------------------------------------------------------

    def _wait_after_conflict(self, attempt: int) -> None:
        delay = min(1.0, _CONFLICT_BACKOFF_SECONDS * 2**attempt)
        time.sleep(random.uniform(delay / 2, delay))

    def _after_conflict(self, batches: Sequence[JobBatch]) -> None:
        """Re-read every table after a failed compare-and-swap; fence, or take the new positions.

        ``self.positions`` is what this writer built on (what it read, or its own commits). A
        shard of this flush whose position changed meanwhile *and* now covers records of this
        flush (past where its chain starts) was written by someone else: committing would double
        those records, so the writer is fenced. Shards the flush does not touch take the table's
        value (another writer's progress), and so does a shard the table moved only up to this
        flush's start (the worker that read it before this one committed it).
        """
        starts: dict[str, int] = {}
        for batch in batches:
            start = batch.previous_sequence if batch.previous_sequence is not None else -1
            starts[batch.shard_id] = min(starts.get(batch.shard_id, start), start)
        for name, table in self.tables.items():
            table.refresh()
            if self.owner is not None:
                check_owner(name, table, self.owner)
            fresh = table_positions(table)
            known = self.positions[name]
            for shard, start in starts.items():
                now, before = fresh.get(shard, -1), known.get(shard, -1)
                if now != before and now > start:
                    raise WriterFenced(
                        f"another writer committed records of shard {shard} to table {name} "
                        f"(up to {now}; this writer built on {before} and holds records from "
                        f"{start + 1}); this writer stopped without committing them"
                    )
            self.positions[name] = fresh
            snapshot = table.current_snapshot()
            if snapshot is not None:
                self._committed_at[name] = max(
                    self._committed_at[name], snapshot.timestamp_ms / 1000
                )

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
        committed: dict[str, int] = {}
        for attempt in range(COMMIT_ATTEMPTS):
            report = FlushReport(batches=len(batches), held_back=held)
            try:
                self._flush(batches, report)
                break
            except CommitFailedException:
                committed.update(report.rows)
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise
                self._wait_after_conflict(attempt)
                self._after_conflict(batches)
        report.rows = {**committed, **report.rows}
        report.conflicts = attempt
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
        letter_rows = self._landed_letters_dropped(
            self._letter_rows(
                self._fresh("dead_letters", batches, lambda b: b.dead_letters)
                + [
                    e for shard, e in letters if self._is_fresh("dead_letters", (shard, e.sequence))
                ],
                report,
            ),
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
            for attempt in range(COMMIT_ATTEMPTS):
                positions = dict(self.positions[name])
                for shard, end in self._flushed.items():
                    positions[shard] = max(positions.get(shard, -1), end)
                if positions == self.positions[name]:
                    break
                empty = self.tables[name].schema().as_arrow().empty_table()
                try:
                    self._commit_rows(name, empty, positions, self.clock(), FlushReport())
                    done.append(name)
                    break
                except CommitFailedException:
                    # Positions only move forward here (a maximum), so another writer's progress
                    # is merged, never overwritten; a newer job fences.
                    if attempt == COMMIT_ATTEMPTS - 1:
                        raise
                    table = self.tables[name].refresh()
                    if self.owner is not None:
                        check_owner(name, table, self.owner)
                    self.positions[name] = table_positions(table)
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
        rows, failures = build_rows(
            ROW_BUILDERS[source],
            [Stamped(e.event_id, e.ingest_time, e.record, e.correlation_id) for _, e in checked],
        )
        dropped: set[Position] = set()
        for index, message in failures.items():
            shard, event = checked[index]
            dropped.add(_position(shard, event))
            letter = event_dead_letter(
                shard, source, event, Stage.WRITE, ErrorType.SCHEMA_VIOLATION,
                f"cannot be stored in {name}: {message}",
            )  # fmt: skip
            letters.append((shard, letter_event(event, letter)))
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
        keys = rows.select(["event_id", "event_time"]).take(pa.array(fresh, pa.int64()))
        ids, times = keys.column("event_id"), pc.cast(keys.column("event_time"), pa.int64())
        stored = self._landed(name, ids, times)
        distinct = keys.group_by(["event_id", "event_time"]).aggregate([]).num_rows
        if stored.num_rows == 0 and distinct == len(fresh):
            # Nothing of these ids landed and no two fresh rows share a key: no copies. Decided in
            # Arrow, without a Python object per row (the common case: a backlog of new events).
            return set()
        id_list, time_list = ids.to_pylist(), times.to_pylist()
        landed = set(
            zip(stored.column("event_id").to_pylist(), stored.column("event_time").to_pylist(),
                strict=True)
        )  # fmt: skip
        ordered = sorted(
            range(len(fresh)),
            key=lambda k: built[fresh[k]][1].sequence > counted.get(built[fresh[k]][0], -1),
        )
        copies: set[int] = set()
        for k in ordered:  # stable sort: chain order within each group
            key = (id_list[k], time_list[k])
            if key in landed:
                copies.add(fresh[k])
            else:
                landed.add(key)
        return copies

    def _landed(self, name: str, ids: pa.ChunkedArray, times: pa.ChunkedArray) -> pa.Table:
        """The stored rows (``event_id``, ``event_time`` in µs) of ``name`` with one of ``ids``,
        read from the event-time ranges ``times`` (µs) fall in."""
        distinct = pc.unique(times).sort().to_pylist()
        ranges = time_ranges(distinct, _LOOKUP_GAP // _MICROSECOND, _LOOKUP_RANGES)
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
        stored = stored.filter(pc.is_in(stored.column("event_id"), value_set=pc.unique(ids)))
        return pa.table(
            {"event_id": stored.column("event_id"),
             "event_time": pc.cast(stored.column("event_time"), pa.int64())}
        )  # fmt: skip

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
        stored, kept, replaced = window_files(table, starts)
        merged = stored_state(window, stored)
        previous = dict(merged)
        merge_maps(merged, partials, copy=False)
        items = sorted(merged.items(), key=window_sort_key)
        try:
            rows = window.rows(items, self.window_seconds)
        except Exception:  # noqa: BLE001 - find the windows at fault; the others still land
            rows = self._window_rows_isolated(
                window, batches, dropped, items, previous, letters, report
            )
        return _WindowPlan(
            as_table_schema(rows, table), replaced, concat_rows(table, kept) if kept else None
        )

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
                    letters.append((batch.shard_id, letter_event(event, letter)))
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
        parts = (
            [plan.rows] if plan.kept is None or plan.kept.num_rows == 0 else [plan.rows, plan.kept]
        )
        with table.transaction() as tx:
            update = tx.update_snapshot(snapshot_properties=properties)
            with update.overwrite() if plan.replaced else update.fast_append() as producer:
                counter = itertools.count(0)  # one sequence of file names over both parts
                for part in parts:
                    for data_file in _dataframe_to_data_files(
                        table_metadata=tx.table_metadata,
                        df=part,
                        io=table.io,
                        write_uuid=producer.commit_uuid,
                        counter=counter,
                    ):
                        producer.append_data_file(data_file)
                for data_file in plan.replaced:
                    producer.delete_data_file(data_file)
        self.positions[name] = positions
        self._committed_at[name] = now
        report.rows[name] = sum(part.num_rows for part in parts)

    # --- shared ------------------------------------------------------------------------------------

    def _letter_rows(self, letters: list[Event], report: FlushReport) -> pa.Table:
        """Rows of ``dead_letters``; a letter that cannot be stored is replaced by one saying so."""
        rows, failures = build_rows(dead_letter_rows, [e.record for e in letters])
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

    def _landed_letters_dropped(self, rows: pa.Table, report: FlushReport) -> pa.Table:
        """``rows`` without the dead letters that already landed: the same letter id and raw input
        in ``dead_letters`` first seen at most ``_LETTER_HORIZON`` before the earliest of ``rows``,
        or earlier in ``rows``. Ids are deterministic (the input, or where it was), so a copy is the
        same rejection again: a client's retry of a body, a stream read again. The raw input is
        compared too because a job-made letter's id is its Kinesis position, which a recreated
        stream repeats for other records."""
        if not self.deduplicate or rows.num_rows == 0:
            return rows
        ids = rows.column("dead_letter_id").to_pylist()
        raws = rows.column("raw").to_pylist()
        first = pc.min(rows.column("first_seen")).as_py()
        window: dict[str, Any] = {}
        if first is not None:
            since = (first - _LETTER_HORIZON).isoformat()
            window["row_filter"] = GreaterThanOrEqual(term="first_seen", value=literal(since))
        stored = (
            self.tables["dead_letters"]
            .scan(selected_fields=("dead_letter_id", "raw"), **window)
            .to_arrow()
        )
        wanted = pa.array(sorted(set(ids)), pa.string())
        stored = stored.filter(pc.is_in(stored.column("dead_letter_id"), value_set=wanted))
        landed = set(
            zip(stored.column("dead_letter_id").to_pylist(), stored.column("raw").to_pylist(),
                strict=True)
        )  # fmt: skip
        keep: list[int] = []
        for index, key in enumerate(zip(ids, raws, strict=True)):
            if key not in landed:
                landed.add(key)
                keep.append(index)
        if len(keep) == rows.num_rows:
            return rows
        report.duplicates += rows.num_rows - len(keep)
        return rows.take(pa.array(keep, pa.int64()))

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
        properties = {
            POSITIONS_PROPERTY: json.dumps({s: str(q) for s, q in sorted(positions.items())})
        }
        if self.owner is not None:
            properties[OWNER_PROPERTY] = self.owner.encode()
        return properties

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
        table.append(as_table_schema(rows, table), snapshot_properties=self._properties(positions))
        self.positions[name] = positions
        self._committed_at[name] = now
        report.rows[name] = rows.num_rows
