"""``WriteToIceberg`` commits early before it would buffer more than ``max_buffered_records``, so
draining a backlog holds at most that many records in memory, and lands the same rows and positions.

Runtime: about 10 s (two small pipelines on the FnApiRunner, a few Iceberg commits each).
"""

# Beam's Python API is only partly typed.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from job_testkit import WINDOW_SECONDS, committed_positions, read_tables, reading, source_batch
from kinesis_testkit import TEST_RUNNER

from beam_jobs.pipeline import ParseAndValidate, WindowAndAggregate, WriteToIceberg
from sluice.stream.kinesis.records import SourceBatch
from sluice.tables.warehouse import WarehouseSettings, open_catalog

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SHARD = "shardId-000000000000"
PER_BATCH = 120


def backlog() -> list[SourceBatch]:
    """Four chained batches of one shard, ``PER_BATCH`` readings each."""
    batches: list[SourceBatch] = []
    previous: int | None = None
    for b in range(4):
        first = 1000 + b * PER_BATCH
        sent = [reading(f"d{i % 3}", T0 + timedelta(seconds=i % 50), first + i, temperature=float(i))
                for i in range(PER_BATCH)]  # fmt: skip
        batches.append(source_batch(SHARD, sent, first_sequence=first,
                                    arrival=T0 + timedelta(seconds=55), previous=previous))  # fmt: skip
        previous = first + PER_BATCH - 1
    return batches


def drain(state_dir: Path, bound: int) -> int:
    """Run the backlog through the job's stages into the tables; the event table's snapshots."""
    warehouse = WarehouseSettings(state_dir=state_dir)
    pipeline = BeamTestPipeline(runner=TEST_RUNNER, options=PipelineOptions(flags=[]))
    _ = (
        pipeline
        | beam.Create(backlog())
        | ParseAndValidate()
        | WindowAndAggregate(WINDOW_SECONDS, 600)
        | WriteToIceberg(warehouse, WINDOW_SECONDS, max_buffered_records=bound)
    )
    pipeline.run().wait_until_finish()
    table = open_catalog(warehouse).load_table("sluice.iot_readings")
    return len(table.metadata.snapshots)


def test_a_backlog_is_committed_in_bounded_pieces_with_the_same_result(tmp_path: Path) -> None:
    # GIVEN a backlog of 4 x 120 readings in one bundle
    # WHEN drained with a bound of 200 buffered records, and with one far above the backlog
    bounded = drain(tmp_path / "bounded", 200)
    unbounded = drain(tmp_path / "unbounded", 1_000_000)
    # THEN the bounded writer committed before each batch that would take it past 200 (so every
    # batch alone: it never held 240), the other once
    assert (bounded, unbounded) == (4, 1)
    # AND both hold the same rows, windows and positions
    a, b = read_tables(tmp_path / "bounded"), read_tables(tmp_path / "unbounded")
    key = lambda rows: sorted(map(repr, rows))  # noqa: E731
    assert len(a["iot_readings"]) == 4 * PER_BATCH
    assert key(a["iot_readings"]) == key(b["iot_readings"])
    assert {(r["device_id"], r["metric"], r["count"]) for r in a["iot_metrics_1m"]} == {
        (r["device_id"], r["metric"], r["count"]) for r in b["iot_metrics_1m"]
    }
    assert committed_positions(tmp_path / "bounded") == committed_positions(tmp_path / "unbounded")
