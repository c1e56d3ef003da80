"""SIGKILL the stream job at random moments while data flows; every table must equal an uninterrupted run.

The kill test of ``tests/e2e`` (same helpers: ``job_testkit``), at scale: input of the three sources
(IoT readings, web requests, feed items, plus too-late, invalid and edge dead-letter records) put in
waves while the job runs; the job is killed with SIGKILL ``kills`` times, cycling through three
moments (inside a commit, after the first table of a commit changed; at a random moment; shortly
after a commit), restarted each time with another ``--max_records_per_call``, then left to finish.
A reference job reads the same stream uninterrupted. Every table is compared row for row (window
tables by key, every value, sketches by what they decode to) and with what the input says.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from job_testkit import (
    TABLE_NAMES,
    Job,
    chunks,
    difference_from_reference,
    expect,
    kill_during_a_commit,
    mixed_input,
    produce,
    read_tables,
    wait_until,
    window_of,
)
from kinesis_testkit import Put
from report import FAIL, PASS, Result, measure, sized

from infra.local.stack import client

STREAM = "sluice-reliability-kill"
SCALES: dict[str, Any] = {
    "skip": "smoke: tests/e2e/test_job_kill_restart.py (in make test) is this scenario with 3 kills "
    "over 9,000 events",
    # readings + requests + feed items (+ too late, 5 invalid records per `invalid`, edge letters)
    "short": {"readings": 2_000, "requests": 1_000, "feed_items": 20, "kills": 2, "waves": 6},
    "full": {
        "readings": 130_000,
        "requests": 66_000,
        "feed_items": 4_000,
        "kills": 10,
        "waves": 40,
    },
}
SEED = 20260313


def test_sigkill_at_random_moments_changes_nothing(
    local_aws: Any, tmp_path: Path, geoip_dbs: tuple[Path, Path], scale: str
) -> None:
    size = sized(SCALES, scale)
    result = Result("kill", "SIGKILL of the job at random moments")
    rng = random.Random(SEED)
    with measure(result):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "AWS_"))}
        env.update(local_aws.env)
        kinesis = client("kinesis", local_aws.env)
        kinesis.create_stream(StreamName=STREAM, ShardCount=4)
        kinesis.get_waiter("stream_exists").wait(StreamName=STREAM, WaiterConfig={"Delay": 0.2})
        start = window_of(datetime.now(UTC)) - timedelta(minutes=5)
        sent = mixed_input(
            rng, start, span_seconds=300, devices=50, readings=size["readings"],
            requests=size["requests"], feed_items=size["feed_items"], too_late=40, invalid=6,
            edge_dead_letters=10,
        )  # fmt: skip
        rng.shuffle(sent)
        waves = list(chunks(sent, len(sent) // size["waves"] + 1))
        landed: list[Put] = []
        producer = threading.Thread(
            target=produce, args=(local_aws.env, STREAM, waves, 0.5, landed), daemon=True
        )
        city_db, asn_db = geoip_dbs
        geo = ["--geoip_city_db", str(city_db), "--geoip_asn_db", str(asn_db)]
        state_dir = tmp_path / "killed"
        runs = iter(range(1, 1000))

        def job() -> Job:
            log = tmp_path / f"killed-{next(runs)}.log"
            flags = [*geo, "--max_records_per_call", str(rng.randint(3, 8))]
            return Job(env, state_dir, log, flags, stream=STREAM)

        moments: list[str] = []
        producer.start()
        for number in range(size["kills"]):
            kind = ("in a commit", "at random", "after a commit")[number % 3]
            running = job().start()
            try:
                if kind == "in a commit":
                    kill_during_a_commit(running, commits_to_skip=rng.randrange(2))
                elif kind == "at random":
                    time.sleep(rng.uniform(1.5, 5.0))
                    running.kill()
                else:
                    wait_until(lambda r=running: r.commits_logged() > 0, 60, "a commit", 0.01)
                    time.sleep(rng.uniform(0.0, 0.5))
                    running.kill()
                moments.append(kind)
            except AssertionError as missed:  # it stopped (idle) or never committed: not a kill
                moments.append(f"{kind} (missed: {str(missed)[:60]})")
                if running.process is not None and running.process.poll() is None:
                    running.kill()
        producer.join(600)
        final_started = time.monotonic()
        job().start().wait(1800)
        final_seconds = time.monotonic() - final_started
        reference_started = time.monotonic()
        Job(
            env, tmp_path / "reference", tmp_path / "reference.log", geo, stream=STREAM
        ).start().wait(1800)
        reference_seconds = time.monotonic() - reference_started
        kills = sum(1 for m in moments if "missed" not in m)
        killed, reference = read_tables(state_dir), read_tables(tmp_path / "reference")
        expected = expect(sent)
        injected = f"{kills} SIGKILLs ({', '.join(moments)})"
        for name in TABLE_NAMES:
            rows, theirs = killed[name], reference[name]
            key = "dead_letter_id" if name == "dead_letters" else "event_id"
            lost = duplicated = None
            if name in expected.event_ids:
                ids = Counter(r[key] for r in rows)
                lost = sum(1 for i in expected.event_ids[name] if i not in ids)
                duplicated = sum(n - 1 for n in ids.values() if n > 1)
            elif name == "dead_letters":
                ids = Counter(r[key] for r in rows)
                duplicated = sum(n - 1 for n in ids.values() if n > 1)
                lost = max(0, sum(expected.dead_letters.values()) - len(ids))
            problem = difference_from_reference(name, rows, theirs, lost, duplicated)
            result.check(
                name, injected if name == TABLE_NAMES[0] else "(same run)",
                events_in=len(theirs), events_out=len(rows), lost=lost, duplicated=duplicated,
                verdict=FAIL if problem else PASS,
                detail=problem or "equal to the uninterrupted run, row for row",
            )  # fmt: skip
        result.metrics.update(
            {
                "events put (user records)": len(sent),
                "Kinesis records (KPL-aggregated, 100 per record)": len(landed),
                "shards": 4,
                "kills landed": kills,
                "final run after the kills (s)": round(final_seconds, 1),
                "uninterrupted reference run (s)": round(reference_seconds, 1),
                "reference throughput (events/s)": round(len(sent) / reference_seconds),
            }
        )
    assert kills >= size["kills"] - 1, moments
    assert result.overall() == PASS, [c for c in result.checks if c.verdict != PASS]
