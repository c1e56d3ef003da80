"""Table maintenance: snapshot expiry, compaction of closed partitions, orphan-file removal.

In: the tables of a catalog (see ``sluice.tables.warehouse``), the current time, and retention settings.
Out: reports of what was (or, with ``dry_run``, would be) expired, rewritten and deleted; for
production, the Athena statements doing the same work on Glue/S3 tables.

Exactly-once survives maintenance. The job's source positions live in snapshot summaries
(``sluice.positions``) and ``table_positions()`` finds them by walking the current snapshot's parent
lineage, so:
- expiry never removes a snapshot of that walk: from the current snapshot back to the newest snapshot
  carrying positions (a removed parent would stop the walk early and lose the positions);
- compaction commits carry the table's current positions in their own summaries.

A commit is guarded by the catalog (the table's branch must still point at the snapshot the
maintenance read), and pyiceberg retries no commit (``TABLE_PROPERTIES``). A running job whose commit
meets a compaction re-reads the table and decides its flush again (the compaction moved no shard);
a compaction that meets a job's commit fails with ``CommitFailedException`` and is simply run again,
best while the job is stopped.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, LessThan
from pyiceberg.expressions.literals import literal
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.transforms import DayTransform, HourTransform

from sluice.core.errors import SluiceError
from sluice.tables.specs import TABLES
from sluice.tables.warehouse import POSITIONS_PROPERTY

__all__ = [
    "GLUE_NOTE",
    "MaintenanceOptions",
    "athena_statements",
    "compact_closed_partitions",
    "expire_snapshots",
    "maintain",
    "parse_duration",
    "remove_orphans",
]

DEFAULT_KEEP_LAST = 5
DEFAULT_LATENESS = timedelta(seconds=600)
"""The job's default allowed lateness (``allowed_lateness_seconds``)."""
DEFAULT_ORPHAN_MIN_AGE = timedelta(days=1)
TARGET_FILE_SIZE_PROPERTY = "write.target-file-size-bytes"
DEFAULT_TARGET_FILE_SIZE = 512 * 1024 * 1024
"""Iceberg's default for ``write.target-file-size-bytes``."""

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MaintenanceError(SluiceError):
    """A maintenance action cannot run on this table or with these settings."""


def parse_duration(text: str) -> timedelta:
    """``'7d'``, ``'12h'``, ``'30m'``, ``'45s'``, ``'2w'`` (a whole number and one unit)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 7d, 12h, 30m, 0s)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


# --- snapshot expiry -------------------------------------------------------------------------------


@dataclass(slots=True)
class ExpiryReport:
    """Snapshots of one table: expired (or to expire, in a dry run) and kept."""

    table: str
    expired: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    positions_snapshot: int | None = None


def positions_lineage(table: Table) -> list[Snapshot]:
    """The snapshots ``table_positions()`` walks: current back to the newest carrying positions.

    Empty when no snapshot of the lineage carries positions (nothing to protect then).
    """
    walked: list[Snapshot] = []
    snapshot = table.current_snapshot()
    while snapshot is not None:
        walked.append(snapshot)
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if POSITIONS_PROPERTY in props:
            return walked
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return []


def positions_text(table: Table) -> str | None:
    """The raw ``sluice.positions`` value ``table_positions()`` reads, if any."""
    lineage = positions_lineage(table)
    if not lineage or lineage[-1].summary is None:
        return None
    return str(lineage[-1].summary.additional_properties[POSITIONS_PROPERTY])


def expire_snapshots(
    table: Table,
    older_than: datetime,
    *,
    keep_last: int = DEFAULT_KEEP_LAST,
    dry_run: bool = False,
    name: str = "",
) -> ExpiryReport:
    """Expire snapshots created before ``older_than``, keeping the ones maintenance must keep.

    Kept always: the current snapshot (and every branch/tag head), the position lineage (see
    ``positions_lineage``), the ``keep_last`` newest snapshots (time travel), and anything newer
    than ``older_than``. Only metadata changes: data files go with orphan removal.
    """
    if keep_last < 1:
        raise MaintenanceError("keep_last must be at least 1 (the current snapshot)")
    report = ExpiryReport(name or table.name()[-1])
    snapshots = sorted(
        table.metadata.snapshots, key=lambda s: (s.timestamp_ms, s.sequence_number or 0)
    )
    lineage = positions_lineage(table)
    keep = {s.snapshot_id for s in lineage}
    keep.update(ref.snapshot_id for ref in table.metadata.refs.values())
    keep.update(s.snapshot_id for s in snapshots[-keep_last:])
    cutoff_ms = int(older_than.timestamp() * 1000)
    keep.update(s.snapshot_id for s in snapshots if s.timestamp_ms >= cutoff_ms)
    report.positions_snapshot = lineage[-1].snapshot_id if lineage else None
    report.expired = [s.snapshot_id for s in snapshots if s.snapshot_id not in keep]
    report.kept = [s.snapshot_id for s in snapshots if s.snapshot_id in keep]
    if report.expired and not dry_run:
        table.maintenance.expire_snapshots().by_ids(report.expired).commit()
    return report


# --- compaction ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Partition:
    """One time partition of a table: ``[start, end)`` of its time column."""

    column: str
    start: datetime
    end: datetime

    def expression(self) -> BooleanExpression:
        """The row filter selecting exactly this partition's rows."""
        return And(
            GreaterThanOrEqual(term=self.column, value=literal(self.start.isoformat())),
            LessThan(term=self.column, value=literal(self.end.isoformat())),
        )

    def label(self) -> str:
        return f"{self.column} in [{self.start.isoformat()}, {self.end.isoformat()})"


