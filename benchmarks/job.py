"""End-to-end throughput and memory of the stream job: a pre-filled local stream, drained into Iceberg.

Usage: ``python -m benchmarks.job [--events N] [--commit-interval S] [--json OUT] [--profile OUT]
[-- JOB FLAGS...]``. Starts a moto server (subprocess), puts N IoT envelopes KPL-aggregated (as the
edges do) into a 2-shard stream, then runs ``sluice job run`` as a child process until the stream is
idle (a backlog drain), and reports:

- events/s over the job's wall time minus the idle wait (start-up included: Beam's pipeline
  construction and the catalog claim, about 2-3 s here);
- the job process's peak RSS (``ru_maxrss`` of that child alone, from ``wait4``), so the fill and
  the moto server do not count;
- with ``--profile OUT``, a py-spy flame graph of the job (py-spy must be installed; it is a
  measuring tool, not a dependency of the project).

Flags after ``--`` go to the job (``-- --max_buffered_records 50000``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
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

FILL_CHUNK = 100_000
"""Readings made and put per round while filling, so the fill itself stays small in memory."""


def fill(env: dict[str, str], stream: str, events: int) -> None:
    now = datetime.now(UTC)
    kinesis = client("kinesis", env)
    for offset in range(0, events, FILL_CHUNK):
        count = min(FILL_CHUNK, events - offset)
        readings = parse_iot_batch(
            samples.iot_messages(
                count, bad_ratio=0.0, seed=7 + offset, start=now - timedelta(seconds=120),
                interval=120 / events,
            )
        ).valid  # fmt: skip
        users = [UserRecord(r.device_id, encode(wrap_reading(r, now))) for r in readings]
        records = [{"PartitionKey": a.partition_key, "Data": a.data} for a in aggregate(users)]
        for i in range(0, len(records), 4):  # aggregates are ~1 MiB; PutRecords takes 5 MiB
            kinesis.put_records(StreamName=stream, Records=records[i : i + 4])


def run_job(env: dict[str, str], flags: list[str], profile: str | None) -> tuple[float, int, int]:
    """Run the job as a child; (wall seconds, peak RSS in bytes, exit code)."""
    command = [sys.executable, "-m", "beam_jobs.run", *flags]
    if profile:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        command = [spy, "record", "--rate", "50", "--nonblocking", "-o", profile, "--", *command]
    started = time.perf_counter()
    child = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux; under py-spy it is the largest of py-spy's children (the job).
    return seconds, usage.ru_maxrss * 1024, child.returncode


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    job_extra: list[str] = []
    if "--" in args_in:
        cut = args_in.index("--")
        args_in, job_extra = args_in[:cut], args_in[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--commit-interval", type=float, default=10.0)
    parser.add_argument(
        "--max-records-per-call", type=int, default=10,
        help="GetRecords limit: 10 aggregates of ~1 MiB is AWS's 10 MB per call (moto has no byte "
        "limit, and one call returning a whole backlog times out)",
    )  # fmt: skip
    parser.add_argument("--json", help="also write the figures as JSON to this file")
    parser.add_argument("--profile", help="py-spy flame graph (SVG) of the job to this file")
    args = parser.parse_args(args_in)
    idle = 2.0
    with tempfile.TemporaryDirectory() as tmp, LocalAws(Path(tmp) / "aws") as aws:
        aws.apply_env()
        resources = create_resources(aws.env)
        fill_started = time.perf_counter()
        fill(aws.env, resources.stream, args.events)
        fill_seconds = time.perf_counter() - fill_started
        flags = [
            "--stream_name", resources.stream, "--stop_when_idle_seconds", str(idle),
            "--commit_interval_seconds", str(args.commit_interval),
            "--max_records_per_call", str(args.max_records_per_call),
            "--state_dir", str(Path(tmp) / "state"), *job_extra,
        ]  # fmt: skip
        wall, peak, code = run_job(aws.env, flags, args.profile)
    seconds = wall - idle
    figures = {
        "events": args.events,
        "job_seconds": round(seconds, 2),
        "events_per_second": round(args.events / seconds),
        "peak_rss_mb": round(peak / 2**20),
        "fill_seconds": round(fill_seconds, 1),
        "commit_interval_seconds": args.commit_interval,
        "job_flags": job_extra,
        "exit_code": code,
    }
    print(
        f"job end to end: {args.events} IoT events in {seconds:.1f} s = "
        f"{args.events / seconds:,.0f} events/s, peak RSS {peak / 2**20:,.0f} MB (exit {code})",
        flush=True,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
