"""End-to-end throughput, memory and latency of the stream job: a pre-filled local stream, drained
into Iceberg, then the same stages over the raw archive the job wrote (``sluice replay``).

Usage: ``python -m benchmarks.job [--events N] [--commit-interval S] [--no-replay] [--json OUT]
[--profile OUT] [-- JOB FLAGS...]``. Starts a moto server (subprocess), puts N IoT envelopes
KPL-aggregated (as the edges do) into a 2-shard stream, then runs ``sluice job run`` as a child
process until the stream is idle (a backlog drain), and reports:

- events/s over the job's wall time minus the idle wait (start-up included: Beam's pipeline
  construction and the catalog claim, about 2-3 s here);
- the job process's peak RSS (``ru_maxrss`` of that child alone, from ``wait4``), so the fill and
  the moto server do not count, and its RSS over time (``/proc``, every 0.5 s; in the JSON);
- event-to-queryable latency p50/p99: for every Kinesis record put, the time from its put to the
  commit of ``iot_readings`` whose positions (snapshot summary ``sluice.positions``) first cover
  it, i.e. the commit that made its events queryable, weighted by the events it holds;
- then (unless ``--no-replay``) ``sluice replay`` over the job's raw archive into a fresh state
  folder (a backfill: the file path, no Kinesis): events/s, peak RSS, and latency from the
  replay's start (the file was there) to the commit that made each record queryable;
- with ``--profile OUT``, a py-spy flame graph of the job (collapsed stacks when ``OUT`` ends in
  ``.txt``; py-spy must be installed; it is a measuring tool, not a dependency of the project).

The fill: events get event times at ``--event-rate`` per second of event time, ending at each
chunk's put (a stream that ran while the job was down), so a larger backlog is a longer stretch of
event time, not denser windows. Flags after ``--`` go to the job (``-- --max_buffered_records
50000``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devkit import samples
from infra.local.stack import LocalAws, client, create_resources
from sluice.parsing.iot import parse_iot_batch
from sluice.stream.envelopes import encode, wrap_reading
from sluice.stream.kpl import UserRecord, aggregate

FILL_CHUNK = 100_000
"""Readings made and put per round while filling, so the fill itself stays small in memory."""
DEFAULT_EVENT_RATE = 10_000.0
"""Events per second of event time in the filled backlog."""
MAKERS = 2
"""Processes making chunks of envelopes while filling (making them costs more than putting)."""
PUT_THREADS = 3
"""Concurrent PutRecords calls while filling."""
IDLE_SECONDS = 2.0
"""The job stops once the stream was idle this long (subtracted from its wall time)."""


@dataclass(frozen=True, slots=True)
class Put:
    """One Kinesis record put by the fill: where it landed, when, and how many events it holds."""

    shard: str
    sequence: int
    at: float
    events: int


def _chunk(offset: int, count: int, event_rate: float) -> list[tuple[str, bytes, int]]:
    """``count`` IoT envelopes as the edges deliver them: (partition key, KPL aggregate, events)."""
    now = datetime.now(UTC)
    readings = parse_iot_batch(
        samples.iot_messages(
            count, bad_ratio=0.0, seed=7 + offset,
            start=now - timedelta(seconds=count / event_rate), interval=1 / event_rate,
        )
    ).valid  # fmt: skip
    users = [UserRecord(r.device_id, encode(wrap_reading(r, now))) for r in readings]
    return [(a.partition_key, a.data, a.user_record_count) for a in aggregate(users)]


def _put(kinesis: Any, stream: str, records: Sequence[tuple[str, bytes, int]]) -> list[Put]:
    answer = kinesis.put_records(
        StreamName=stream, Records=[{"PartitionKey": key, "Data": data} for key, data, _ in records]
    )
    at = time.time()
    out: list[Put] = []
    for (_, _, events), entry in zip(records, answer["Records"], strict=True):
        if "SequenceNumber" not in entry:  # moto does not throttle; say so if it ever did
            raise RuntimeError(f"fill: a put failed: {entry}")
        out.append(Put(entry["ShardId"], int(entry["SequenceNumber"]), at, events))
    return out


def fill(
    env: dict[str, str], stream: str, events: int, event_rate: float = DEFAULT_EVENT_RATE
) -> list[Put]:
    """Put ``events`` IoT envelopes, KPL-aggregated, into ``stream``; every record put.

    ``MAKERS`` processes make the next chunks while this one puts the current one from
    ``PUT_THREADS`` threads (the client's encoding overlaps moto's decoding), so making and
    putting overlap: about 9k events/s here (load ~5), 5M events in about 10 minutes."""
    kinesis = client("kinesis", env)
    offsets = list(range(0, events, FILL_CHUNK))
    puts: list[Put] = []
    spawn = multiprocessing.get_context("spawn")
    with (
        ProcessPoolExecutor(MAKERS, mp_context=spawn) as maker,
        ThreadPoolExecutor(PUT_THREADS) as pool,
    ):
        waiting = deque(offsets)
        made: deque[Future[list[tuple[str, bytes, int]]]] = deque()
        while waiting or made:
            while waiting and len(made) <= MAKERS:  # the next chunks are made while one is put
                o = waiting.popleft()
                made.append(maker.submit(_chunk, o, min(FILL_CHUNK, events - o), event_rate))
            records = made.popleft().result()
            # Aggregates are ~1 MiB each and PutRecords takes 5 MiB: 4 per call.
            calls = [pool.submit(_put, kinesis, stream, records[i : i + 4])
                     for i in range(0, len(records), 4)]  # fmt: skip
            for call in calls:
                puts.extend(call.result())
    return puts


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    """RSS of a process over time (``/proc/<pid>/status``), every ``period`` seconds, in a thread."""

    def __init__(self, pid: int, period: float = 0.5) -> None:
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            rss = _rss_mb(self.pid)
            if rss is not None:
                self.samples.append((round(time.perf_counter() - self._started, 1), round(rss)))

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join()
        return self.samples


@dataclass(frozen=True, slots=True)
class ChildRun:
    """A measured child process: wall seconds, peak RSS (bytes), exit code, RSS over time (MB),
    and the CPU seconds (user + system) of the child and the children it waited for."""

    started: float
    seconds: float
    peak_rss: int
    exit_code: int
    rss: list[tuple[float, int]]
    cpu_seconds: float


def run_child(command: Sequence[str], env: dict[str, str]) -> ChildRun:
    """Run ``command`` as a child (stdout dropped, stderr passed on) and measure it."""
    started_at = time.time()
    started = time.perf_counter()
    child = subprocess.Popen(list(command), env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    sampler = RssSampler(child.pid)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux; under py-spy it is the largest of py-spy's children (the job).
    return ChildRun(started_at, seconds, usage.ru_maxrss * 1024, child.returncode, sampler.stop(),
                    usage.ru_utime + usage.ru_stime)  # fmt: skip


def run_job(env: dict[str, str], flags: list[str], profile: str | None) -> ChildRun:
    """Run the stream job as a child."""
    command = [sys.executable, "-m", "beam_jobs.run", *flags]
    if profile:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        kind = ["--format", "raw", "--threads"] if profile.endswith(".txt") else []  # collapsed
        command = [spy, "record", "--rate", "200", "--nonblocking", *kind, "-o", profile, "--",
                   *command]  # fmt: skip
    return run_child(command, env)


def commits(state_dir: Path, table: str = "iot_readings") -> list[tuple[float, dict[str, int]]]:
    """(commit time in epoch seconds, positions) of every snapshot of ``table`` that has positions."""
    from sluice.tables.catalog import POSITIONS_PROPERTY, WarehouseSettings, open_catalog

    settings = WarehouseSettings(state_dir=state_dir)
    loaded = open_catalog(settings).load_table(f"{settings.namespace}.{table}")
    out: list[tuple[float, dict[str, int]]] = []
    for snapshot in sorted(loaded.metadata.snapshots, key=lambda s: s.timestamp_ms):
        summary = snapshot.summary.additional_properties if snapshot.summary else {}
        if POSITIONS_PROPERTY in summary:
            positions = {s: int(q) for s, q in json.loads(summary[POSITIONS_PROPERTY]).items()}
            out.append((snapshot.timestamp_ms / 1000, positions))
    return out


def queryable_latencies(
    puts: Sequence[Put], committed: Sequence[tuple[float, dict[str, int]]], since: float | None
) -> dict[str, float | int | None]:
    """p50/p99 (event-weighted) of the time from each put (or from ``since``) to the first commit
    whose positions cover it; records no commit covers are counted, not timed."""
    latencies: list[tuple[float, int]] = []
    missing = 0
    for put in puts:
        at = next((t for t, p in committed if p.get(put.shard, -1) >= put.sequence), None)
        if at is None:
            missing += put.events
        else:
            latencies.append((at - (put.at if since is None else since), put.events))
    latencies.sort()
    total = sum(n for _, n in latencies)

    def percentile(q: float) -> float | None:
        seen = 0
        for value, n in latencies:
            seen += n
            if seen >= q * total:
                return round(value, 2)
        return None

    return {"p50_seconds": percentile(0.5), "p99_seconds": percentile(0.99),
            "events_not_committed": missing}  # fmt: skip


def _figures(events: int, run: ChildRun, idle: float) -> dict[str, Any]:
    seconds = run.seconds - idle
    return {
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_second": round(events / seconds),
        # The whole run's CPU (start-up and the idle wait included): what the job itself costs,
        # apart from the local endpoint's share of the machine.
        "cpu_seconds": round(run.cpu_seconds, 2),
        "events_per_cpu_second": round(events / run.cpu_seconds) if run.cpu_seconds else None,
        "peak_rss_mb": round(run.peak_rss / 2**20),
        "exit_code": run.exit_code,
        "rss_mb_over_time": run.rss[:: max(1, len(run.rss) // 200)],
    }


def replay(env: dict[str, str], archive_root: Path, state_dir: Path, puts: Sequence[Put],
           events: int, job_extra: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """``sluice replay`` of everything the job archived, into a fresh ``state_dir``."""
    low = datetime.fromtimestamp(min(p.at for p in puts), UTC) - timedelta(hours=1)
    high = datetime.fromtimestamp(max(p.at for p in puts), UTC) + timedelta(hours=1)
    command = [
        sys.executable, "-m", "beam_jobs.replay", "--from", low.isoformat(), "--to",
        high.isoformat(), "--archive_root", str(archive_root), "--state_dir", str(state_dir),
        *job_extra,
    ]  # fmt: skip
    run = run_child(command, env)
    figures = _figures(events, run, 0.0)
    if run.exit_code == 0:
        figures["latency"] = queryable_latencies(puts, commits(state_dir), since=run.started)
    return figures


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    job_extra: list[str] = []
    if "--" in args_in:
        cut = args_in.index("--")
        args_in, job_extra = args_in[:cut], args_in[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--commit-interval", type=float, default=10.0)
    parser.add_argument("--event-rate", type=float, default=DEFAULT_EVENT_RATE,
                        help="events per second of event time in the backlog")  # fmt: skip
    parser.add_argument(
        "--max-records-per-call", type=int, default=10,
        help="GetRecords limit: 10 aggregates of ~1 MiB is AWS's 10 MB per call (moto has no byte "
        "limit, and one call returning a whole backlog times out)",
    )  # fmt: skip
    parser.add_argument("--no-replay", action="store_true", help="do not run sluice replay after")
    parser.add_argument("--json", help="also write the figures as JSON to this file")
    parser.add_argument("--profile", help="py-spy flame graph (SVG) of the job to this file")
    args = parser.parse_args(args_in)
    with tempfile.TemporaryDirectory() as tmp, LocalAws(Path(tmp) / "aws") as aws:
        aws.apply_env()
        resources = create_resources(aws.env)
        fill_started = time.perf_counter()
        puts = fill(aws.env, resources.stream, args.events, args.event_rate)
        fill_seconds = time.perf_counter() - fill_started
        state = Path(tmp) / "state"
        flags = [
            "--stream_name", resources.stream, "--stop_when_idle_seconds", str(IDLE_SECONDS),
            "--commit_interval_seconds", str(args.commit_interval),
            "--max_records_per_call", str(args.max_records_per_call),
            "--state_dir", str(state), *job_extra,
        ]  # fmt: skip
        run = run_job(aws.env, flags, args.profile)
        job = _figures(args.events, run, IDLE_SECONDS)
        job["latency"] = queryable_latencies(puts, commits(state), since=None)
        figures: dict[str, Any] = {
            "events": args.events,
            "job": job,
            "fill_seconds": round(fill_seconds, 1),
            "commit_interval_seconds": args.commit_interval,
            "event_rate": args.event_rate,
            "job_flags": job_extra,
        }
        print(_line("job end to end", job), flush=True)
        if not args.no_replay and run.exit_code == 0:
            figures["replay"] = replay(aws.env, state / "warehouse", Path(tmp) / "replay",
                                       puts, args.events, job_extra)  # fmt: skip
            print(_line("replay", figures["replay"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return run.exit_code or figures.get("replay", {}).get("exit_code", 0)


def _line(label: str, figures: dict[str, Any]) -> str:
    latency = figures.get("latency") or {}
    return (
        f"{label}: {figures['events']} IoT events in {figures['seconds']:.1f} s = "
        f"{figures['events_per_second']:,} events/s ({figures['cpu_seconds']:.1f} CPU s), "
        f"peak RSS {figures['peak_rss_mb']:,} MB, "
        f"latency p50 {latency.get('p50_seconds')} s p99 {latency.get('p99_seconds')} s "
        f"(exit {figures['exit_code']})"
    )


if __name__ == "__main__":
    sys.exit(main())
