"""Exactly-once, proven by killing the stream job: SIGKILL at random moments, restart, compare with a clean run.

A moto server runs in a process of its own (``infra.local.stack.LocalAws``), so the stream outlives
every job process. A producer thread puts known input in waves while ``python -m sluice job run``
reads it; the job is killed with SIGKILL three times and started again each time:

1. right after the first table of its second or third commit was written (the test polls the
   SQLite catalog), so the tables' positions disagree when it dies (the IoT window table ahead of
   the IoT event table);
2. at a seeded random moment (start-up, reading or committing);
3. a seeded random moment shortly after its first commit;

then it is left to stop by itself (``--stop_when_idle_seconds 3``). Each run reads with a different
``--max_records_per_call`` (seeded), so a restarted run's batches straddle what was committed.
A second job then reads the same stream from TRIM_HORIZON into another state folder without
interruption: every table of the killed-and-restarted run must hold exactly what that reference run
holds, and what the test computed from its input.

What may legitimately differ between the two runs:
- Event tables and ``dead_letters``: nothing (no processing-time columns; ``first_seen`` is the
  arrival time); every column of every row is compared.
- Window tables: count, sum, min, max and mean must be identical (the values are multiples of
  0.25, so float sums are exact in any order). Quantiles (KLL) and unique clients (HLL) are merged
  in a different order after a restart; with fewer values per window than the KLL's k (200) the
  sketch keeps every value, so quantiles and estimates come out identical and are compared too.
  The serialized ``state`` may differ: an HLL sketch in list mode keeps its coupons in the order
  they were added, so ``web_traffic_1m.state`` differs byte-wise for windows whose clients came in
  other batches (seen: 28 of 530 rows, all with equal estimates). ``state`` is therefore compared by
  what it decodes to (every value of its summary), not byte for byte.

Runtime: about 25 s alone (five job starts at about 2 s each, waves over about 7 s, two 3 s idle
waits before the last two runs stop).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from job_testkit import (
    TABLE_NAMES,
    Sent,
    chunks,
    committed_positions,
    expect,
    iot_window_values,
    mixed_input,
    read_tables,
    web_window_values,
    window_of,
)
from kinesis_testkit import Put, put_aggregated, put_records

from infra.local.stack import LocalAws, client
from sluice.core.contracts import ErrorType
from sluice.transform.aggregate import MetricStats, WebTrafficStats

SEED = 20260302
STREAM = "sluice-kill-test"
COMMIT_ORDER = ("iot_metrics_1m", "web_traffic_1m", "iot_readings", "web_requests")
"""The first tables ``ExactlyOnceWriter.flush`` commits, in order (window tables before their event
tables; ``feed_items`` and ``dead_letters`` come last, and only in flushes that give them rows)."""


@pytest.fixture
def local_aws(tmp_path: Path) -> Iterator[LocalAws]:
    """moto in a process of its own, stopped when the test ends (whatever happened)."""
    aws = LocalAws(tmp_path / "aws").start()
    try:
        yield aws
    finally:
        aws.stop()


@dataclass
class Job:
    """One ``python -m sluice job run`` process; its stderr goes to a file the test reads."""

    env: dict[str, str]
    state_dir: Path
    log: Path
    flags: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Job:
        command = [
            sys.executable, "-m", "sluice", "job", "run",
            "--stream_name", STREAM,
            "--stop_when_idle_seconds", "3",
            "--commit_interval_seconds", "0.5",
            "--state_dir", str(self.state_dir),
            *self.flags,
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=subprocess.DEVNULL, stderr=log
            )
        return self

    def commits_logged(self) -> int:
        return self.log.read_text(errors="replace").count(" committed ")

    def kill(self) -> None:
        assert self.process is not None
        assert self.process.poll() is None, f"the job ended before it was killed; see {self.log}"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def wait(self, timeout: float) -> None:
        assert self.process is not None
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(
                f"the job did not stop within {timeout} s; see {self.log}"
            ) from None
        assert code == 0, f"the job failed ({code}); see {self.log}"


def metadata_locations(state_dir: Path) -> dict[str, str]:
    """Each table's current metadata file, read straight from the SQLite catalog (cheap to poll)."""
    path = state_dir / "catalog.db"
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as connection:
            rows = connection.execute(
                "SELECT table_name, metadata_location FROM iceberg_tables"
            ).fetchall()
    except sqlite3.OperationalError:  # the catalog's tables are not created yet
        return {}
    return dict(rows)


