"""``sluice replay`` end to end: the stream job archives what it reads; a replay of the archive rewrites nothing
where the tables already hold it, and rebuilds the very same tables in an empty warehouse (backfill).

The stream job runs over a moto Kinesis stream (half the input KPL-aggregated, two too-late events),
as in ``test_job_end_to_end``; replays run through ``sluice.cli.main.main`` (``sluice replay``) in this
process, in batch mode. Tables are compared as in ``test_job_kill_restart``: event tables and dead
letters as multisets of whole rows, window tables value by value.

Runtime: about 8 s (a stream run with 2 s of idle time, two replays).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
from job_testkit import (
    TABLE_NAMES,
    committed_positions,
    prefill_mixed_stream,
    read_tables,
    window_of,
)
from kinesis_testkit import create_stream
from test_job_kill_restart import assert_same_rows, assert_same_windows

from sluice.core.contracts import ErrorType
from sluice.tables.archive import read_archive_file
from sluice.tables.warehouse import WarehouseSettings, open_catalog

WINDOW_TABLES = ("iot_metrics_1m", "web_traffic_1m")
Cli = Callable[[list[str]], dict[str, int]]


def snapshot_ids(state_dir: Path) -> dict[str, int | None]:
    catalog = open_catalog(WarehouseSettings(state_dir=state_dir))
    ids: dict[str, int | None] = {}
    for name in TABLE_NAMES:
        snapshot = catalog.load_table(f"sluice.{name}").current_snapshot()
        ids[name] = snapshot.snapshot_id if snapshot else None
    return ids


def assert_same_tables(state_dir: Path, reference_dir: Path) -> None:
    mine, theirs = read_tables(state_dir), read_tables(reference_dir)
    for name in TABLE_NAMES:
        if name in WINDOW_TABLES:
            assert_same_windows(name, mine[name], theirs[name])
        else:
            assert_same_rows(name, mine[name], theirs[name])


def test_a_replay_rewrites_nothing_and_a_backfill_rebuilds_the_stream_tables(
    aws_env: str, tmp_path: Path, geoip_dbs: tuple[Path, Path], sluice: Cli
) -> None:
    # GIVEN the stream job has read a 2-shard stream (plain and KPL-aggregated records, invalid
    # records, too-late events) into a warehouse, archiving what it read
    kinesis = boto3.client("kinesis", endpoint_url=aws_env)
    stream = create_stream(kinesis, shard_count=2)
    start = window_of(datetime.now(UTC)) - timedelta(minutes=3)
    sent = prefill_mixed_stream(
        kinesis,
        stream,
        start,
        7,
        2,
        readings=120,
        requests=100,
        feed_items=3,
        too_late=2,
        invalid=1,
        edge_dead_letters=1,
    )
    city_db, asn_db = geoip_dbs
    state_dir, backfill_dir = tmp_path / "stream", tmp_path / "backfill"
    geoip = ["--geoip_city_db", str(city_db), "--geoip_asn_db", str(asn_db)]
    streamed = sluice([
        "job", "run", "--stream_name", stream, "--stop_when_idle_seconds", "2",
        "--commit_interval_seconds", "1", "--state_dir", str(state_dir), *geoip,
    ])  # fmt: skip
    assert streamed["read.records"] == len(sent)
    before, positions = read_tables(state_dir), committed_positions(state_dir)
    snapshots = snapshot_ids(state_dir)
    assert sum(r["error_type"] == ErrorType.TOO_LATE.value for r in before["dead_letters"]) == 2

    # THEN the archive holds every record read, once per (shard, position), gzipped JSON lines
    files = sorted((state_dir / "warehouse" / "raw").rglob("*.jsonl.gz"))
    assert files and all(f.parent.name.startswith("hour=") for f in files)
    archived = {
        (shard, r.sequence, r.sub_sequence): r.data
        for f in files
        for shard, r in read_archive_file(f.read_bytes())
    }
    assert sorted(archived.values()) == sorted(s.data for s in sent)
    assert gzip.decompress(files[0].read_bytes()).startswith(b'{"shard":"shardId-')

    # WHEN the whole range is replayed into the same warehouse
    span = ["--from", (start - timedelta(hours=1)).isoformat(), "--to", (start + timedelta(hours=2)).isoformat()]  # fmt: skip
    replayed = sluice(["replay", *span, "--state_dir", str(state_dir), *geoip])

    # THEN every record went through the stages again, but no table changed: nothing duplicated
    assert replayed["parse.received"] == len(sent)
    assert snapshot_ids(state_dir) == snapshots
    assert committed_positions(state_dir) == positions
    for name in TABLE_NAMES:
        assert_same_rows(name, read_tables(state_dir)[name], before[name])

    # WHEN the same range is replayed into an empty warehouse (a backfill)
    archive = ["--archive_root", str(state_dir / "warehouse")]
    sluice(["replay", *span, *archive, "--state_dir", str(backfill_dir), *geoip])

    # THEN every table equals the streaming result, positions included
    assert_same_tables(backfill_dir, state_dir)
    assert committed_positions(backfill_dir) == positions

    # AND a range before the archive replays nothing
    empty = sluice(["replay", "--from", "2020-01-01T00:00", "--to", "2020-01-01T05:00",
                    "--state_dir", str(tmp_path / "none")])  # fmt: skip
    assert empty.get("parse.received", 0) == 0
