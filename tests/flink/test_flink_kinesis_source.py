"""Sluice's Kinesis source (``flink_jobs/java/kinesis-source``) for real (``make test-flink``,
marker ``flink``): moto server over HTTP on 127.0.0.1 -> a PyFlink job on the local cluster reading
through the source (built into ``make flink-jar``'s shaded jar, called through
``flink_jobs.kinesis_source.read_kinesis``) -> a FileSink committed on checkpoints.

GIVEN a 2-shard stream (split mid-run the way Kinesis splits, see ``kinesis_testkit``), WHEN the job
reads it (and, in the second test, its TaskManager is SIGKILLed mid-run and replaced), THEN the
committed files hold every record exactly once, each shard's records in sequence order, each
partition key's records in put order, and a split shard's records before its children's.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from app_testkit import wait_for

from flink_jobs.cluster import Cluster, rest_get, running_cluster, submit_python
from flink_jobs.jars import SHADED_JAR
from flink_jobs.settings import REPO_ROOT, ClusterSettings

sys.path.append(str(REPO_ROOT / "tests" / "pipeline"))
from kinesis_testkit import (
    REGION,
    create_stream,
    put_records,
    split_shard_like_kinesis,
)

pytestmark = pytest.mark.flink

JOB = Path(__file__).parent / "jobs" / "kinesis_to_files.py"
KEYS = [f"device-{n}" for n in range(8)]


def sluice(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO_ROOT,
    )


@pytest.fixture(scope="module")
def shaded_jar() -> Path:
    """``make flink-jar``'s jar, built when it is not there yet (about 2 minutes)."""
    if not SHADED_JAR.is_file():
        subprocess.run(["make", "flink-jar"], cwd=REPO_ROOT, check=True, timeout=1800)
    return SHADED_JAR


@pytest.fixture(scope="module")
def cluster(session_flink_dir: Path) -> Cluster:
    """The session's local cluster (``tests/flink/conftest.py``), checkpointing every 2 s."""
    return running_cluster(ClusterSettings(flink_dir=session_flink_dir))