def wait_until(condition: Any, timeout: float, what: str, poll: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def kill_during_a_commit(job: Job, commits_to_skip: int) -> None:
    """Kill the job right after the first table of a commit changed, before the others are written."""
    seen: list[str] = []

    def first_table_committed() -> bool:
        location = metadata_locations(job.state_dir).get(COMMIT_ORDER[0])
        if location is not None and (not seen or seen[-1] != location):
            seen.append(location)
        # the first location seen is where the table stood when polling began
        return len(seen) >= 2 + commits_to_skip

    wait_until(first_table_committed, 30, "a commit")
    job.kill()


def produce(env: dict[str, str], waves: list[list[Sent]], pause: float, landed: list[Put]) -> None:
    """Put each wave (KPL-aggregated, about 100 user records per Kinesis record; invalid and too-late
    records as plain records), pausing between waves so the job is mid-stream when it is killed."""
    kinesis = client("kinesis", env)
    for wave in waves:
        plain = [s for s in wave if s.lands_in == "dead_letters"]
        rest = [s for s in wave if s.lands_in != "dead_letters"]
        landed += put_aggregated(kinesis, STREAM, [s.user_record() for s in rest], 100)
        landed += put_records(kinesis, STREAM, [(s.partition_key, s.data) for s in plain])
        time.sleep(pause)


def frozen(value: Any) -> Any:
    """A row value as something hashable (lists and maps become tuples), to compare rows as multisets."""
    if isinstance(value, list):
        return tuple(frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, frozen(v)) for k, v in value.items()))
    return value


def assert_same_rows(
    name: str, rows: list[dict[str, Any]], reference: list[dict[str, Any]]
) -> None:
    """The same multiset of rows, every column compared."""
    mine = Counter(tuple((k, frozen(v)) for k, v in sorted(row.items())) for row in rows)
    theirs = Counter(tuple((k, frozen(v)) for k, v in sorted(row.items())) for row in reference)
    missing, extra = theirs - mine, mine - theirs
    assert not missing and not extra, (
        f"{name}: {missing.total()} rows missing, {extra.total()} extra, "
        f"e.g. {next(iter(missing or extra))}"
    )


EXACT_WINDOW_COLUMNS = {
    "iot_metrics_1m": ("count", "sum", "min", "max", "mean", "p50", "p95", "p99"),
    "web_traffic_1m": ("requests", "bytes", "request_time_p50", "request_time_p95",
                       "request_time_p99", "unique_clients"),
}  # fmt: skip
WINDOW_KEYS = {
    "iot_metrics_1m": ("window_start", "window_end", "device_id", "metric"),
    "web_traffic_1m": ("window_start", "window_end", "path", "status_class", "country_iso"),
}