@dataclass(slots=True)
class CompactionReport:
    """Partitions of one table rewritten (or to rewrite, in a dry run), with file counts."""

    table: str
    partitions: list[str] = field(default_factory=list)
    files_before: int = 0
    files_after: int = 0
    rows: int = 0
    skipped: str | None = None


def _time_partitioning(table: Table) -> tuple[str, timedelta] | None:
    """The time column and partition width of a table partitioned by one day/hour transform."""
    spec = table.spec()
    if len(spec.fields) != 1:
        return None
    part = spec.fields[0]
    if isinstance(part.transform, DayTransform):
        width = timedelta(days=1)
    elif isinstance(part.transform, HourTransform):
        width = timedelta(hours=1)
    else:
        return None
    return table.schema().find_column_name(part.source_id) or "", width


def _files_by_partition(table: Table, width: timedelta) -> dict[int, list[DataFile]]:
    """Live data files of the current spec by partition ordinal (days or hours since the epoch)."""
    spec_id = table.spec().spec_id
    grouped: dict[int, list[DataFile]] = {}
    for task in table.scan().plan_files():
        data = task.file
        ordinal = data.partition[0] if len(data.partition) else None
        if data.spec_id != spec_id or ordinal is None:
            continue
        grouped.setdefault(int(ordinal), []).append(data)
    return grouped


def closed_before(now: datetime, lateness: timedelta) -> datetime:
    """Partitions ending at or before this instant receive no more writes from the job."""
    return now - lateness


