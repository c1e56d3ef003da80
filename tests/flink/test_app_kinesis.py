"""The PyFlink (MSF) application reading Kinesis on the local Flink cluster (``make test-flink``,
marker ``flink``): moto server over HTTP -> the application from its zip (``source=kinesis``,
``bounded=true``: each shard up to where it is caught up, then every window is written) -> the six
Iceberg tables over the JDBC catalog on pyiceberg's SQLite file.

GIVEN a pre-filled 2-shard stream (IoT readings, requests and feed items as the edges write them,
half of them KPL-aggregated; invalid JSON, schema violations and the other decoding failures; edge
dead letters; too-late events), WHEN the Beam job reads it (``sluice job run
--stop_when_idle_seconds``) and the application reads it (``sluice flink run-local --flink_master``
on the running cluster), THEN both give the same event rows and dead letters, and window rows with
equal count, sum, min, max and mean (quantiles and unique counts within sketch error).
WHEN the application reads it again and its only TaskManager is SIGKILLed mid-run and replaced,
THEN the job recovers from its checkpoint and the tables equal the uninterrupted run's: the same
rows, none twice, none lost.

Runtime: about 3 minutes on 2 cores (the Beam job, two application runs, one with a restart).
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from app_testkit import (
    EVENT_TABLES,
    MOTO_CREDENTIALS,
    app_properties,
    assert_same_tables,
    one_line,
    read_tables,
    sluice,
    wait_for,
)
from job_testkit import metadata_locations, prefill_mixed_stream, window_of
from kinesis_testkit import REGION, create_stream

from flink_jobs.cluster import Cluster, free_port, rest_get, running_cluster
from flink_jobs.settings import ClusterSettings
from sluice.tables.warehouse import WarehouseSettings, ensure_tables, open_catalog

pytestmark = pytest.mark.flink


@dataclass(frozen=True)
class Prefilled:
    """The stream, what was put on it, and the Beam job's tables of it."""

    stream: str
    endpoint: str
    sent: int
    beam_state: Path
    geoip: dict[str, str]


