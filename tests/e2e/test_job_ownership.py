"""Who may write a state folder's tables: two jobs on one folder, a recreated stream, another stream.

``python -m sluice job run`` processes against moto in a process of its own (``LocalAws``):

- two jobs started on one state folder while records arrive: the older is fenced at its next
  commit (one line, exit 2), the newer reads on and stops by itself, and the tables equal those of
  one uninterrupted run into another folder (no duplicate, nothing missing);
- a stream deleted and created again under the same name: the job refuses with one line naming
  ``--on_new_stream``, and with ``--on_new_stream start_from_position`` reads the new stream whole;
- another stream name against the same folder: refused with one line naming ``--stream_name``.

Runtime: about 45 s (seven job starts at about 2 s each, idle waits of 2 to 3 s each).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from job_testkit import (
    Job,
    assert_same_rows,
    assert_same_windows,
    chunks,
    mixed_input,
    produce,
    read_tables,
    wait_until,
    window_of,
)
from kinesis_testkit import Put, put_records

from infra.local.stack import LocalAws, client

SEED = 20261201


def _env(local_aws: LocalAws) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "AWS_"))}
    env.update(local_aws.env)
    return env


def _create(kinesis: object, stream: str) -> None:
    kinesis.create_stream(StreamName=stream, ShardCount=2)  # type: ignore[attr-defined]
    kinesis.get_waiter("stream_exists").wait(  # type: ignore[attr-defined]
        StreamName=stream, WaiterConfig={"Delay": 0.2}
    )


def _run_once(
    env: dict[str, str], state_dir: Path, *flags: str
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sluice", "job", "run", "--state_dir", str(state_dir),
               "--stop_when_idle_seconds", "2", "--commit_interval_seconds", "0.5", *flags]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def _last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def test_two_jobs_on_one_state_folder_never_duplicate(local_aws: LocalAws, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    env = _env(local_aws)
    stream = "sluice-two-jobs"
    kinesis = client("kinesis", env)
    _create(kinesis, stream)
    # GIVEN IoT readings, web requests, feed items, too-late and invalid records put in waves
    start = window_of(datetime.now(UTC)) - timedelta(minutes=4)
    sent = mixed_input(
        rng, start, span_seconds=240, devices=8, readings=3_000, requests=1_500,
        feed_items=10, too_late=20, invalid=4, edge_dead_letters=5,
    )  # fmt: skip
    rng.shuffle(sent)
    landed: list[Put] = []
    producer = threading.Thread(
        target=produce, args=(env, stream, list(chunks(sent, len(sent) // 8 + 1)), 0.6, landed)
    )
    producer.start()
    state_dir = tmp_path / "shared"
    flags = ["--max_records_per_call", "4"]
    # WHEN a first job runs, and a second starts on the same folder after the first committed
    first = Job(env, state_dir, tmp_path / "first.log", flags, stream=stream).start()
    wait_until(lambda: first.commits_logged() > 0, 60, "the first job's first commit", poll=0.01)
    second = Job(env, state_dir, tmp_path / "second.log", flags, stream=stream).start()
    producer.join(60)
    # THEN the first is fenced with one line and exit 2, and the second runs to its end
    assert first.process is not None
    assert first.process.wait(timeout=90) == 2, first.log.read_text()
    log = first.log.read_text()
    assert _last_line(log).startswith("sluice job: fenced: another sluice job (epoch 2"), log
    assert "Traceback" not in log, log
    second.wait(90)
    # AND the tables equal those of one uninterrupted run into another folder
    reference_dir = tmp_path / "reference"
    Job(env, reference_dir, tmp_path / "reference.log", flags, stream=stream).start().wait(90)
    shared, reference = read_tables(state_dir), read_tables(reference_dir)
    for name, key in [("iot_readings", "event_id"), ("web_requests", "event_id"),
                      ("feed_items", "event_id"), ("dead_letters", "dead_letter_id")]:  # fmt: skip
        assert len(shared[name]) == len({row[key] for row in shared[name]}), name
        assert_same_rows(name, shared[name], reference[name])
    for name in ("iot_metrics_1m", "web_traffic_1m"):
        assert_same_windows(name, shared[name], reference[name])
    assert len(shared["iot_readings"]) == 3_000


def test_a_recreated_or_different_stream_is_refused_unless_told(
    local_aws: LocalAws, tmp_path: Path
) -> None:
    env = _env(local_aws)
    kinesis = client("kinesis", env)
    stream, state_dir = "sluice-recreated", tmp_path / "state"
    _create(kinesis, stream)
    plain = [(f"k{i}", b"not an envelope %d" % i) for i in range(30)]
    put_records(kinesis, stream, plain)
    # GIVEN tables that read 30 records of the stream
    done = _run_once(env, state_dir, "--stream_name", stream)
    assert done.returncode == 0, done.stderr
    assert Counter(r["error_type"] for r in read_tables(state_dir)["dead_letters"]) == {
        "invalid_json": 30
    }
    # WHEN the stream is deleted and created again under its name, with 40 new records
    kinesis.delete_stream(StreamName=stream)
    kinesis.get_waiter("stream_not_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
    time.sleep(1.1)  # a creation time in another second than the first stream's
    _create(kinesis, stream)
    put_records(kinesis, stream, [(f"k{i}", b"new stream %d" % i) for i in range(40)])
    # THEN the job refuses it with one line naming the option
    refused = _run_once(env, state_dir, "--stream_name", stream)
    assert refused.returncode == 2
    line = _last_line(refused.stderr)
    assert line.startswith("sluice job: Kinesis stream 'sluice-recreated' is not the one"), line
    assert "--on_new_stream start_from_position" in line and len(refused.stderr.splitlines()) == 1
    # AND with the option it reads the new stream from the start position, saying so
    restarted = _run_once(
        env, state_dir, "--stream_name", stream, "--on_new_stream", "start_from_position"
    )
    assert restarted.returncode == 0, restarted.stderr
    assert "was recreated" in restarted.stderr
    letters = read_tables(state_dir)["dead_letters"]
    assert len(letters) == 70  # 30 of the old stream, all 40 of the new one
    # AND another stream against the same folder is refused, naming the stream the tables hold
    _create(kinesis, "sluice-other")
    other = _run_once(env, state_dir, "--stream_name", "sluice-other")
    assert other.returncode == 2
    line = _last_line(other.stderr)
    assert "--stream_name sluice-recreated" in line and len(other.stderr.splitlines()) == 1, line
