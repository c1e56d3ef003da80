"""The production raw archive (Kinesis Data Firehose + its transformation Lambda) is replayable.

The stream job reads a moto Kinesis stream (plain and KPL-aggregated records) and archives what it
read, as locally. The same stream is then read the way Firehose reads it (GetRecords, KPL aggregates
split, ``kinesisRecordMetadata`` per record), handed in Firehose-sized invocations to the real
handler ``edge_lambdas.archive_transform.handler``, and its ``Ok`` records are written the way
Firehose writes them (concatenated, GZIP, ``.jsonl.gz``, under the dynamic-partitioning prefix
``raw/dt=<dt>/hour=<hour>/`` of the keys the handler returned). That archive holds the same records
as the job's, and ``sluice replay`` from it rebuilds the stream job's tables, positions included.
"""

from __future__ import annotations

import base64
import gzip
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from job_testkit import committed_positions, prefill_mixed_stream, window_of
from kinesis_testkit import create_stream
from test_replay import assert_same_tables

from edge_lambdas.archive_transform.handler import lambda_handler
from edge_lambdas.shared.events import LocalContext
from sluice.stream.kpl import deaggregate, is_aggregated
from sluice.tables.archive import read_archive_file

Cli = Callable[[list[str]], dict[str, int]]


def firehose_records(kinesis: Any, stream: str) -> Iterator[dict[str, Any]]:
    """The stream as Firehose hands it to a transformation Lambda."""
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            for record in response["Records"]:
                arrival_ms = int(record["ApproximateArrivalTimestamp"].timestamp() * 1000)
                users = deaggregate(record["Data"], record["PartitionKey"])
                aggregated = is_aggregated(record["Data"])
                for index, user in enumerate(users):
                    yield {
                        "recordId": uuid.uuid4().hex,
                        "approximateArrivalTimestamp": arrival_ms,
                        "data": base64.b64encode(user.data).decode(),
                        "kinesisRecordMetadata": {
                            "shardId": shard["ShardId"],
                            "partitionKey": user.partition_key,
                            "approximateArrivalTimestamp": arrival_ms,
                            "sequenceNumber": record["SequenceNumber"],
                            # an integer for a KPL sub-record, "" for a plain record
                            "subsequenceNumber": index if aggregated else "",
                        },
                    }
            if not response["Records"]:
                break
            iterator = response.get("NextShardIterator")


def deliver(records: list[dict[str, Any]], root: Path, per_invocation: int) -> int:
    """Invoke the handler per Firehose batch; write its Ok records as Firehose would. Returns how
    many records it failed."""
    failed = 0
    for start in range(0, len(records), per_invocation):
        event = {
            "invocationId": uuid.uuid4().hex,
            "deliveryStreamArn": "arn:aws:firehose:us-east-1:123456789012:deliverystream/sluice-dev-raw-archive",
            "sourceKinesisStreamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/sluice",
            "region": "us-east-1",
            "records": records[start : start + per_invocation],
        }
        answer = lambda_handler(event, LocalContext(function_name="archive_transform"))
        assert [r["recordId"] for r in answer["records"]] == [
            r["recordId"] for r in event["records"]
        ]
        objects: dict[tuple[str, str], bytes] = {}
        for record in answer["records"]:
            if record["result"] != "Ok":
                failed += 1
                continue
            keys = record["metadata"]["partitionKeys"]
            objects[(keys["dt"], keys["hour"])] = objects.get((keys["dt"], keys["hour"]), b"") + (
                base64.b64decode(record["data"])
            )
        for (dt, hour), content in objects.items():
            folder = root / "raw" / f"dt={dt}" / f"hour={hour}"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"sluice-dev-raw-archive-1-{datetime.now(UTC):%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}.jsonl.gz"
            (folder / name).write_bytes(gzip.compress(content))
    return failed


def test_the_firehose_archive_replays_to_the_stream_jobs_tables(
    aws_env: str, tmp_path: Path, sluice: Cli
) -> None:
    # GIVEN the stream job has read a 2-shard stream, half of it KPL-aggregated, archiving it
    kinesis = boto3.client("kinesis", endpoint_url=aws_env)
    stream = create_stream(kinesis, shard_count=2)
    start = window_of(datetime.now(UTC)) - timedelta(minutes=3)
    sent = prefill_mixed_stream(
        kinesis,
        stream,
        start,
        11,
        3,
        readings=90,
        requests=60,
        feed_items=3,
        too_late=2,
        invalid=1,
        edge_dead_letters=1,
    )
    state_dir = tmp_path / "stream"
    sluice([
        "job", "run", "--stream_name", stream, "--stop_when_idle_seconds", "2",
        "--commit_interval_seconds", "1", "--state_dir", str(state_dir),
    ])  # fmt: skip

    # WHEN Firehose archives the same stream through the transformation Lambda, 64 records a call
    firehose_root = tmp_path / "firehose"
    failed = deliver(list(firehose_records(kinesis, stream)), firehose_root, 64)

    # THEN it holds exactly the records the job archived: same positions, arrivals and bytes
    assert failed == 0

    def archived(root: Path) -> dict[tuple[str, int, int], tuple[float, bytes]]:
        return {
            (shard, r.sequence, r.sub_sequence): (r.arrival, r.data)
            for f in sorted((root / "raw").rglob("*.jsonl.gz"))
            for shard, r in read_archive_file(f.read_bytes())
        }

    theirs, ours = archived(firehose_root), archived(state_dir / "warehouse")
    assert len(theirs) == len(sent) and theirs == ours

    # AND a backfill from it rebuilds the stream job's tables, positions included
    span = ["--from", (start - timedelta(hours=1)).isoformat(), "--to", (start + timedelta(hours=2)).isoformat()]  # fmt: skip
    backfill = tmp_path / "backfill"
    replayed = sluice(
        ["replay", *span, "--archive_root", str(firehose_root), "--state_dir", str(backfill)]
    )
    assert replayed["parse.received"] == len(sent)
    assert_same_tables(backfill, state_dir)
    assert committed_positions(backfill) == committed_positions(state_dir)
