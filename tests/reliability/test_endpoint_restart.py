"""The local Kinesis endpoint paused, killed and restarted while the job reads and commits.

The endpoint is a moto server in a process of its own (``infra.local.stack.LocalAws``) on a fixed
port; the job is ``python -m sluice job run`` (``job_testkit.Job``), reading few records per call so
that it is mid-stream when the endpoint misbehaves. In order:

1. **paused**: SIGSTOP of the endpoint right after the job's first commit, SIGCONT after a few
   seconds (at full scale longer than the client's 10 s read timeout, so calls time out and are
   retried). The job must recover: it goes on and ends normally (exit 0).
2. **killed at a commit, kept down**: SIGKILL of the endpoint right after the first table of a
   commit changed (the catalog is polled), not restarted. The job must retry with backoff, then stop
   with ONE line on stderr and exit 2 within its bounded retries (no traceback, no hang), and what it
   committed must be whole (no event twice, none that was not sent).
3. **killed and restarted**: the endpoint is started again on the same port, the stream created
   again and every record put again in the same order (moto's sequence numbers are per-shard
   counters, so the same records get the same positions: what a real Kinesis stream keeps across an
   outage). A job resumes; while it reads, the endpoint is killed and at once restarted the same way.
   That job either recovers (exit 0) or stops with one line (exit 2); either way a re-run follows.
   (A restarted moto has no stream until it is created again, so a job whose next call comes first
   gets ``ResourceNotFoundException`` and stops, as it would if the stream were deleted.)

Then a reference job reads the final stream from its start into other tables, uninterrupted: every
table must equal it (event and window tables row for row; ``dead_letters`` in every column but
``first_seen``, which is the Kinesis arrival time and so differs for records put again) and hold
what the input says (nothing lost, nothing twice).

Why no too-late events here: lateness is decided by arrival time, which re-putting changes.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from job_testkit import (
    COMMIT_ORDER,
    TABLE_NAMES,
    Job,
    Sent,
    chunks,
    committed_positions,
    difference_from_reference,
    expect,
    is_log_record,
    metadata_locations,
    mixed_input,
    read_tables,
    wait_until,
    window_of,
)
from kinesis_testkit import put_records
from report import FAIL, PASS, Result, measure, sized

from infra.local.stack import LocalAws, client
from sluice.stream.kpl import aggregate

STREAM = "sluice-reliability-endpoint"
SEED = 20260313
SCALES: dict[str, Any] = {
    "skip": "smoke: tests/e2e/test_job_endpoint_outage.py (in make test) kills the endpoint under "
    "the job: retries, then one line and exit 2",
    "short": {"readings": 2_000, "requests": 1_000, "feed_items": 10, "pause": 3.0, "waves": 4},
    "full": {"readings": 40_000, "requests": 20_000, "feed_items": 200, "pause": 15.0, "waves": 4},
}
STOP_BOUND_SECONDS = 120
"""How soon after the endpoint went away the job must have stopped (its retries take about 10 s)."""


@dataclass
class Recorder:
    """Puts records and remembers every PutRecords call, to put them again in the same order."""

    calls: list[list[tuple[str, bytes]]] = field(default_factory=list)

    def put(self, env: dict[str, str], wave: Sequence[Sent]) -> None:
        """A wave as ``job_testkit.produce`` puts it: KPL-aggregated, 100 user records per Kinesis
        record; records meant to be dead letters as plain records."""
        plain = [(s.partition_key, s.data) for s in wave if s.lands_in == "dead_letters"]
        users = [s.user_record() for s in wave if s.lands_in != "dead_letters"]
        packed = [
            (a.partition_key, a.data)
            for start in range(0, len(users), 100)
            for a in aggregate(users[start : start + 100])
        ]
        kinesis = client("kinesis", env)
        for entries in (packed, plain):
            call: list[tuple[str, bytes]] = []
            size = 0
            for key, data in entries:
                # PutRecords takes at most 500 records and 5 MiB: aggregated records are ~30 KB
                if call and (len(call) == 500 or size + len(key) + len(data) > 4 << 20):
                    put_records(kinesis, STREAM, call)
                    self.calls.append(call)
                    call, size = [], 0
                call.append((key, data))
                size += len(key) + len(data)
            if call:
                put_records(kinesis, STREAM, call)
                self.calls.append(call)

    def put_again(self, env: dict[str, str]) -> None:
        kinesis = client("kinesis", env)
        for call in self.calls:
            put_records(kinesis, STREAM, call)


def create_stream(env: dict[str, str]) -> None:
    kinesis = client("kinesis", env)
    kinesis.create_stream(StreamName=STREAM, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=STREAM, WaiterConfig={"Delay": 0.1})


def kill(aws: LocalAws) -> None:
    assert aws.process is not None
    aws.process.send_signal(signal.SIGKILL)
    aws.process.wait(10)
    aws.process = None


def restart(aws: LocalAws, recorder: Recorder, folder: Path) -> tuple[LocalAws, float]:
    """The endpoint again on the same port, with the stream and every record put so far."""
    started = time.monotonic()
    again = LocalAws(folder, port=aws.port).start()
    create_stream(again.env)
    recorder.put_again(again.env)
    return again, time.monotonic() - started


@dataclass
class Ending:
    code: int | None
    seconds: float
    lines: list[str]
    tracebacks: int

    @property
    def one_line(self) -> bool:
        """The job's own failure is one line: the last, and the only one not a log record."""
        others = [line for line in self.lines if not is_log_record(line)]
        return (
            bool(self.lines)
            and others == [self.lines[-1]]
            and self.lines[-1].startswith(("sluice:", "sluice job:"))
        )

    def describe(self) -> str:
        last = self.lines[-1] if self.lines else ""
        return (
            f"exit {self.code} {self.seconds:.1f} s after the fault, {self.tracebacks} "
            f"tracebacks; last line: {last[:220]}"
        )


