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
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from job_testkit import (
    COMMIT_ORDER,
    TABLE_NAMES,
    Job,
    assert_same_rows,
    assert_same_windows,
    chunks,
    committed_positions,
    expect,
    iot_window_values,
    kill_during_a_commit,
    mixed_input,
    produce,
    read_tables,
    wait_until,
    web_window_values,
    window_of,
)
from kinesis_testkit import Put

from infra.local.stack import LocalAws, client
from sluice.core.contracts import ErrorType

SEED = 20260302
STREAM = "sluice-kill-test"


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
        target=produce, args=(local_aws.env, STREAM, waves, 0.6, landed), daemon=True
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
        flags = [*geo, "--max_records_per_call", str(rng.randint(3, 6))]
        return Job(env, state_dir, log, flags, stream=STREAM)

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
    Job(env, reference_dir, tmp_path / "reference.log", geo, stream=STREAM).start().wait(90)

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
