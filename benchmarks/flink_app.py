"""Events/s of the PyFlink (MSF) application on the local Flink cluster, beside the Flink SQL reference.

Usage: ``python -m benchmarks.flink_app [--events 60000] [--small 10000] [--json FILE]``.
The same seeded IoT readings (``devkit.samples``, seed 11, as ``benchmarks.flink_sql``) go (a) as
NDJSON to the Flink SQL reference job (``benchmarks/flink_sql_job.py``: JSON -> 1-minute tumbling
window -> blackhole) and (b) as envelopes in a raw archive (``sluice.tables.archive`` files, one shard
per device group) to the PyFlink application (archive -> StageRunner per shard batch -> windows in
keyed state -> six Iceberg tables over the local JDBC catalog, checkpoints every 10 s), at
parallelism 1 and 2, and once per record (``batch.max.records=1``) at parallelism 1. One cluster, its
TaskManager with two slots and the connector jars on its classpath.

Steady rate = (events - small) / (run time of the big job - run time of the small one), run times
from RUNNING to FINISHED as the JobManager records them, so a job's fixed costs (Python workers,
catalog, the last checkpoint and commit) cancel out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

from benchmarks.flink_sql import JOB as SQL_JOB
from benchmarks.flink_sql import write_readings
from devkit import samples
from flink_jobs.app.local import classpath
from flink_jobs.cluster import rest_get, running_cluster, submit_python
from flink_jobs.settings import REPO_ROOT, ClusterSettings
from sluice.parsing.iot import parse_iot_batch
from sluice.stream.envelopes import encode, wrap_reading
from sluice.stream.stages import InputRecord
from sluice.tables.archive import encode_batch
from sluice.tables.warehouse import WarehouseSettings, ensure_tables, open_catalog

MAIN = REPO_ROOT / "flink_jobs" / "app" / "main.py"
SHARDS = 4


def write_archive(root: Path, count: int) -> int:
    """The seeded readings as envelopes in archive files, spread over ``SHARDS`` shards."""
    readings = parse_iot_batch(samples.iot_messages(count, bad_ratio=0.0, seed=11)).valid
    arrival = max(r.event_time for r in readings) + timedelta(seconds=1)
    ingest = arrival.astimezone(UTC)
    per_shard: dict[int, list[InputRecord]] = {}
    for n, reading in enumerate(readings):
        shard = n % SHARDS
        records = per_shard.setdefault(shard, [])
        data = encode(wrap_reading(reading, ingest))
        records.append(InputRecord(10 * n + shard, 0, round(arrival.timestamp(), 3), data))
    for shard, records in per_shard.items():
        for start in range(0, len(records), 5_000):
            chunk = records[start : start + 5_000]
            for relative, content in encode_batch(f"shardId-{shard:012d}", chunk):
                path = root / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
    return len(readings)


def wait(cluster: Any, job_id: str) -> dict[str, float]:
    while True:
        job = rest_get(cluster.rest, f"/jobs/{job_id}") or {}
        if job.get("state") == "FINISHED":
            stamps = job["timestamps"]
            restarts = rest_get(cluster.rest, f"/jobs/{job_id}/metrics?get=numRestarts") or []
            return {
                "run_seconds": (stamps["FINISHED"] - stamps["RUNNING"]) / 1000,
                "restarts": int(restarts[0]["value"]) if restarts else 0,
            }
        if job.get("state") in ("FAILED", "CANCELED"):
            raise SystemExit(f"the benchmark job {job_id} {job['state']}: see the cluster's logs")
        time.sleep(0.5)


def run_app(cluster: Any, archive: Path, scratch: Path, name: str, **job: str) -> dict[str, float]:
    state = scratch / name
    settings = WarehouseSettings(state_dir=state)
    ensure_tables(open_catalog(settings), settings)
    properties = scratch / f"{name}.json"
    properties.write_text(json.dumps([
        {"PropertyGroupId": "sluice.input",
         "PropertyMap": {"source": "archive", "archive.path": str(archive)}},
        {"PropertyGroupId": "sluice.iceberg",
         "PropertyMap": {"catalog.type": "jdbc", "warehouse": (state / "warehouse").as_uri(),
                         "jdbc.uri": f"jdbc:sqlite:{state / 'catalog.db'}"}},
        {"PropertyGroupId": "sluice.job",
         "PropertyMap": {"checkpoint.interval.seconds": "10", **job}},
    ]))  # fmt: skip
    os.environ.update(IS_LOCAL="true", SLUICE_APP_PROPERTIES=str(properties))
    return wait(cluster, submit_python(cluster, MAIN))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    os.environ["HADOOP_CLASSPATH"] = classpath()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-flink-app-") as scratch_name:
        scratch = Path(scratch_name)
        sizes = {"big": args.events, "small": args.small}
        counts = {}
        for size, count in sizes.items():
            counts[size] = write_archive(scratch / f"archive-{size}", count)
            write_readings(scratch / f"{size}.ndjson", count)
        folder = scratch / "flink"
        cli = [sys.executable, "-m", "sluice", "flink", "cluster"]
        subprocess.run(
            [*cli, "start", "--flink_dir", str(folder)], check=True, stdout=subprocess.PIPE
        )
        try:
            cluster = running_cluster(ClusterSettings(flink_dir=folder))
            runs: dict[str, dict[str, dict[str, float]]] = {}
            for size in ("small", "small", "big"):  # the first small run warms the TaskManager up
                runs.setdefault("flink_sql", {})[size] = wait(
                    cluster, submit_python(cluster, SQL_JOB, str(scratch / f"{size}.ndjson"))
                )
            variants = {
                "pyflink_p1": {"parallelism": "1"},
                "pyflink_p2": {"parallelism": "2"},
                "pyflink_p1_per_record": {"parallelism": "1", "batch.max.records": "1"},
            }
            for name, job in variants.items():
                for size in ("small", "big"):
                    runs.setdefault(name, {})[size] = run_app(
                        cluster, scratch / f"archive-{size}", scratch, f"{name}-{size}", **job
                    )
        finally:
            subprocess.run([*cli, "stop", "--flink_dir", str(folder)], check=False)
    for name, run in runs.items():
        big, small = run["big"], run["small"]
        steady = (counts["big"] - counts["small"]) / max(
            1e-9, big["run_seconds"] - small["run_seconds"]
        )
        results[name] = {
            "events": counts["big"],
            "run_seconds": round(big["run_seconds"], 1),
            "small_run_seconds": round(small["run_seconds"], 1),
            "steady_events_per_second": round(steady),
            "whole_job_events_per_second": round(counts["big"] / big["run_seconds"]),
            "restarts": int(big.get("restarts", 0)),
        }
        print(f"{name:24s} {results[name]}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