def compact_closed_partitions(
    table: Table,
    now: datetime,
    *,
    lateness: timedelta = DEFAULT_LATENESS,
    target_file_size: int | None = None,
    min_files: int = 2,
    dry_run: bool = False,
    name: str = "",
) -> CompactionReport:
    """Rewrite the small files of each closed partition into target-size files, in one commit.

    A partition is closed when its end is at least ``lateness`` ago; it is rewritten when it holds
    ``min_files`` or more files smaller than the target size. The rows are read with a scan filtered
    to the partition and written back with ``overwrite`` filtered to the same partition (whole files
    are replaced, rows are unchanged), all partitions of the table in one transaction whose
    snapshots carry the table's current ``sluice.positions``. ``target_file_size``, when given, is
    stored as the table's ``write.target-file-size-bytes`` in the same commit.
    """
    report = CompactionReport(name or table.name()[-1])
    partitioning = _time_partitioning(table)
    if partitioning is None or table.current_snapshot() is None:
        report.skipped = (
            "not partitioned by one day/hour transform" if partitioning is None else "empty"
        )
        return report
    column, width = partitioning
    target = target_file_size or int(
        table.properties.get(TARGET_FILE_SIZE_PROPERTY, DEFAULT_TARGET_FILE_SIZE)
    )
    boundary = closed_before(now, lateness)
    chosen: list[tuple[Partition, list[DataFile]]] = []
    for ordinal, files in sorted(_files_by_partition(table, width).items()):
        start = _EPOCH + ordinal * width
        part = Partition(column, start, start + width)
        small = [f for f in files if f.file_size_in_bytes < target]
        if part.end <= boundary and len(small) >= min_files:
            chosen.append((part, files))
    report.partitions = [p.label() for p, _ in chosen]
    report.files_before = sum(len(files) for _, files in chosen)
    if dry_run or not chosen:
        report.files_after = report.files_before
        return report
    positions = positions_text(table)
    properties = {POSITIONS_PROPERTY: positions} if positions is not None else {}
    with table.transaction() as tx:
        if target_file_size is not None:
            tx.set_properties({TARGET_FILE_SIZE_PROPERTY: str(target_file_size)})
        for part, _ in chosen:
            rows = table.scan(row_filter=part.expression()).to_arrow().sort_by(column)
            report.rows += rows.num_rows
            tx.overwrite(rows, overwrite_filter=part.expression(), snapshot_properties=properties)
    after = _files_by_partition(table.refresh(), width)
    report.files_after = sum(len(after.get(int((p.start - _EPOCH) / width), [])) for p, _ in chosen)
    return report


# --- orphan files ----------------------------------------------------------------------------------


@dataclass(slots=True)
class OrphanReport:
    """Files under one table's location that no live snapshot references."""

    table: str
    orphans: list[Path] = field(default_factory=list)
    deleted: bool = False


def _local_path(location: str) -> Path:
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        raise MaintenanceError(
            f"orphan removal works on local file:// warehouses only, not {location}"
        )
    return Path(unquote(parsed.path)).resolve()


def referenced_files(table: Table) -> set[Path]:
    """Every file the table's metadata reaches: metadata, manifest lists, manifests, data files."""
    io = table.io
    metadata = table.metadata
    locations: set[str] = {table.metadata_location}
    locations.update(entry.metadata_file for entry in metadata.metadata_log)
    locations.update(s.statistics_path for s in metadata.statistics)
    locations.update(s.statistics_path for s in metadata.partition_statistics)
    for snapshot in metadata.snapshots:
        locations.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            locations.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                locations.add(entry.data_file.file_path)
    return {_local_path(location) for location in locations}


def find_orphans(table: Table, now: datetime, min_age: timedelta) -> list[Path]:
    """Unreferenced files under the table location last modified at least ``min_age`` before ``now``.

    ``*.metadata.json`` files are never listed (Iceberg keeps or prunes those itself, see
    ``write.metadata.previous-versions-max``); ``min_age`` protects files a running writer has
    written but not committed yet.
    """
    root = _local_path(table.location())
    if not root.is_dir():
        return []
    referenced = referenced_files(table)
    cutoff = (now - min_age).timestamp()
    orphans: list[Path] = []
    for folder, _, names in os.walk(root):
        for file_name in names:
            path = Path(folder, file_name).resolve()
            if file_name.endswith(".metadata.json") or path in referenced:
                continue
            if path.stat().st_mtime <= cutoff:
                orphans.append(path)
    return sorted(orphans)


def remove_orphans(
    table: Table,
    now: datetime,
    *,
    min_age: timedelta = DEFAULT_ORPHAN_MIN_AGE,
    dry_run: bool = False,
    name: str = "",
) -> OrphanReport:
    """Delete (or, in a dry run, only list) the table's orphan files (see ``find_orphans``)."""
    report = OrphanReport(name or table.name()[-1], find_orphans(table, now, min_age))
    if not dry_run:
        for path in report.orphans:
            path.unlink(missing_ok=True)
        report.deleted = True
    return report


