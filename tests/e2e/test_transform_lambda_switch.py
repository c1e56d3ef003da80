"""Who writes the tables on the Lambda path, and switching between it and the Flink/Beam job.

``BatchCommitter`` (the transform Lambda's core) over real Iceberg tables (SQLite catalog, local
warehouse); records are built as a mapping delivers them, without a stream, so each step is exact:

- a deployment claims the tables at its first invocation and its later invocations (any shard)
  write under the same owner;
- the job started on the same tables (``claim_tables``, what ``sluice job run`` does) fences the
  deployment for good: its batches are reported failed and nothing is written;
- a new deployment takes the tables back and fences the job's writer; the job resumes where the
  Lambda's positions say, so a switch is a restart: nothing lost, nothing written twice.

Runtime: about 5 s.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from job_testkit import read_tables, reading, window_of

from sluice.core.config import CoreSettings
from sluice.stream.lambda_events import ShardRecords
from sluice.stream.run import StageRunner
from sluice.stream.stages import InputRecord
from sluice.tables.batch_commit import BatchCommitter
from sluice.tables.catalog import WarehouseSettings, ensure_tables, open_catalog, resume_positions
from sluice.tables.ownership import WriterFenced, claim_tables, table_owner
from sluice.tables.warehouse import ExactlyOnceWriter, table_positions

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/sluice-events"


def _batch(shard: str, first: int, count: int, at: datetime) -> ShardRecords:
    """``count`` readings as Kinesis records ``first``, ``first + 10``, ... of ``shard``."""
    sequences = [first + 10 * n for n in range(count)]
    records = tuple(
        InputRecord(q, 0, at.timestamp() + 1, reading(f"d-{shard[-1]}", at, q, t=float(n)).data)
        for n, q in enumerate(sequences)
    )
    return ShardRecords(shard, ARN, tuple(str(q) for q in sequences), records)


@pytest.fixture
def warehouse(tmp_path: Path) -> WarehouseSettings:
    return WarehouseSettings(state_dir=tmp_path / "state")


def _committer(warehouse: WarehouseSettings, job: str) -> BatchCommitter:
    return BatchCommitter(CoreSettings(), warehouse, job, positions_commit_seconds=0)


def test_a_deployment_claims_once_and_a_switch_is_a_restart(warehouse: WarehouseSettings) -> None:
    at = window_of(datetime.now(UTC)) - timedelta(minutes=2)
    # GIVEN deployment A of the Lambda path; its first invocation (shard 0) claims the tables
    first = _committer(warehouse, "lambda:A")
    assert first.process([_batch("shardId-0", 100, 5, at)]).retry_from == []
    tables = ensure_tables(open_catalog(warehouse), warehouse)
    claimed = {name: table_owner(t) for name, t in tables.items()}
    assert {(o.epoch, o.job) for o in claimed.values() if o} == {(1, "lambda:A")}
    # WHEN another execution environment of A (a cold start) processes shard 1, then shard 0 again
    # with a redelivered batch that overlaps the committed one
    second = _committer(warehouse, "lambda:A")
    assert second.process([_batch("shardId-1", 105, 4, at)]).retry_from == []
    again = second.process([_batch("shardId-0", 100, 8, at)])
    # THEN both wrote under the same owner, and the overlap landed once
    assert again.retry_from == [] and again.shards[0].skipped == 5
    tables = ensure_tables(open_catalog(warehouse), warehouse)
    assert {table_owner(t).epoch for t in tables.values()} == {1}  # type: ignore[union-attr]
    ids = Counter(r["event_id"] for r in read_tables(warehouse.state_dir)["iot_readings"])
    assert len(ids) == 12 and set(ids.values()) == {1}

    # WHEN the operator switches to the job: it claims the tables as `sluice job run` does
    job = claim_tables(tables, None)
    # THEN deployment A is fenced for good: batches are reported failed, nothing is written
    fenced = second.process([_batch("shardId-0", 200, 3, at)])
    assert fenced.fenced and fenced.retry_from == ["200"]
    cold = _committer(warehouse, "lambda:A").process([_batch("shardId-1", 300, 3, at)])
    assert cold.fenced and cold.retry_from == ["300"]
    # AND the job resumes exactly after what the Lambda committed
    positions = [
        table_positions(t) for t in ensure_tables(open_catalog(warehouse), warehouse).values()
    ]
    assert resume_positions(positions) == {"shardId-0": 170, "shardId-1": 135}
    # AND the job writes on from there
    tables = ensure_tables(open_catalog(warehouse), warehouse)
    writer = ExactlyOnceWriter(tables, 60, owner=job.owner, positions_commit_seconds=0)
    with StageRunner(CoreSettings()) as runner:
        batch = _batch("shardId-0", 200, 3, at)
        writer.add(runner.run("shardId-0", list(batch.records), previous_sequence=170))
        writer.flush()

    # WHEN deployment B of the Lambda path is deployed (switching back)
    back = _committer(warehouse, "lambda:B")
    redelivered = back.process([_batch("shardId-0", 200, 5, at)])
    # THEN it claims the tables (a newer epoch), skips what the job committed, writes the rest
    assert redelivered.retry_from == [] and redelivered.shards[0].skipped == 3
    tables = ensure_tables(open_catalog(warehouse), warehouse)
    assert {table_owner(t).job for t in tables.values()} == {"lambda:B"}  # type: ignore[union-attr]
    # AND the job's writer, still running, is fenced at its next commit
    with StageRunner(CoreSettings()) as runner:
        batch = _batch("shardId-1", 400, 2, at)
        writer.add(runner.run("shardId-1", list(batch.records), previous_sequence=135))
        with pytest.raises(WriterFenced):
            writer.flush()
    ids = Counter(r["event_id"] for r in read_tables(warehouse.state_dir)["iot_readings"])
    assert len(ids) == 17 and set(ids.values()) == {1}
