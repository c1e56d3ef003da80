"""Measure ReadFromKinesis throughput from a local moto server: plain vs KPL-aggregated records.

Run: ``.venv/bin/python tests/pipeline/kinesis_throughput.py [--records 100000]`` (not collected by
pytest). It starts its own moto server, stores the records straight into moto's backend (moto's
PutRecords slows down as shards grow, see ``kinesis_testkit.load_records``), then reads them over
HTTP with the pipeline into a sink that only counts, and with a bare boto3 loop for comparison.

Out: one line per case: user records, Kinesis records, seconds and user records per second, where
"pipeline" time runs from pipeline construction to the last batch reaching the sink (start-up
included, the idle wait before stopping excluded).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent.parent)]


def _small_record(i: int) -> bytes:
    return b'{"device":"d-%05d","t":%d,"temp":%.2f}' % (i % 5000, 1_700_000_000 + i, 20 + i % 7)


def _direct_read(client: Any, stream: str) -> tuple[int, float]:
    """User records and seconds for a bare GetRecords loop over every shard (no Beam)."""
    from sluice.stream.kpl import deaggregate

    started = time.monotonic()
    count = 0
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while True:
            response = client.get_records(ShardIterator=iterator, Limit=10_000)
            for record in response["Records"]:
                count += len(deaggregate(record["Data"], record["PartitionKey"]))
            if not response["Records"]:
                break
            iterator = response["NextShardIterator"]
    return count, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--per-aggregate", type=int, default=100)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    import boto3
    from kinesis_testkit import create_stream, load_records, run_read

    from sluice.stream.kinesis.positions import StartPosition
    from sluice.stream.kpl import UserRecord, aggregate

    client = boto3.client("kinesis")
    users = [UserRecord(f"device-{i % 5000}", _small_record(i)) for i in range(args.records)]
    plain = [(u.partition_key, u.data) for u in users]
    aggregated = [
        (a.partition_key, a.data)
        for start in range(0, len(users), args.per_aggregate)
        for a in aggregate(users[start : start + args.per_aggregate])
    ]
    try:
        for label, entries in (("plain", plain), ("kpl", aggregated)):
            stream = create_stream(client, shard_count=2)
            load_records(stream, entries)
            count, seconds = _direct_read(client, stream)
            print(
                f"{label:5} boto3 loop: {count} user records ({len(entries)} Kinesis records) "
                f"in {seconds:.2f} s = {count / seconds:,.0f} records/s"
            )
            run = run_read(
                stream_name=stream,
                start=StartPosition(),
                stop_when_idle_seconds=1.0,
                keep_batches=False,
                timeout_seconds=600,
            )
            assert run.records_received == args.records, run.records_received
            assert run.seconds_to_last_batch is not None
            print(
                f"{label:5} pipeline:   {run.records_received} user records "
                f"({run.counters['read.kinesis_records']} Kinesis records, "
                f"{run.counters['read.batches']} batches) in {run.seconds_to_last_batch:.2f} s = "
                f"{run.records_received / run.seconds_to_last_batch:,.0f} records/s "
                f"(first batch after {run.seconds_to_first_batch:.2f} s; whole run incl. idle "
                f"stop {run.seconds:.2f} s)"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