# --- all tables ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MaintenanceOptions:
    """What ``maintain`` does; ``None`` ages switch the action off."""

    expire_older_than: timedelta | None = timedelta(days=7)
    keep_last: int = DEFAULT_KEEP_LAST
    compact: bool = False
    lateness: timedelta = DEFAULT_LATENESS
    target_file_size: int | None = None
    min_files: int = 2
    remove_orphans: bool = False
    orphan_min_age: timedelta = DEFAULT_ORPHAN_MIN_AGE
    dry_run: bool = False


def maintain(
    tables: Mapping[str, Table], options: MaintenanceOptions, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Run the chosen actions on every table, in order compaction, expiry, orphan removal.

    Returns one JSON-ready summary per table and action.
    """
    now = now or datetime.now(UTC)
    out: list[dict[str, Any]] = []
    for name, table in tables.items():
        if options.compact:
            compaction = compact_closed_partitions(
                table,
                now,
                lateness=options.lateness,
                target_file_size=options.target_file_size,
                min_files=options.min_files,
                dry_run=options.dry_run,
                name=name,
            )
            out.append({"action": "compact", **_plain(compaction)})
        if options.expire_older_than is not None:
            expiry = expire_snapshots(
                table.refresh(),
                now - options.expire_older_than,
                keep_last=options.keep_last,
                dry_run=options.dry_run,
                name=name,
            )
            out.append({"action": "expire", **_plain(expiry)})
        if options.remove_orphans:
            orphans = remove_orphans(
                table.refresh(),
                now,
                min_age=options.orphan_min_age,
                dry_run=options.dry_run,
                name=name,
            )
            out.append({"action": "remove_orphans", **_plain(orphans)})
    return out


def _plain(report: ExpiryReport | CompactionReport | OrphanReport) -> dict[str, Any]:
    values: dict[str, Any] = json.loads(json.dumps(asdict(report), default=str))
    return values


# --- production (Athena / Glue) --------------------------------------------------------------------

GLUE_NOTE = """\
-- Glue alternative: managed table optimizers (Glue console or `aws glue create-table-optimizer
-- --type compaction|retention|orphan_file_deletion`) run the same work without Athena queries.
-- Compaction (OPTIMIZE or Glue) commits snapshots WITHOUT sluice.positions: the job still finds its
-- positions in the parent snapshots, so snapshot retention (VACUUM / Glue retention) must keep
-- them: keep vacuum_min_snapshots_to_keep high enough, or expire with `sluice maintain
-- --expire-older-than` (which keeps the position lineage) instead of VACUUM / Glue retention."""


def _sql_timestamp(at: datetime) -> str:
    return f"TIMESTAMP '{at.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S')} UTC'"


def athena_statements(
    database: str,
    now: datetime,
    *,
    lateness: timedelta = DEFAULT_LATENESS,
    retain: timedelta = timedelta(days=7),
    keep_last: int = DEFAULT_KEEP_LAST,
    hourly_tables: Iterable[str] = (),
) -> list[str]:
    """Athena statements compacting each table's closed partitions and vacuuming it.

    The closed-partitions predicate is on the partition source column (Athena allows partition
    columns only): rows before the start of the partition that contains ``now - lateness``.
    """
    hourly = set(hourly_tables)
    boundary = closed_before(now, lateness).astimezone(UTC)
    statements: list[str] = []
    for name, definition in TABLES.items():
        if name in hourly:
            closed = boundary.replace(minute=0, second=0, microsecond=0)
        else:
            closed = boundary.replace(hour=0, minute=0, second=0, microsecond=0)
        qualified = f"{database}.{name}"
        statements += [
            f"OPTIMIZE {qualified} REWRITE DATA USING BIN_PACK "
            f"WHERE {definition.time_column} < {_sql_timestamp(closed)};",
            f"ALTER TABLE {qualified} SET TBLPROPERTIES ("
            f"'vacuum_max_snapshot_age_seconds'='{int(retain.total_seconds())}', "
            f"'vacuum_min_snapshots_to_keep'='{keep_last}');",
            f"VACUUM {qualified};",
        ]
    return statements
