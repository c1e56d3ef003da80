"""The whole stream job end to end: known envelopes on a moto Kinesis stream -> ``sluice job run`` -> six tables.

The stream lives on the session's in-process moto server (``aws_env``); the job runs in this process
through ``beam_jobs.run.main`` (FnApiRunner, the real ``ReadFromKinesis``) until it is idle, then
every table is read back with pyiceberg and compared, value by value, with what the test computed
directly from its input (``job_testkit.expect``: plain Python, not the job's code).

Event times lie in the three whole minutes before now and records arrive now, so everything is on
time except the events made 30 minutes old, which must become ``too_late`` dead letters.

Runtime: about 6 s (job start-up, a few commits, 2 s of idle time before it stops).
"""

# Beam's Python API is only partly typed.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from job_testkit import (
    TABLE_NAMES,
    Sent,
    committed_positions,
    expect,
    iot_window_values,
    mixed_input,
    read_tables,
    web_window_values,
    window_of,
)
from kinesis_testkit import arrival_times, create_stream, put_aggregated, put_records

from sluice.core.contracts import ErrorType

JobRunner = Callable[[list[str]], dict[str, int]]


def test_the_job_fills_every_table_with_exactly_what_the_stream_holds(
    aws_env: str, tmp_path: Path, geoip_dbs: tuple[Path, Path], run_job: JobRunner
) -> None:
    # GIVEN a 2-shard stream holding IoT readings of 5 devices and web requests over the 3 minutes
    # before now, feed items, every kind of invalid record, two edge dead letters and two events
    # made 30 minutes old; half of it KPL-aggregated (25 user records per Kinesis record), the rest
    # as plain records
    kinesis = boto3.client("kinesis", endpoint_url=aws_env)
    stream = create_stream(kinesis, shard_count=2)
    start = window_of(datetime.now(UTC)) - timedelta(minutes=3)
    sent = mixed_input(
        random.Random(20260302),
        start,
        span_seconds=180,
        devices=5,
        readings=150,
        requests=120,
        feed_items=6,
        too_late=2,
        invalid=1,
        edge_dead_letters=2,
    )
    late = [s for s in sent if s.error_type == ErrorType.TOO_LATE]
    others = [s for s in sent if s.error_type != ErrorType.TOO_LATE]
    random.Random(1).shuffle(others)
    aggregated, plain = others[: len(others) // 2], others[len(others) // 2 :] + late
    puts = put_aggregated(kinesis, stream, [s.user_record() for s in aggregated], 25)
    plain_puts = put_records(kinesis, stream, [(s.partition_key, s.data) for s in plain])
    last_sequence: dict[str, int] = {}
    for put in puts + plain_puts:
        last_sequence[put.shard_id] = max(
            last_sequence.get(put.shard_id, 0), int(put.sequence_number)
        )
    assert len(last_sequence) == 2, "the input must reach both shards"
    expected = expect(sent)
    city_db, asn_db = geoip_dbs
    state_dir = tmp_path / "state"

    # WHEN the job runs until it has been idle for 2 s
    counters = run_job([
        "--stream_name", stream,
        "--stop_when_idle_seconds", "2",
        "--commit_interval_seconds", "1",
        "--state_dir", str(state_dir),
        "--geoip_city_db", str(city_db),
        "--geoip_asn_db", str(asn_db),
    ])  # fmt: skip
    tables = read_tables(state_dir)

    # THEN every valid reading is one row of iot_readings, as sent
    readings = {s.event_id: s.record for s in sent if s.lands_in == "iot_readings"}
    assert (
        Counter(r["event_id"] for r in tables["iot_readings"]) == expected.event_ids["iot_readings"]
    )
    assert len(tables["iot_readings"]) == len(readings) == 150
    for row in tables["iot_readings"]:
        record = readings[row["event_id"]]
        assert (row["device_id"], row["event_time"], dict(row["metrics"]), row["message_id"]) == (
            record.device_id,
            record.event_time,
            record.metrics,
            record.message_id,
        )
    # AND iot_metrics_1m holds count/sum/min/max per device, metric and window as computed here
    assert iot_window_values(tables["iot_metrics_1m"]) == expected.iot_windows
    assert {key[2] for key in expected.iot_windows} == {
        start + timedelta(minutes=m) for m in range(3)
    }
    for row in tables["iot_metrics_1m"]:
        assert row["window_end"] - row["window_start"] == timedelta(seconds=60)
        assert row["mean"] == row["sum"] / row["count"]
        assert row["min"] <= row["p50"] <= row["p99"] <= row["max"]
    # AND web requests are stored enriched (country by client address), bots flagged, health
    # checks dropped; web_traffic_1m counts requests and bytes per path, status class and country
    web = {row["event_id"]: row for row in tables["web_requests"]}
    assert (
        Counter(r["event_id"] for r in tables["web_requests"]) == expected.event_ids["web_requests"]
    )
    assert {event_id: row["country_iso"] or "" for event_id, row in web.items()} == (
        expected.countries
    )
    assert {event_id for event_id, row in web.items() if "bot" in row["flags"]} == expected.bots
    assert expected.bots and {"GB", "US", "SE", "CN", "DE", "JP", ""} == set(
        expected.countries.values()
    )
    assert web_window_values(tables["web_traffic_1m"]) == expected.web_windows
    # AND feed items are stored, however old
    assert Counter(r["event_id"] for r in tables["feed_items"]) == expected.event_ids["feed_items"]
    assert {dict(r["fields"])["mag"] for r in tables["feed_items"]} == {"2.5"}
    # AND dead_letters holds every rejected input by error type, the edge's with their own identity
    letters = tables["dead_letters"]
    assert Counter(r["error_type"] for r in letters) == expected.dead_letters
    assert sum(expected.dead_letters.values()) == 9
    edge: dict[str, Sent] = {
        s.record.dead_letter_id: s for s in sent if s.error_type == ErrorType.UNPARSEABLE_LINE
    }
    assert {r["dead_letter_id"]: (r["stage"], r["first_seen"]) for r in letters if r["stage"] == "edge.logs"} == {
        letter_id: ("edge.logs", s.record.first_seen) for letter_id, s in edge.items()
    }  # fmt: skip
    # AND a too-late event's dead letter says when it arrived (first_seen) and its event time
    arrivals = arrival_times(kinesis, stream)
    late_arrivals = sorted(
        arrivals[(put.shard_id, put.sequence_number)] for put in plain_puts[-len(late) :]
    )
    too_late = sorted(
        (r for r in letters if r["error_type"] == "too_late"), key=lambda r: r["first_seen"]
    )
    assert [r["stage"] for r in too_late] == ["window", "window"]
    assert [r["event_time"] for r in too_late] == [start - timedelta(minutes=30)] * 2
    assert [r["first_seen"].timestamp() for r in too_late] == pytest.approx(late_arrivals, abs=1e-3)
    # AND every table's snapshot summary records the last sequence number of each shard
    shard_ends = {shard: str(sequence) for shard, sequence in last_sequence.items()}
    assert committed_positions(state_dir) == {table: shard_ends for table in TABLE_NAMES}
    # AND the job's counters agree: every user record read and parsed once
    assert counters["read.records"] == counters["parse.received"] == len(sent)
    assert counters["window.dead_lettered.too_late"] == 2
    assert counters["write.commits"] >= 1