def window_rows(name: str, rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Window rows by key: every column but ``state``, and what ``state`` decodes to."""
    decode = MetricStats.from_bytes if name == "iot_metrics_1m" else WebTrafficStats.from_bytes
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        key = tuple(row[c] for c in WINDOW_KEYS[name])
        assert key not in out, f"{name}: window {key} is stored twice"
        out[key] = (*(row[c] for c in EXACT_WINDOW_COLUMNS[name]), decode(row["state"]).summary())
    return out


def assert_same_windows(
    name: str, rows: list[dict[str, Any]], reference: list[dict[str, Any]]
) -> None:
    mine, theirs = window_rows(name, rows), window_rows(name, reference)
    assert mine.keys() == theirs.keys(), f"{name}: windows differ: {mine.keys() ^ theirs.keys()}"
    different = [key for key in mine if mine[key] != theirs[key]]
    assert not different, (
        f"{name}: {len(different)} windows differ, e.g. {different[0]}: "
        f"{mine[different[0]]} != {theirs[different[0]]}"
    )


def test_killing_the_job_at_any_moment_loses_and_repeats_nothing(
    local_aws: LocalAws, tmp_path: Path, geoip_dbs: tuple[Path, Path]
) -> None:
    rng = random.Random(SEED)
    # The job's own defaults (no SLUICE_* settings from the outer environment), on the local stack.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "AWS_"))}
    env.update(local_aws.env)
    kinesis = client("kinesis", local_aws.env)
    kinesis.create_stream(StreamName=STREAM, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=STREAM, WaiterConfig={"Delay": 0.2})
    # GIVEN 6,000 IoT readings and 3,000 web log lines (event times in the 5 minutes before now),
    # plus feed items, too-late events, invalid records and edge dead letters, put in 10 waves
    start = window_of(datetime.now(UTC)) - timedelta(minutes=5)
    sent = mixed_input(
        rng,
        start,
        span_seconds=300,
        devices=12,
        readings=6_000,
        requests=3_000,
        feed_items=20,
        too_late=40,
        invalid=6,
        edge_dead_letters=10,
    )
    rng.shuffle(sent)
    waves = list(chunks(sent, len(sent) // 10 + 1))
    landed: list[Put] = []
    producer = threading.Thread(
        target=produce, args=(local_aws.env, waves, 0.6, landed), daemon=True
    )
    city_db, asn_db = geoip_dbs
    geo = ["--geoip_city_db", str(city_db), "--geoip_asn_db", str(asn_db)]
    state_dir = tmp_path / "killed"
    runs = iter(range(1, 100))

    def job() -> Job:
        # Small reads (3 to 6 Kinesis records, 300 to 600 user records) make many batches and
        # commits; a different size in each run moves the batch boundaries, so a restarted run's
        # batches straddle the positions the killed run committed.
        log = tmp_path / f"killed-{next(runs)}.log"
        return Job(env, state_dir, log, [*geo, "--max_records_per_call", str(rng.randint(3, 6))])

    # WHEN the job is killed (SIGKILL) and restarted: first right after the first table of its
    # second or third commit was written, so the tables disagree on their positions (tried again
    # if the poll missed the moment, which would take a machine stalled for 100 ms)
    producer.start()
    for _ in range(3):
        kill_during_a_commit(job().start(), commits_to_skip=1 + rng.randrange(2))
        positions = committed_positions(state_dir)
        if positions[COMMIT_ORDER[0]] != positions["iot_readings"]:
            break
    else:
        raise AssertionError(f"no kill landed inside a commit; positions: {positions}")
    # then at a random moment (start-up, reading, committing: whatever it is doing then)
    second = job().start()
    time.sleep(rng.uniform(1.5, 4.0))
    second.kill()
    # then shortly after a commit
    third = job().start()
    wait_until(lambda: third.commits_logged() > 0, 30, "a commit", poll=0.01)
    time.sleep(rng.uniform(0.0, 0.5))
    third.kill()
    producer.join(60)
    assert not producer.is_alive()
    # AND finally it is left to run until it has read everything and stops by itself
    job().start().wait(90)
    # AND a reference job reads the same stream from TRIM_HORIZON, uninterrupted, into other tables
    reference_dir = tmp_path / "reference"
    Job(env, reference_dir, tmp_path / "reference.log", geo).start().wait(90)

    # THEN every table holds exactly what the uninterrupted run holds: the same rows (no duplicate
    # ids) in the event tables and dead_letters, the same windows and values in the window tables
    killed, reference = read_tables(state_dir), read_tables(reference_dir)
    for name, key in [("iot_readings", "event_id"), ("web_requests", "event_id"),
                      ("feed_items", "event_id"), ("dead_letters", "dead_letter_id")]:  # fmt: skip
        duplicates = len(killed[name]) - len({row[key] for row in killed[name]})
        assert duplicates == 0, f"{name}: {duplicates} duplicate rows"
        assert_same_rows(name, killed[name], reference[name])
    for name in ("iot_metrics_1m", "web_traffic_1m"):
        assert_same_windows(name, killed[name], reference[name])
    # AND that is what the input says they must hold
    expected = expect(sent)
    for name in ("iot_readings", "web_requests", "feed_items"):
        assert Counter(r["event_id"] for r in killed[name]) == expected.event_ids[name], name
    assert len(killed["iot_readings"]) == 6_000
    assert iot_window_values(killed["iot_metrics_1m"]) == expected.iot_windows
    assert web_window_values(killed["web_traffic_1m"]) == expected.web_windows
    assert Counter(r["error_type"] for r in killed["dead_letters"]) == expected.dead_letters
    assert expected.dead_letters[ErrorType.TOO_LATE.value] == 40
    # AND every table of both runs ends at the last sequence number of each shard (tables that got
    # nothing lately record their positions when the job stops cleanly)
    last: dict[str, int] = {}
    for put in landed:
        last[put.shard_id] = max(last.get(put.shard_id, 0), int(put.sequence_number))
    shard_ends = {shard: str(sequence) for shard, sequence in last.items()}
    for run in (state_dir, reference_dir):
        assert committed_positions(run) == {table: shard_ends for table in TABLE_NAMES}