def ending(job: Job, since: float, timeout: float = 600) -> Ending:
    assert job.process is not None
    try:
        code: int | None = job.process.wait(timeout)
    except Exception:  # noqa: BLE001 - a hang is the finding
        job.process.kill()
        job.process.wait()
        code = None
    text = job.log.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    return Ending(code, time.monotonic() - since, lines, text.count("Traceback"))


def whole_commits(state_dir: Path, sent: Sequence[Sent]) -> tuple[bool, str]:
    """What a stopped job left: every event at most once, nothing that was not sent."""
    tables = read_tables(state_dir)
    expected = expect(sent)
    problems = []
    rows = 0
    for name, ids in expected.event_ids.items():
        found = Counter(row["event_id"] for row in tables[name])
        rows += sum(found.values())
        twice = sum(n - 1 for n in found.values() if n > 1)
        foreign = sum(1 for i in found if i not in ids)
        if twice or foreign:
            problems.append(f"{name}: {twice} twice, {foreign} never sent")
    positions = committed_positions(state_dir)
    agree = len({str(p) for p in positions.values() if p}) <= 1
    detail = f"{rows} event rows committed, each once; tables' positions " + (
        "agree" if agree else "differ (a commit cut between tables, which the resume completes)"
    )
    return not problems, "; ".join(problems) or detail


