"""Table maintenance against real Iceberg tables (SQLite catalog): expiry, compaction, orphans, CLI."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pyiceberg.table import Table

from sluice.analysts.query import run
from sluice.core.contracts import IotReading, Source
from sluice.stream.envelopes import encode, wrap_reading
from sluice.stream.stages import InputRecord, JobBatch, decode_batch, filter_batch, window_batch
from sluice.tables.maintenance import (
    MaintenanceOptions,
    athena_statements,
    compact_closed_partitions,
    expire_snapshots,
    maintain,
    parse_duration,
    remove_orphans,
)
from sluice.tables.warehouse import (
    ExactlyOnceWriter,
    WarehouseSettings,
    ensure_tables,
    open_catalog,
    table_positions,
)
from sluice.transform.filters import DEFAULT_RULES, RecordFilter

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(days=3)  # "now" for which the T0 day partition is closed
SQL = "SELECT device_id, count(*), sum(metrics['t']) FROM iot_readings GROUP BY 1 ORDER BY 1"


def batch(first: int, count: int, previous: int | None) -> JobBatch:
    arrival = T0 + timedelta(seconds=first + 1)
    records = [
        InputRecord(
            first + i,
            0,
            arrival.timestamp(),
            encode(
                wrap_reading(
                    IotReading(
                        device_id=f"d{(first + i) % 3}",
                        event_time=T0 + timedelta(seconds=first + i),
                        metrics={"t": float(first + i)},
                    ),
                    ingest_time=arrival,
                )
            ),
        )
        for i in range(count)
    ]
    decoded = decode_batch("s", records, previous_sequence=previous)
    filtered = filter_batch(decoded, {Source.WEBLOG: RecordFilter(DEFAULT_RULES, "weblog")})
    return window_batch(filtered, 60, 600)


@pytest.fixture
def warehouse(tmp_path: Path) -> tuple[WarehouseSettings, Any, dict[str, Table]]:
    """Tables after four job flushes of five readings each (one small file per flush)."""
    settings = WarehouseSettings(state_dir=tmp_path / "state")
    catalog = open_catalog(settings)
    tables = ensure_tables(catalog, settings)
    writer = ExactlyOnceWriter(tables, 60)
    previous = None
    for first in range(0, 20, 5):
        writer.add(batch(first, 5, previous))
        writer.flush()
        previous = first + 4
    return settings, catalog, {n: t.refresh() for n, t in tables.items()}


def data_files(table: Table) -> int:
    return len(list(table.refresh().scan().plan_files()))


def test_parse_duration() -> None:
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("0s") == timedelta(0)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("7 days")


def test_expiry_keeps_position_lineage_and_recent_snapshots(warehouse) -> None:
    settings, catalog, tables = warehouse
    table = tables["iot_readings"]
    before = table_positions(table)
    # GIVEN three commits without positions on top of the job's commits (e.g. a manual fix-up)
    for _ in range(3):
        table.append(table.schema().as_arrow().empty_table())
    assert table_positions(table) == before == {"s": 19}
    snapshots = len(table.metadata.snapshots)
    # WHEN every snapshot is past the age limit and only 2 recent ones are asked for
    report = expire_snapshots(table, datetime.now(UTC) + timedelta(minutes=1), keep_last=2)
    # THEN the walk current -> newest positioned snapshot survives (4 snapshots), the rest go
    reloaded = catalog.load_table(f"{settings.namespace}.iot_readings")
    assert len(report.kept) == 4 and len(report.expired) == snapshots - 4
    assert len(reloaded.metadata.snapshots) == 4
    assert table_positions(reloaded) == before
    assert reloaded.scan().to_arrow().num_rows == 20
    # and a resumed job still skips what the table holds
    assert ExactlyOnceWriter({"iot_readings": reloaded}, 60).resume_positions() == before


def test_expiry_keeps_young_and_last_n_snapshots(warehouse) -> None:
    _, _, tables = warehouse
    table = tables["iot_readings"]
    ids = [s.snapshot_id for s in table.metadata.snapshots]
    assert expire_snapshots(table, datetime.now(UTC) - timedelta(days=1)).expired == []
    report = expire_snapshots(table, datetime.now(UTC) + timedelta(minutes=1), keep_last=3)
    assert report.kept == ids[-3:]
    # the kept snapshots can still be read (time travel)
    assert [table.scan(snapshot_id=i).to_arrow().num_rows for i in report.kept] == [10, 15, 20]


def test_expiry_dry_run_changes_nothing(warehouse) -> None:
    _, _, tables = warehouse
    table = tables["iot_readings"]
    count = len(table.metadata.snapshots)
    report = expire_snapshots(
        table, datetime.now(UTC) + timedelta(minutes=1), keep_last=1, dry_run=True
    )
    assert len(report.expired) == count - 1
    assert len(table.refresh().metadata.snapshots) == count


def test_compaction_same_answer_fewer_files_positions_kept(warehouse) -> None:
    settings, catalog, tables = warehouse
    answers = {n: sorted(map(str, t.scan().to_arrow().to_pylist())) for n, t in tables.items()}
    positions = {n: table_positions(t) for n, t in tables.items()}
    files = {n: data_files(t) for n, t in tables.items()}
    query_before = run(catalog, settings.namespace, SQL)
    assert files["iot_readings"] == 4
    # WHEN the closed day is compacted
    results = maintain(tables, MaintenanceOptions(expire_older_than=None, compact=True), LATER)
    # THEN same rows and query answer, fewer files, and every table keeps its positions
    reloaded = ensure_tables(catalog, settings)
    assert run(catalog, settings.namespace, SQL) == query_before
    for name, table in reloaded.items():
        assert sorted(map(str, table.scan().to_arrow().to_pylist())) == answers[name]
        assert table_positions(table) == positions[name]
        current = table.current_snapshot()
        assert current is not None
        if files[name] >= 2:
            assert data_files(table) == 1
            # pyiceberg's overwrite commits a delete and an append snapshot: both carry positions
            parent = table.snapshot_by_id(current.parent_snapshot_id or 0)
            for snap in (current, parent):
                assert snap is not None and snap.summary is not None
                assert "sluice.positions" in snap.summary.additional_properties
    assert {r["table"]: r["files_after"] for r in results}["iot_readings"] == 1
    # AND the job resumed on the compacted tables writes nothing twice
    writer = ExactlyOnceWriter(reloaded, 60)
    writer.add(batch(15, 10, None))  # replays 15..19, adds 20..24
    writer.flush()
    rows = reloaded["iot_readings"].refresh().scan().to_arrow()
    assert rows.num_rows == 25 and len(set(rows.column("event_id").to_pylist())) == 25


def test_compaction_leaves_open_partitions_and_dry_run_alone(warehouse) -> None:
    _, _, tables = warehouse
    table = tables["iot_readings"]
    snapshot = table.current_snapshot()
    open_day = compact_closed_partitions(table, T0 + timedelta(hours=1))
    assert open_day.partitions == [] and data_files(table) == 4
    dry = compact_closed_partitions(table, LATER, dry_run=True)
    assert len(dry.partitions) == 1 and dry.files_before == dry.files_after == 4
    assert table.refresh().current_snapshot() == snapshot


def test_orphans_removed_only_when_unreferenced(warehouse) -> None:
    _, _, tables = warehouse
    table = tables["iot_readings"]
    data_dir = Path(table.location().removeprefix("file://")) / "data"
    stray = data_dir / "stray.parquet"
    stray.write_bytes(b"not referenced")
    compact_closed_partitions(table, LATER)
    # old small files are still referenced by older snapshots: only the stray file is an orphan
    dry = remove_orphans(table.refresh(), datetime.now(UTC), min_age=timedelta(0), dry_run=True)
    assert dry.orphans == [stray.resolve()] and stray.exists()
    assert remove_orphans(table, datetime.now(UTC), min_age=timedelta(days=1)).orphans == []
    remove_orphans(table, datetime.now(UTC), min_age=timedelta(0))
    assert not stray.exists()
    # once the pre-compaction snapshots are expired, their small files become orphans
    expire_snapshots(table, datetime.now(UTC) + timedelta(minutes=1), keep_last=1)
    report = remove_orphans(table.refresh(), datetime.now(UTC), min_age=timedelta(0))
    assert len([p for p in report.orphans if p.suffix == ".parquet"]) == 4
    assert table.refresh().scan().to_arrow().num_rows == 20
    assert table_positions(table) == {"s": 19}


def test_athena_statements_cover_every_table() -> None:
    statements = athena_statements("sluice", LATER, hourly_tables=("web_requests",))
    assert (
        "OPTIMIZE sluice.iot_readings REWRITE DATA USING BIN_PACK "
        "WHERE event_time < TIMESTAMP '2026-11-29 00:00:00 UTC';"
    ) in statements
    assert any("web_requests" in s and "2026-11-29 11:00:00" in s for s in statements)
    assert sum(s.startswith("VACUUM ") for s in statements) == 6


def sluice(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", "maintain", *args], capture_output=True, timeout=120
    )


def test_cli_maintain(warehouse) -> None:
    settings, _, tables = warehouse
    state = str(settings.state_dir)
    count = len(tables["iot_readings"].metadata.snapshots)
    dry = sluice("--state-dir", state, "--expire-older-than", "0s", "--keep-last", "1",
                 "--compact", "--lateness", "0s", "--remove-orphans", "--dry-run")  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    lines = [orjson.loads(line) for line in dry.stdout.splitlines()]
    assert {line["action"] for line in lines} == {"compact", "expire", "remove_orphans"}
    assert all(line["dry_run"] for line in lines)
    assert len(tables["iot_readings"].refresh().metadata.snapshots) == count
    done = sluice("--state-dir", state, "--expire-older-than", "0s", "--keep-last", "1")
    assert done.returncode == 0, done.stderr
    assert len(tables["iot_readings"].refresh().metadata.snapshots) == 1
    assert table_positions(tables["iot_readings"]) == {"s": 19}


def test_cli_maintain_errors_and_athena(tmp_path: Path) -> None:
    bad = sluice("--state-dir", str(tmp_path), "--expire-older-than", "soon")
    assert bad.returncode == 2 and b"not a duration" in bad.stderr
    empty = sluice("--state-dir", str(tmp_path / "none"))
    assert empty.returncode == 2 and b"no Sluice tables" in empty.stderr
    athena = sluice("--print-athena")
    assert athena.returncode == 0 and b"VACUUM sluice.dead_letters;" in athena.stdout