@pytest.fixture(scope="module")
def prefilled(
    moto_endpoint: str, geoip_dbs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Prefilled:
    kinesis = boto3.client(
        "kinesis", endpoint_url=moto_endpoint, region_name=REGION, **_boto_credentials()
    )
    stream = create_stream(kinesis, shard_count=2)
    start = window_of(datetime.now(UTC)) - timedelta(minutes=3)
    sent = prefill_mixed_stream(
        kinesis,
        stream,
        start,
        11,
        3,
        readings=160,
        requests=160,
        feed_items=3,
        too_late=2,
        invalid=1,
        edge_dead_letters=1,
    )
    city, asn = geoip_dbs
    beam_state = tmp_path_factory.mktemp("beam") / "state"
    env = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_DEFAULT_REGION": REGION, **MOTO_CREDENTIALS}
    beam = sluice(
        "job", "run", "--stream_name", stream, "--stop_when_idle_seconds", "2",
        "--commit_interval_seconds", "1", "--state_dir", str(beam_state),
        "--geoip_city_db", str(city), "--geoip_asn_db", str(asn), env=env, timeout=300,
    )  # fmt: skip
    assert beam.returncode == 0, beam.stderr[-2000:]
    assert json.loads(beam.stdout.strip().splitlines()[-1])["read.records"] == len(sent)
    geoip = {"geoip.city.db": str(city), "geoip.asn.db": str(asn)}
    return Prefilled(stream, moto_endpoint, len(sent), beam_state, geoip)


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


def start_app(
    prefilled: Prefilled,
    zip_file: Path,
    cluster: Cluster,
    state: Path,
    *,
    wait: bool,
    job: dict[str, str] | None = None,
    **input: str,
) -> Any:
    """``sluice flink run-local --flink_master`` of the application over the stream into ``state``."""
    settings = WarehouseSettings(state_dir=state)
    ensure_tables(open_catalog(settings), settings)
    source = {
        "source": "kinesis", "bounded": "true", "aws.region": REGION,
        "stream.arn": f"arn:aws:kinesis:{REGION}:123456789012:stream/{prefilled.stream}",
        "aws.endpoint": prefilled.endpoint, **input,
    }  # fmt: skip
    props = state / "application_properties.json"
    props.write_text(
        json.dumps(
            app_properties(
                source, state, prefilled.geoip, **{"batch.max.records": "50", **(job or {})}
            )
        )
    )
    return sluice(
        "flink", "run-local", "--properties", str(props), "--zip", str(zip_file),
        "--flink_master", cluster.rest, "--flink_dir", str(cluster.folder),
        *(["--wait", "--timeout_seconds", "600"] if wait else []), env=MOTO_CREDENTIALS,
        timeout=700,
    )  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(
    prefilled: Prefilled,
    app_zip: Path,
    session_flink_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The application's tables of the stream, run once without interruption."""
    state = tmp_path_factory.mktemp("app") / "state"
    state.mkdir()
    cluster = running_cluster(ClusterSettings(flink_dir=session_flink_dir))
    done = start_app(prefilled, app_zip, cluster, state, wait=True)
    assert done.returncode == 0, (done.stdout, done.stderr[-2000:])
    assert done.stdout.strip().splitlines()[-1] == "FINISHED"
    return state


def test_a_prefilled_stream_through_beam_and_the_app_gives_the_same_tables(
    prefilled: Prefilled, uninterrupted: Path
) -> None:
    # GIVEN the stream read by the Beam job (prefilled) WHEN the application reads it (uninterrupted)
    # THEN the tables agree, dead letters of every kind included
    mine = read_tables(uninterrupted)
    assert_same_tables(mine, read_tables(prefilled.beam_state))
    kinds = {r["error_type"] for r in mine["dead_letters"]}
    assert kinds >= {"invalid_json", "schema_violation", "too_late", "missing_field"}, kinds
    rows = sum(len(mine[t]) for t in ("iot_readings", "web_requests", "feed_items"))
    assert rows + len(mine["dead_letters"]) <= prefilled.sent and rows > prefilled.sent // 2


def test_a_killed_taskmanager_recovers_from_the_checkpoint_with_the_same_tables(
    prefilled: Prefilled,
    uninterrupted: Path,
    app_zip: Path,
    session_flink_dir: Path,
    tmp_path: Path,
) -> None:
    # GIVEN the application reading the stream slowly (one record per GetRecords call) and
    # checkpointing every second
    cluster = running_cluster(ClusterSettings(flink_dir=session_flink_dir))
    state = tmp_path / "state"
    state.mkdir()
    settings = WarehouseSettings(state_dir=state)
    ensure_tables(open_catalog(settings), settings)
    before = metadata_locations(state)
    slow = {"records.per.call": "1"}
    submitted = start_app(
        prefilled, app_zip, cluster, state, wait=False,
        job={"checkpoint.interval.seconds": "1"}, **slow,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job_id = submitted.stdout.strip().splitlines()[-1]

    def job() -> dict[str, Any]:
        return rest_get(cluster.rest, f"/jobs/{job_id}") or {}

    reference = read_tables(uninterrupted)
    third = sum(len(reference[t]) for t in EVENT_TABLES) // 3

    def committed_a_third() -> bool:
        if metadata_locations(state) == before:
            return False
        return sum(len(rows) for rows in read_tables(state, EVENT_TABLES).values()) >= third

    # Mid-run with open windows in state: the partials of a batch just before a checkpoint are
    # what a restore lost when their timers were not in it (PyFlink registers a Python function's
    # timers after the checkpoint; the windows are Java's now, flink_jobs/app/operators.py).
    wait_for(
        "commits of a third of the rows by the running job",
        lambda: job().get("state") == "RUNNING" and committed_a_third(),
        timeout=180,
    )
    # WHEN its only TaskManager is SIGKILLed mid-run and a fresh one started
    assert job().get("state") == "RUNNING", "the job ended before the kill"
    (tm,) = cluster.pids("taskexecutor")
    os.kill(tm, signal.SIGKILL)
    wait_for(
        "the killed TaskManager to be gone",
        lambda: tm not in cluster.pids("taskexecutor"),
        timeout=180,
    )
    fresh = sluice(
        "flink", "cluster", "start-taskmanager", "--flink_dir", str(session_flink_dir),
        env=MOTO_CREDENTIALS, timeout=300,
    )  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr
    wait_for("the job to end", lambda: job().get("state") in ("FINISHED", "FAILED"), timeout=600)

    # THEN it restarted from a checkpoint, finished, and wrote what the uninterrupted run wrote
    assert job()["state"] == "FINISHED"
    latest = (rest_get(cluster.rest, f"/jobs/{job_id}/checkpoints") or {}).get("latest") or {}
    restored = latest.get("restored") or {}
    assert restored.get("is_savepoint") is False, latest
    assert_same_tables(read_tables(state), reference)


def test_an_unreachable_kinesis_endpoint_is_one_line_at_start(
    prefilled: Prefilled, app_zip: Path, session_flink_dir: Path, tmp_path: Path
) -> None:
    # GIVEN the application pointed at a local port nothing listens on
    cluster = running_cluster(ClusterSettings(flink_dir=session_flink_dir))
    state = tmp_path / "state"
    state.mkdir()
    nobody = f"http://127.0.0.1:{free_port()}"
    # WHEN it is submitted THEN the submission stops at start with one line naming the stream, the
    # endpoint and what to check, and no job was left running
    before = {j["id"] for j in (rest_get(cluster.rest, "/jobs") or {}).get("jobs", [])}
    line = one_line(
        start_app(prefilled, app_zip, cluster, state, wait=False, **{"aws.endpoint": nobody})
    )
    assert (
        f"Kinesis source: cannot list the shards of stream {prefilled.stream} at {nobody}" in line
    )
    assert "check sluice.input (stream.arn, aws.region, aws.endpoint)" in line
    after = {j["id"] for j in (rest_get(cluster.rest, "/jobs") or {}).get("jobs", [])}
    assert after == before
