"""Measure the transform Lambda's work per invocation, the figures ``sluice cost`` prices it with.

Usage: ``python -m benchmarks.transform_lambda [--invocations K] [--out FILE]`` (writes
``reports/transform_lambda.json``).

What runs: ``BatchCommitter.process`` (the handler's whole work: claim check, every stage, the
exactly-once commit to real Iceberg tables, SQLite catalog and local warehouse) on one shard's
batches as a mapping delivers them: one commit interval of all three sources through the real edges
(``benchmarks.measure._interval_records``, KPL-aggregated as the edges publish), and batches of a
few records. CPU is process time (the machine is shared); the split into a fixed part per
invocation and a part per event comes from the two batch sizes (a straight line through both).
S3 and Glue latency are not in it: the local catalog is a file, so the I/O wait of a real commit
is priced separately (``CostSettings.transform_commit_wait_ms``, assumed).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from benchmarks.measure import _interval_records
from devkit.geoip_build import build_demo_databases
from sluice.core.config import CoreSettings
from sluice.stream.lambda_events import ShardRecords
from sluice.stream.stages import InputRecord
from sluice.tables.batch_commit import BatchCommitter
from sluice.tables.catalog import WarehouseSettings

PER_INTERVAL = {"iot": 2_000, "weblog": 500, "feed": 10}


def _shard(records: list[InputRecord]) -> ShardRecords:
    sequences = tuple(dict.fromkeys(str(r.sequence) for r in records))
    return ShardRecords("shardId-000000000000", "arn", sequences, tuple(records))


def _run(committer: BatchCommitter, batches: list[list[InputRecord]]) -> tuple[float, float, int]:
    cpu = wall = 0.0
    events = 0
    for records in batches:
        c0, w0 = time.process_time(), time.perf_counter()
        report = committer.process([_shard(records)])
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        assert report.retry_from == [], report
        events += len(records)
    return cpu / len(batches), wall / len(batches), events // len(batches)


def measure(invocations: int, tmp: Path) -> dict[str, object]:
    city, asn = build_demo_databases(tmp)
    core = CoreSettings(geoip_city_db=city, geoip_asn_db=asn)
    committer = BatchCommitter(
        core, WarehouseSettings(state_dir=tmp / "state"), "bench", positions_commit_seconds=300
    )
    now = datetime.now(UTC)
    sequence = 1_000
    big: list[list[InputRecord]] = []
    small: list[list[InputRecord]] = []
    for k in range(invocations + 1):
        records = _interval_records(k, 60.0, PER_INTERVAL, now, sequence)
        sequence = records[-1].sequence + 1
        big.append(records)
        few = _interval_records(k, 60.0, {"iot": 5, "weblog": 0, "feed": 0}, now, sequence)
        sequence = few[-1].sequence + 1
        small.append(few)
    # Interleaved as they would arrive; the first invocation (table creation, claim) is left out.
    _run(committer, [big[0]])
    big_cpu, big_wall, big_events = _run(committer, big[1:])
    small_cpu, small_wall, small_events = _run(committer, small[1:])
    committer.close()
    per_event = (big_cpu - small_cpu) / (big_events - small_events)
    fixed = max(0.0, small_cpu - per_event * small_events)
    return {
        "measured_at": now.isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "command": f"python -m benchmarks.transform_lambda --invocations {invocations}",
        "invocations": invocations,
        "events_per_big_invocation": big_events,
        "events_per_small_invocation": small_events,
        "cpu_seconds_big_invocation": big_cpu,
        "wall_seconds_big_invocation": big_wall,
        "cpu_seconds_small_invocation": small_cpu,
        "wall_seconds_small_invocation": small_wall,
        "cpu_seconds_per_event": per_event,
        "events_per_cpu_second": 1 / per_event,
        "fixed_cpu_seconds_per_invocation": fixed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("reports/transform_lambda.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(args.invocations, Path(tmp))
    args.out.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2) + b"\n")
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