@pytest.fixture
def kinesis(moto_endpoint: str) -> Any:
    return boto3.client(
        "kinesis",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


class Feed:
    """Puts records with a per-key counter in the data, remembering each record's key and counter."""

    def __init__(self, client: Any, stream: str) -> None:
        self.client, self.stream = client, stream
        self.next = dict.fromkeys(KEYS, 0)
        self.put: dict[tuple[str, str], tuple[str, int]] = {}

    def put_batch(self, count: int) -> None:
        entries = []
        for n in range(count):
            key = KEYS[n % len(KEYS)]
            entries.append((key, json.dumps({"k": key, "i": self.next[key]}).encode()))
            self.next[key] += 1
        for landed, (key, data) in zip(
            put_records(self.client, self.stream, entries), entries, strict=True
        ):
            self.put[(landed.shard_id, landed.sequence_number)] = (key, json.loads(data)["i"])


def committed_lines(out: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(shard, sequence, decoded data) of every line in committed part files, in emission order.

    Parallelism 1: one writer at a time, whose part files are numbered in the order it opened them;
    a restored writer has a new id and numbers from 0 again, so files are ordered by when they were
    last written, then by number. In-progress and pending files are hidden (dot) files and skipped."""
    files = [p for p in out.rglob("part-*") if not p.name.startswith(".")]
    files.sort(key=lambda p: (p.stat().st_mtime_ns, int(p.name.rsplit("-", 1)[1])))
    lines = []
    for part in files:
        for line in part.read_text().splitlines():
            shard, sequence, _arrival, data = line.split("\t")
            lines.append((shard, sequence, json.loads(base64.b64decode(data))))
    return lines


def cancel(cluster: Cluster, job_id: str) -> None:
    request = urllib.request.Request(
        f"http://{cluster.rest}/jobs/{job_id}?mode=cancel", method="PATCH"
    )
    urllib.request.urlopen(request, timeout=10).close()
    wait_for(
        "the job to be cancelled",
        lambda: (rest_get(cluster.rest, f"/jobs/{job_id}") or {}).get("state") == "CANCELED",
        timeout=60,
    )


def assert_exactly_once_in_order(lines: list[tuple[str, str, dict[str, Any]]], feed: Feed) -> None:
    read = [(shard, sequence) for shard, sequence, _ in lines]
    assert len(read) == len(set(read)), "a record was emitted twice"
    assert set(read) == set(feed.put), (
        f"missing {len(set(feed.put) - set(read))}, unexpected {len(set(read) - set(feed.put))}"
    )
    for shard, sequence, data in lines:
        assert feed.put[(shard, sequence)] == (data["k"], data["i"])
    by_shard: dict[str, list[int]] = {}
    by_key: dict[str, list[int]] = {}
    for shard, sequence, data in lines:
        by_shard.setdefault(shard, []).append(int(sequence))
        by_key.setdefault(data["k"], []).append(data["i"])
    for shard, sequences in by_shard.items():
        assert sequences == sorted(sequences), f"{shard} out of sequence order"
    for key, counters in by_key.items():
        assert counters == list(range(len(counters))), f"{key} out of put order"


def test_every_record_once_in_order_across_a_split(
    cluster: Cluster, shaded_jar: Path, kinesis: Any, moto_endpoint: str, tmp_path: Path
):
    # GIVEN a 2-shard stream holding 400 records
    stream = create_stream(kinesis, shard_count=2)
    feed = Feed(kinesis, stream)
    feed.put_batch(400)
    out = tmp_path / "out"

    # WHEN the job reads it
    job_id = submit_python(cluster, JOB, stream, moto_endpoint, str(out), str(shaded_jar))
    try:
        wait_for("the first 400 records", lambda: len(committed_lines(out)) >= 400)
        # AND a shard is split the way Kinesis splits, and 400 more records are put
        parent = sorted({shard for shard, _ in feed.put})[0]
        children = split_shard_like_kinesis(stream, parent)
        feed.put_batch(400)
        wait_for("all 800 records", lambda: len(committed_lines(out)) >= 800)
        time.sleep(3)  # a checkpoint or two more: nothing extra may appear
        lines = committed_lines(out)
    finally:
        cancel(cluster, job_id)

    # THEN each record is there once, in order per shard and per key, children after the parent
    assert_exactly_once_in_order(lines, feed)
    shards = [shard for shard, _, _ in lines]
    assert set(children) <= set(shards), "the children were not read"
    last_parent = max(i for i, shard in enumerate(shards) if shard == parent)
    first_child = min(i for i, shard in enumerate(shards) if shard in children)
    assert last_parent < first_child, "a child's record came before its parent's last"


def test_a_killed_taskmanager_loses_and_duplicates_nothing(
    cluster: Cluster, shaded_jar: Path, kinesis: Any, moto_endpoint: str, tmp_path: Path
):
    # GIVEN a 2-shard stream that keeps receiving records while the job reads it
    stream = create_stream(kinesis, shard_count=2)
    feed = Feed(kinesis, stream)
    feed.put_batch(200)
    out = tmp_path / "out"
    stop = threading.Event()

    def keep_putting() -> None:
        for _ in range(60):
            if stop.wait(0.5):
                return
            feed.put_batch(20)

    job_id = submit_python(cluster, JOB, stream, moto_endpoint, str(out), str(shaded_jar))
    putter = threading.Thread(target=keep_putting, daemon=True)
    try:
        wait_for("committed records", lambda: len(committed_lines(out)) >= 100)
        putter.start()
        # WHEN the TaskManager is SIGKILLed mid-run and a fresh one started
        time.sleep(3)
        (tm,) = cluster.pids("taskexecutor")
        os.kill(tm, signal.SIGKILL)
        wait_for(
            "the killed TaskManager to be gone", lambda: tm not in cluster.pids("taskexecutor")
        )
        fresh = sluice("flink", "cluster", "start-taskmanager", "--flink_dir", str(cluster.folder))
        assert fresh.returncode == 0, fresh.stderr
        putter.join(60)
        assert not putter.is_alive()
        total = len(feed.put)
        wait_for(f"all {total} records", lambda: len(committed_lines(out)) >= total, timeout=180)
        time.sleep(3)
        lines = committed_lines(out)
        latest = (rest_get(cluster.rest, f"/jobs/{job_id}/checkpoints") or {}).get("latest") or {}
    finally:
        stop.set()
        cancel(cluster, job_id)

    # THEN the job restarted from a checkpoint and the committed output is exactly once, in order
    restored = latest.get("restored") or {}
    assert restored.get("is_savepoint") is False, latest
    assert_exactly_once_in_order(lines, feed)


def test_the_python_wrapper_builds_the_source_and_refuses_in_one_line(shaded_jar: Path):
    # GIVEN .venv-flink's PyFlink, WHEN the source is built without the jar, with bad settings, and
    # with good ones
    done = subprocess.run(
        [
            str(REPO_ROOT / ".venv-flink" / "bin" / "python"),
            str(Path(__file__).parent / "jobs" / "kinesis_source_refusals.py"),
            str(shaded_jar),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    lines = [line for line in done.stdout.splitlines() if line]
    # THEN each refusal is one line naming the fix, and the built source matches the Python type
    assert lines[:3] == [
        "no jar: Kinesis source: io.sluice.flink.kinesis.KinesisSourceConfig is not on the job's "
        "class path (add build/flink/pyflink-dependencies.jar: run 'make flink-jar')",
        "refused: Kinesis source: endpoint must be an http:// or https:// URL, not 127.0.0.1:1",
        "refused: Kinesis source: static credentials need both access_key_id and secret_access_key",
    ], done.stdout + done.stderr
    assert lines[3] == (
        "built: KinesisSourceConfig{stream=s, region=us-east-1, endpoint=http://127.0.0.1:1, "
        "credentials=static, start=TRIM_HORIZON, json}"
    )
    java_type, python_type = lines[4].split(": ", 1)[1], lines[5].split(": ", 1)[1]
    assert java_type == python_type
    assert "shard_id" in java_type and "data" in java_type
    # and a source whose stream cannot be listed is refused where the job is built, in one line
    assert lines[6].startswith(
        "unreachable: Kinesis source: cannot list the shards of stream s at http://127.0.0.1:1: "
    ), lines[6:]
    assert lines[6].endswith(
        "check sluice.input (stream.arn, aws.region, aws.endpoint) and the credentials"
    )