def test_endpoint_paused_killed_and_restarted(tmp_path: Path, scale: str) -> None:
    size = sized(SCALES, scale)
    result = Result("endpoint_restart", "Endpoint killed and restarted during reads and commits")
    rng = random.Random(SEED)
    aws = LocalAws(tmp_path / "aws-1").start()
    try:
        with measure(result):
            env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "AWS_"))}
            env.update(aws.env)  # the port stays the same across restarts
            create_stream(aws.env)
            start = window_of(datetime.now(UTC)) - timedelta(minutes=4)
            sent = mixed_input(
                rng, start, span_seconds=240, devices=20, readings=size["readings"],
                requests=size["requests"], feed_items=size["feed_items"], invalid=2,
                edge_dead_letters=5,
            )  # fmt: skip
            rng.shuffle(sent)
            waves = list(chunks(sent, len(sent) // size["waves"] + 1))
            recorder = Recorder()
            state = tmp_path / "interrupted"
            runs = iter(range(1, 100))

            def job(recreated: bool = False) -> Job:
                flags = ["--max_records_per_call", str(rng.randint(3, 6))]
                if recreated:
                    # A restarted moto holds a new stream (a new creation time) with the same
                    # records at the same sequence numbers; the job refuses a recreated stream
                    # unless told, and then reads it from the start, its copies dropped by event id.
                    flags += ["--on_new_stream", "start_from_position"]
                log = tmp_path / f"interrupted-{next(runs)}.log"
                return Job(env, state, log, flags, stream=STREAM)

            # 1. paused while reading, right after the first commit
            recorder.put(aws.env, waves[0])
            first = job().start()
            wait_until(lambda: first.commits_logged() > 0, 120, "a first commit", 0.01)
            assert aws.process is not None
            aws.process.send_signal(signal.SIGSTOP)
            time.sleep(size["pause"])
            aws.process.send_signal(signal.SIGCONT)
            resumed = time.monotonic()
            recorder.put(aws.env, waves[1])
            paused = ending(first, resumed)
            result.check(
                "paused", f"SIGSTOP {size['pause']:.0f} s after the first commit, then SIGCONT",
                verdict=PASS if paused.code == 0 and not paused.tracebacks else FAIL,
                detail=("recovered: " if paused.code == 0 else "did not recover: ")
                + paused.describe(),
            )  # fmt: skip

            # 2. killed right after the first table of a commit changed, kept down
            recorder.put(aws.env, waves[2])
            second = job().start()
            seen: list[str] = []

            def first_table_committed() -> bool:
                location = metadata_locations(state).get(COMMIT_ORDER[0])
                if location is not None and (not seen or seen[-1] != location):
                    seen.append(location)
                return len(seen) >= 2

            moment = "at a commit"
            try:
                wait_until(first_table_committed, 60, "a commit")
            except AssertionError:
                moment = "while reading (no commit seen within 60 s)"
            kill(aws)
            down = ending(second, time.monotonic())
            stopped_well = (
                down.code == 2 and down.one_line and not down.tracebacks
                and down.seconds < STOP_BOUND_SECONDS
            )  # fmt: skip
            result.check(
                "killed, kept down", f"SIGKILL {moment}; not restarted",
                verdict=PASS if stopped_well else FAIL, detail=down.describe(),
            )  # fmt: skip
            whole, detail = whole_commits(state, sent)
            result.check(
                "commits after the stop", "(the tables the stopped job left)",
                verdict=PASS if whole else FAIL, detail=detail,
            )  # fmt: skip
            result.metrics["seconds from the kill to the job's exit"] = round(down.seconds, 1)

            # 3. restarted (same port, stream and records put again); killed and restarted again
            # while a job reads
            aws, took = restart(aws, recorder, tmp_path / "aws-2")
            result.metrics["restart + putting every record again (s)"] = round(took, 1)
            last = list(chunks(waves[3], len(waves[3]) // 2 + 1))
            recorder.put(aws.env, last[0])
            third = job(recreated=True).start()
            try:
                wait_until(lambda: third.commits_logged() > 0, 60, "a commit", 0.01)
                moment = "right after a commit, while reading"
            except AssertionError:
                moment = "while reading (no commit within 60 s)"
            kill(aws)
            killed = time.monotonic()
            aws, took = restart(aws, recorder, tmp_path / "aws-3")
            recorder.put(aws.env, last[1])
            bounced = ending(third, killed)
            recovered = bounced.code == 0 and not bounced.tracebacks
            stopped = bounced.code == 2 and bounced.one_line and not bounced.tracebacks
            result.check(
                "killed and restarted", f"SIGKILL {moment}, restarted at once ({took:.1f} s)",
                verdict=PASS if recovered or stopped else FAIL,
                detail=("recovered: " if recovered else "stopped with one line: " if stopped
                        else "neither recovered nor stopped cleanly: ") + bounced.describe(),
            )  # fmt: skip

            # a re-run once the endpoint is back, and the uninterrupted reference
            rerun_started = time.monotonic()
            job(recreated=True).start().wait(900)
            result.metrics["re-run to the end (s)"] = round(time.monotonic() - rerun_started, 1)
            reference_started = time.monotonic()
            Job(
                env, tmp_path / "reference", tmp_path / "reference.log", stream=STREAM
            ).start().wait(900)
            result.metrics["uninterrupted reference run (s)"] = round(
                time.monotonic() - reference_started, 1
            )
            compare(result, read_tables(state), read_tables(tmp_path / "reference"), sent)
            result.metrics["user records put"] = len(sent)
            result.metrics["PutRecords calls (put again after each restart)"] = len(recorder.calls)
    finally:
        aws.stop()
    assert result.overall() == PASS, [c for c in result.checks if c.verdict != PASS]


def compare(
    result: Result,
    mine: dict[str, list[dict[str, Any]]],
    reference: dict[str, list[dict[str, Any]]],
    sent: Sequence[Sent],
) -> None:
    expected = expect(sent)
    for name in TABLE_NAMES:
        rows, theirs = mine[name], reference[name]
        lost = duplicated = None
        if name in expected.event_ids:
            ids = Counter(r["event_id"] for r in rows)
            lost = sum(1 for i in expected.event_ids[name] if i not in ids)
            duplicated = sum(n - 1 for n in ids.values() if n > 1)
        elif name == "dead_letters":
            ids = Counter(r["dead_letter_id"] for r in rows)
            duplicated = sum(n - 1 for n in ids.values() if n > 1)
            lost = max(0, sum(expected.dead_letters.values()) - len(ids))
            # first_seen is the arrival time: records put again after a restart arrived later
            rows = [{k: v for k, v in r.items() if k != "first_seen"} for r in rows]
            theirs = [{k: v for k, v in r.items() if k != "first_seen"} for r in theirs]
        problem = difference_from_reference(name, rows, theirs, lost, duplicated)
        result.check(
            name, "after the restarts and a re-run", events_in=len(theirs), events_out=len(rows),
            lost=lost, duplicated=duplicated, verdict=FAIL if problem else PASS,
            detail=problem or "equal to the uninterrupted run"
            + (" (first_seen aside)" if name == "dead_letters" else ""),
        )  # fmt: skip
