"""Flink SQL events/s on the local Flink cluster: the reference the Flink jobs are measured against.

Usage: ``python -m benchmarks.flink_sql [--events 1000000] [--small 100000] [--json FILE]`` (or
``make bench-flink``). Starts a local cluster (``sluice flink cluster start``, in a temporary
folder), writes ``--events`` and ``--small`` seeded IoT readings (devkit.samples, parsed into the
canonical shape) as NDJSON files, runs ``benchmarks/flink_sql_job.py`` (JSON file source ->
1-minute tumbling window per device -> blackhole, parallelism 1, checkpointing on) on each, and
stops the cluster.

What it reports: start-up (``flink run`` until every task runs: the Python client, planning,
deployment) separately from the steady rate, which is (events - small) / (run time of the big job
- run time of the small one), each run time from RUNNING to FINISHED as the JobManager records it,
so the fixed costs of a job cancel out (after a warm-up run of the small file: a TaskManager's
first job also loads and compiles the planner's generated code).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devkit import samples
from flink_jobs.cluster import rest_get, running_cluster, submit_python
from flink_jobs.settings import ClusterSettings
from sluice.parsing.iot_columns import parse_iot_columns

JOB = Path(__file__).with_name("flink_sql_job.py")


def write_readings(path: Path, count: int) -> int:
    """``count`` valid seeded readings in the canonical shape, one JSON object per line."""
    written = 0
    with path.open("wb") as out:
        messages = samples.iot_messages(count, bad_ratio=0.0, seed=11)
        batch: list[bytes] = []
        for message in messages:
            batch.append(message)
            if len(batch) == 50_000:
                written += _write(out, batch)
                batch = []
        written += _write(out, batch)
    return written


def _write(out: Any, batch: list[bytes]) -> int:
    columns = parse_iot_columns(batch).columns  # JSON lines equal to model_dump_json's
    out.write(columns.json_lines())
    return len(columns)


def run_job(rest_cluster: Any, path: Path) -> dict[str, float]:
    submitted = time.monotonic()
    job_id = submit_python(rest_cluster, JOB, str(path))
    while True:
        job = rest_get(rest_cluster.rest, f"/jobs/{job_id}") or {}
        vertices = {v.get("status") for v in job.get("vertices", [])}
        if job.get("state") == "FINISHED" or (
            job.get("state") == "RUNNING" and vertices and vertices <= {"RUNNING", "FINISHED"}
        ):
            break
        if job.get("state") in ("FAILED", "CANCELED"):
            raise SystemExit(f"the benchmark job {job_id} {job['state']}: see the cluster's logs")
        time.sleep(0.1)
    running = time.monotonic() - submitted
    while job.get("state") != "FINISHED":
        if job.get("state") in ("FAILED", "CANCELED"):
            raise SystemExit(f"the benchmark job {job_id} {job['state']}: see the cluster's logs")
        time.sleep(0.2)
        job = rest_get(rest_cluster.rest, f"/jobs/{job_id}") or {}
    stamps = job["timestamps"]
    return {
        "startup_seconds": running,
        "run_seconds": (stamps["FINISHED"] - stamps["RUNNING"]) / 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument(
        "--input", type=Path, help="the big file already written (--events readings of it)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sluice-bench-flink-") as scratch:
        root = Path(scratch)
        big, small = root / "big.ndjson", root / "small.ndjson"
        if args.input is not None:
            big, n_big = args.input.resolve(), args.events
        else:
            n_big = write_readings(big, args.events)
        n_small = write_readings(small, args.small)
        input_mb = round(big.stat().st_size / 1e6, 1)
        folder = root / "flink"
        start = [sys.executable, "-m", "sluice", "flink", "cluster"]
        started = time.monotonic()
        begun = subprocess.run(
            [*start, "start", "--flink_dir", str(folder)], capture_output=True, text=True,
            check=False,
        )  # fmt: skip
        if begun.returncode != 0:  # its one-line reason, last, for make bench's table
            # a half-started cluster (a TaskManager that never got ready) is stopped too
            subprocess.run([*start, "stop", "--flink_dir", str(folder)], capture_output=True,
                           check=False)  # fmt: skip
            reason = (begun.stderr.strip().splitlines() or ["no message"])[-1]
            raise SystemExit(f"the Flink cluster did not start: {reason}")
        cluster_start = time.monotonic() - started
        try:
            cluster = running_cluster(ClusterSettings(flink_dir=folder))
            run_job(cluster, small)  # warm-up: the TaskManager's first job loads and compiles more
            small_run = run_job(cluster, small)
            big_run = run_job(cluster, big)
        finally:
            subprocess.run([*start, "stop", "--flink_dir", str(folder)], check=False)
    steady = (n_big - n_small) / (big_run["run_seconds"] - small_run["run_seconds"])
    results = {
        "events": n_big,
        "input_mb": input_mb,
        "cluster_start_seconds": round(cluster_start, 1),
        "job_startup_seconds": round(big_run["startup_seconds"], 1),
        "run_seconds": round(big_run["run_seconds"], 2),
        "small_run_seconds": round(small_run["run_seconds"], 2),
        "steady_events_per_second": round(steady),
        "whole_job_events_per_second": round(n_big / big_run["run_seconds"]),
    }
    print(
        f"Flink SQL (JSON file -> 1-minute tumbling window -> blackhole, p=1), {n_big:,} readings "
        f"({input_mb} MB): "
        f"{steady:,.0f} events/s steady; cluster start {cluster_start:.1f} s, job start-up "
        f"{big_run['startup_seconds']:.1f} s (flink run until every task runs), run "
        f"{big_run['run_seconds']:.1f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
