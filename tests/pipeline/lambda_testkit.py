"""Helpers for the transform Lambda's tests: Kinesis events as a mapping builds them, and a mapping.

In: a stream on the local endpoint (moto server), read with boto3 GetRecords, shard by shard.
Out: Lambda Kinesis events in the shape AWS delivers (``Records`` with ``eventID`` =
``<shard>:<sequence>``, ``eventSourceARN``, ``kinesis.data`` base64, ``sequenceNumber``,
``partitionKey``, ``approximateArrivalTimestamp`` in epoch seconds), ``batch_size`` Kinesis records
each as a mapping with that ``BatchSize`` delivers a backlog; and ``deliver``, which plays the
mapping's part for one shard: batches in order, the next one only when the previous succeeded, a
batch item failure delivered again from the reported record, a function error (a timeout) split in
halves (``BisectBatchOnFunctionError``).
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REGION = "us-east-1"
ACCOUNT = "123456789012"


def read_shard(client: Any, stream: str, shard_id: str) -> list[dict[str, Any]]:
    """Every record of ``shard_id`` from the trim horizon, as GetRecords returns them."""
    iterator = client.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records: list[dict[str, Any]] = []
    while True:
        response = client.get_records(ShardIterator=iterator, Limit=10_000)
        records.extend(response["Records"])
        if not response["Records"]:
            return records
        iterator = response["NextShardIterator"]


def lambda_record(stream_arn: str, shard_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """One GetRecords record as a Kinesis event source mapping puts it in an event."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record["PartitionKey"],
            "sequenceNumber": record["SequenceNumber"],
            "data": base64.b64encode(record["Data"]).decode("ascii"),
            "approximateArrivalTimestamp": record["ApproximateArrivalTimestamp"].timestamp(),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{record['SequenceNumber']}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/sluice-transform",
        "awsRegion": REGION,
        "eventSourceARN": stream_arn,
    }


def shard_events(client: Any, stream: str, batch_size: int) -> dict[str, list[dict[str, Any]]]:
    """Per shard, the Lambda records of everything it holds (batches are cut by ``deliver``)."""
    arn = client.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    out: dict[str, list[dict[str, Any]]] = {}
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        shard_id = shard["ShardId"]
        out[shard_id] = [
            lambda_record(arn, shard_id, r) for r in read_shard(client, stream, shard_id)
        ]
    return out


class SimulatedTimeout(BaseException):
    """The function was stopped mid-invocation (a BaseException: nothing in the handler catches it)."""


@dataclass
class Delivery:
    """What the mapping did for one shard."""

    invocations: int = 0
    item_failures: int = 0
    timeouts: int = 0
    batches: list[int] = field(default_factory=list)
    """Size of each batch delivered, in order."""


def deliver(
    handler: Callable[[dict[str, Any], Any], dict[str, Any]],
    context: Any,
    records: Sequence[dict[str, Any]],
    batch_size: int,
    *,
    redeliver_after: Sequence[int] = (),
    max_invocations: int = 1_000,
) -> Delivery:
    """Deliver one shard's ``records`` as a mapping does (see the module docstring).

    ``redeliver_after``: indexes of batches whose response is lost after they ran (a timeout after
    the commit), so the same batch is delivered once more.
    """
    done = 0
    pending: list[tuple[int, int]] = []  # (start, end) ranges left from a bisection
    report = Delivery()
    number = 0
    while done < len(records):
        if report.invocations >= max_invocations:
            raise AssertionError(f"gave up after {max_invocations} invocations")
        start, end = pending.pop(0) if pending else (done, min(done + batch_size, len(records)))
        event = {"Records": list(records[start:end])}
        report.invocations += 1
        report.batches.append(end - start)
        try:
            response = handler(event, context)
        except SimulatedTimeout:
            report.timeouts += 1
            middle = start + (end - start + 1) // 2
            pending = [(start, middle), (middle, end)] if end - start > 1 else [(start, end)]
            continue
        failures = response["batchItemFailures"]
        if failures:
            report.item_failures += 1
            sequences = [r["kinesis"]["sequenceNumber"] for r in records]
            lowest = min(sequences.index(f["itemIdentifier"]) for f in failures)
            done, pending = lowest, []
            continue
        if number in redeliver_after:
            redeliver_after = [n for n in redeliver_after if n != number]
            number += 1
            report.invocations += 1
            report.batches.append(end - start)
            again = handler(event, context)
            assert again == {"batchItemFailures": []}, again
        number += 1
        done = end
        if pending and pending[0][0] != done:
            pending = []
    return report


def main() -> None:
    """``python lambda_testkit.py EVENTS.json BATCH_SIZE OUT.json``: one execution environment
    (a process) that delivers one shard's records to the handler, as in AWS."""
    events_path, batch_size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    from edge_lambdas.shared.events import LocalContext
    from edge_lambdas.stream_transform import handler

    records = json.loads(Path(events_path).read_text())
    report = deliver(handler.lambda_handler, LocalContext("sluice-transform"), records, batch_size)
    Path(out).write_text(json.dumps(report.__dict__))


if __name__ == "__main__":
    main()
