"""The stream job end to end against records that used to wedge it, and copies an edge sent twice.

A moto Kinesis stream (the session's in-process server, ``aws_env``) holds good readings and
requests, poison records and copies; ``sluice job run`` runs in this process until idle, twice
(the second run is the restart), and the tables are read back.

- Poison: a reading dated 9999-12-31T23:59:59Z (its window would end in year 10000; it once made
  every restart fail with ``OverflowError`` building window rows) and a request whose
  ``bytes_sent`` no long column can hold. Whichever stage refuses them (the contracts may bound such
  values at parse), each is one dead letter with its reason, and everything else lands.
- Copies: the same envelopes put again on the other shard and in a second plain/aggregated form, some
  twice in one batch, some only after the first run (minutes later, to a restarted job): each event
  id is one row and is counted once in the windows.

Runtime: about 10 s (two job runs, each with 2 s of idle time before it stops).
"""

# Beam's Python API is only partly typed.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
from job_testkit import (
    CLIENTS,
    INGEST_TIME,
    committed_positions,
    expect,
    iot_window_values,
    read_tables,
    reading,
    request,
    web_window_values,
    window_of,
)
from kinesis_testkit import create_stream, put_aggregated, put_records

JobRunner = Callable[[list[str]], dict[str, int]]


def _envelope(source: str, event_id: str, payload: dict[str, object]) -> bytes:
    return json.dumps(
        {
            "source": source,
            "event_id": event_id,
            "ingest_time": INGEST_TIME.isoformat(),
            "partition_key": event_id,
            "payload": payload,
        }
    ).encode()


def test_poison_records_become_dead_letters_and_copies_land_once_across_a_restart(
    aws_env: str, tmp_path: Path, run_job: JobRunner
) -> None:
    kinesis = boto3.client("kinesis", endpoint_url=aws_env)
    stream = create_stream(kinesis, shard_count=2)
    start = window_of(datetime.now(UTC)) - timedelta(minutes=2)
    readings = [
        reading(f"dev-{n % 3}", start + timedelta(seconds=n), n, temperature=float(n))
        for n in range(60)
    ]
    # the last client is in no GeoIP network (the job runs without GeoIP here)
    requests = [request(start + timedelta(seconds=n), CLIENTS[-1], n) for n in range(30)]
    poison = [
        _envelope("iot", "poison-time", {"device_id": "clock", "event_time": "9999-12-31T23:59:59Z",
                                          "metrics": {"t": 1}}),
        _envelope("weblog", "poison-bytes", {"client_ip": "10.0.0.9", "status": 200, "path": "/x",
                                              "event_time": start.isoformat(),
                                              "bytes_sent": 2**64}),
    ]  # fmt: skip
    # GIVEN the good records aggregated on one shard, the poison between them as plain records,
    # and copies of some: again aggregated, plain on the other shard, and twice in one record
    good = readings + requests
    put_aggregated(kinesis, stream, [s.user_record() for s in good[:45]], 15)
    put_records(kinesis, stream, [(f"poison-{i}", data) for i, data in enumerate(poison)])
    put_aggregated(kinesis, stream, [s.user_record() for s in good[45:]], 15)
    copies = readings[:10] + requests[:5]
    put_records(kinesis, stream, [("other-shard", s.data) for s in copies])
    put_aggregated(kinesis, stream, [s.user_record() for s in readings[10:20] * 2], 20)
    state = tmp_path / "state"
    flags = ["--stream_name", stream, "--stop_when_idle_seconds", "2",
             "--commit_interval_seconds", "0.5", "--state_dir", str(state)]  # fmt: skip

    # WHEN the job runs until idle
    first = run_job(flags)
    tables = read_tables(state)

    # THEN every good event is one row and counted once; each poison record is one dead letter
    expected = expect(good)
    assert (
        Counter(r["event_id"] for r in tables["iot_readings"]) == expected.event_ids["iot_readings"]
    )
    assert (
        Counter(r["event_id"] for r in tables["web_requests"]) == expected.event_ids["web_requests"]
    )
    assert iot_window_values(tables["iot_metrics_1m"]) == expected.iot_windows
    assert web_window_values(tables["web_traffic_1m"]) == expected.web_windows
    letters = tables["dead_letters"]
    assert sorted(r["error_type"] for r in letters) == ["invalid_timestamp", "schema_violation"]
    assert all(r["message"] for r in letters)
    assert first["write.duplicates"] == 35

    # WHEN more copies arrive later and the job is started again
    put_records(kinesis, stream, [("late-copies", s.data) for s in readings[:5] + requests[5:10]])
    second = run_job(flags)
    again = read_tables(state)

    # THEN the restart is clean, and the tables are as before: the copies landed nowhere
    assert second["write.duplicates"] == 10
    for name in ("iot_readings", "web_requests", "dead_letters"):
        assert len(again[name]) == len(tables[name]), name
    assert iot_window_values(again["iot_metrics_1m"]) == expected.iot_windows
    assert web_window_values(again["web_traffic_1m"]) == expected.web_windows
    # AND every table recorded its final positions at the clean stop
    positions = committed_positions(state)
    assert all(p == positions["iot_readings"] for p in positions.values())
