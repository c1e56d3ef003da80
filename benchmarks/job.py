"""End-to-end throughput of the stream job: a pre-filled local stream, drained into Iceberg.

Usage: ``python -m benchmarks.job [--events N]``. Starts a moto server (subprocess), puts N IoT
envelopes KPL-aggregated (as the edges do) into a 2-shard stream, runs ``sluice job run`` in this
process until the stream is idle, and reports events/s over the job's run time minus the idle wait.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devkit import samples
from infra.local.stack import LocalAws, client, create_resources
from sluice.parsing.iot import parse_iot_batch
from sluice.stream.envelopes import encode, wrap_reading
from sluice.stream.kpl import UserRecord, aggregate


def fill(env: dict[str, str], stream: str, events: int) -> None:
    now = datetime.now(UTC)
    readings = parse_iot_batch(
        samples.iot_messages(
            events, bad_ratio=0.0, start=now - timedelta(seconds=120), interval=120 / events
        )
    ).valid
    users = [UserRecord(r.device_id, encode(wrap_reading(r, now))) for r in readings]
    kinesis = client("kinesis", env)
    records = [{"PartitionKey": a.partition_key, "Data": a.data} for a in aggregate(users)]
    for i in range(0, len(records), 4):  # aggregates are ~1 MiB; PutRecords takes 5 MiB
        kinesis.put_records(StreamName=stream, Records=records[i : i + 4])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args(argv)
    idle = 2.0
    with tempfile.TemporaryDirectory() as tmp, LocalAws(Path(tmp) / "aws") as aws:
        aws.apply_env()
        resources = create_resources(aws.env)
        fill(aws.env, resources.stream, args.events)
        from beam_jobs.run import main as run_job

        started = time.perf_counter()
        run_job([
            "--stream_name", resources.stream, "--stop_when_idle_seconds", str(idle),
            "--commit_interval_seconds", "10", "--state_dir", str(Path(tmp) / "state"),
        ])  # fmt: skip
        seconds = time.perf_counter() - started - idle
    print(
        f"job end to end: {args.events} IoT events in {seconds:.1f} s = {args.events / seconds:,.0f} events/s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
