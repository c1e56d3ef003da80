"""``sluice job run`` options reach the job: ``--archive`` both ways, by flag and by environment."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from job_testkit import mixed_input, read_tables, window_of
from kinesis_testkit import create_stream, put_records

Cli = Callable[[list[str]], dict[str, int]]


@pytest.mark.parametrize(
    ("flags", "env", "archived"),
    [
        pytest.param([], {}, True, id="default-on"),
        pytest.param(["--archive", "off"], {}, False, id="flag-off"),
        pytest.param([], {"SLUICE_ARCHIVE": "off"}, False, id="env-off"),
        pytest.param(["--archive", "on"], {"SLUICE_ARCHIVE": "off"}, True, id="flag-beats-env"),
    ],
)
def test_archive_is_on_by_default_and_off_when_asked(
    aws_env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run_job: Cli,
    flags: list[str],
    env: dict[str, str],
    archived: bool,
) -> None:
    # GIVEN a stream holding a few readings and requests
    kinesis = boto3.client("kinesis", endpoint_url=aws_env)
    stream = create_stream(kinesis, shard_count=1)
    start = window_of(datetime.now(UTC)) - timedelta(minutes=2)
    sent = mixed_input(
        random.Random(3), start, span_seconds=60, devices=2, readings=20, requests=10
    )
    put_records(kinesis, stream, [(s.partition_key, s.data) for s in sent])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # WHEN the job reads it with the archive option given (or not)
    state = tmp_path / "state"
    counters = run_job([
        "--stream_name", stream, "--stop_when_idle_seconds", "2", "--commit_interval_seconds", "1",
        "--state_dir", str(state), *flags,
    ])  # fmt: skip
    # THEN the tables hold everything either way, and raw files exist only with the archive on
    assert counters["read.records"] == len(sent)
    tables = read_tables(state)
    for table in ("iot_readings", "web_requests"):
        assert sorted(r["event_id"] for r in tables[table]) == sorted(
            str(s.event_id) for s in sent if s.lands_in == table
        )
    raw = state / "warehouse" / "raw"
    assert (raw.is_dir() and any(raw.rglob("*.jsonl.gz"))) is archived
