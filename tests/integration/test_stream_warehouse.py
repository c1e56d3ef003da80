"""Stream stages over batches and the exactly-once writer, against real Iceberg tables (SQLite catalog)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sluice.core.contracts import ErrorType, IotReading, Source, WebAccessLog
from sluice.stream.envelopes import encode, wrap_access_log, wrap_reading
from sluice.stream.stages import InputRecord, decode_batch, filter_batch, window_batch
from sluice.tables.warehouse import (
    ExactlyOnceWriter,
    WarehouseSettings,
    ensure_tables,
    open_catalog,
    table_positions,
)
from sluice.transform.filters import DEFAULT_RULES, RecordFilter

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def reading(i: int, device: str = "d1", at: datetime = T0) -> IotReading:
    return IotReading(
        device_id=device, event_time=at + timedelta(seconds=i), metrics={"t": float(i)}
    )


def records_for(readings, start_seq: int, arrival: datetime) -> list[InputRecord]:
    return [
        InputRecord(
            start_seq + i, 0, arrival.timestamp(), encode(wrap_reading(r, ingest_time=arrival))
        )
        for i, r in enumerate(readings)
    ]


def make_batch(shard, records, previous=None):
    batch = decode_batch(shard, records, previous_sequence=previous)
    batch = filter_batch(batch, {Source.WEBLOG: RecordFilter(DEFAULT_RULES, "weblog")})
    return window_batch(batch, 60, 600)


@pytest.fixture
def warehouse(tmp_path):
    settings = WarehouseSettings(state_dir=tmp_path / "state")
    catalog = open_catalog(settings)
    return settings, catalog, ensure_tables(catalog, settings)


def test_decode_batch_splits_sources_and_dead_letters():
    arrival = T0 + timedelta(seconds=5)
    web = WebAccessLog(client_ip="1.2.3.4", event_time=T0, status=200, path="/")
    records = [
        *records_for([reading(1)], 10, arrival),
        InputRecord(11, 0, arrival.timestamp(), encode(wrap_access_log(web, "f", 1, arrival))),
        InputRecord(12, 0, arrival.timestamp(), b"{not json"),
        InputRecord(13, 0, arrival.timestamp(), b'{"source": "iot", "event_id": "x", "ingest_time": "2026-01-01T00:00:00Z", "partition_key": "k", "payload": {"device_id": "d"}}'),
    ]  # fmt: skip
    batch = decode_batch("shard-0", records)
    assert [len(batch.events[s]) for s in Source] == [1, 1, 0]
    assert sorted(d.record.error_type for d in batch.dead_letters) == [
        ErrorType.INVALID_JSON,
        ErrorType.MISSING_FIELD,
    ]
    # job-made dead letters are deterministic: same position, same id, first_seen = arrival
    again = decode_batch("shard-0", records)
    assert [d.event_id for d in again.dead_letters] == [d.event_id for d in batch.dead_letters]
    assert all(d.record.first_seen == arrival for d in batch.dead_letters)


def test_too_late_is_decided_by_arrival_time():
    # GIVEN events of the 12:00 window arriving on time, within lateness, and after it
    on_time = records_for([reading(1)], 1, T0 + timedelta(seconds=30))
    late_ok = records_for([reading(2)], 2, T0 + timedelta(minutes=10))
    too_late = records_for([reading(3)], 3, T0 + timedelta(minutes=11, seconds=1))
    batch = make_batch("s", on_time + late_ok + too_late)
    # THEN two events count in the window, one is a too_late dead letter
    assert [e.record.metrics["t"] for e in batch.events[Source.IOT]] == [1.0, 2.0]
    assert [d.record.error_type for d in batch.dead_letters] == [ErrorType.TOO_LATE]
    [(key, stats)] = batch.iot_windows.items()
    assert key == ("d1", "t", T0) and stats.count == 2


def test_writer_commits_rows_and_positions_and_merges_late_data(warehouse):
    _, _, tables = warehouse
    writer = ExactlyOnceWriter(tables, 60)
    first = make_batch(
        "s", records_for([reading(i) for i in range(5)], 100, T0 + timedelta(seconds=10))
    )
    writer.add(first)
    report = writer.flush()
    assert report.rows["iot_readings"] == 5 and report.rows["iot_metrics_1m"] == 1
    assert table_positions(tables["iot_readings"]) == {"s": 104}
    # late data within lateness updates the window in place: still one row, count 7
    late = make_batch(
        "s", records_for([reading(10), reading(11)], 105, T0 + timedelta(minutes=5)), previous=104
    )
    writer.add(late)
    writer.flush()
    windows = tables["iot_metrics_1m"].refresh().scan().to_arrow().to_pylist()
    assert [(w["device_id"], w["count"], w["max"]) for w in windows] == [("d1", 7, 11.0)]
    # the tables that got something are at 106; the idle ones record it at a clean stop
    assert writer.positions["iot_readings"] == writer.positions["iot_metrics_1m"] == {"s": 106}
    assert writer.positions["feed_items"] == {"s": 104}
    assert writer.catch_up() == ["web_traffic_1m", "web_requests", "feed_items", "dead_letters"]
    assert all(p == {"s": 106} for p in writer.positions.values())
    assert all(table_positions(t.refresh()) == {"s": 106} for t in tables.values())


def test_restart_replaying_overlapping_batches_writes_nothing_twice(warehouse):
    settings, catalog, tables = warehouse
    readings = [reading(i, device=f"d{i % 3}") for i in range(30)]
    arrival = T0 + timedelta(seconds=59)
    # GIVEN a run that committed the first 20 records, then died
    writer = ExactlyOnceWriter(tables, 60)
    writer.add(make_batch("s", records_for(readings[:20], 0, arrival)))
    writer.flush()
    # WHEN a new writer resumes and the source re-reads from an earlier point (batch boundaries differ)
    resumed = ExactlyOnceWriter(ensure_tables(catalog, settings), 60)
    assert resumed.resume_positions() == {"s": 19}
    resumed.add(make_batch("s", records_for(readings[10:30], 10, arrival)))
    resumed.flush()
    # THEN every table holds each record once, and the windows count 30 readings
    rows = tables["iot_readings"].refresh().scan().to_arrow()
    assert rows.num_rows == 30 and len(set(rows.column("event_id").to_pylist())) == 30
    windows = tables["iot_metrics_1m"].refresh().scan().to_arrow().to_pylist()
    assert sum(w["count"] for w in windows) == 30 and len(windows) == 3


def test_out_of_order_batches_wait_for_their_predecessor(warehouse):
    _, _, tables = warehouse
    writer = ExactlyOnceWriter(tables, 60)
    arrival = T0 + timedelta(seconds=30)
    a = make_batch("s", records_for([reading(1)], 1, arrival))
    b = make_batch("s", records_for([reading(2)], 2, arrival), previous=1)
    c = make_batch("s", records_for([reading(3)], 3, arrival), previous=2)
    writer.add(a)
    writer.flush()
    writer.add(c)  # c arrives before b
    report = writer.flush()
    assert report.held_back == 1 and table_positions(tables["iot_readings"]) == {"s": 1}
    writer.add(b)
    writer.flush()
    assert table_positions(tables["iot_readings"]) == {"s": 3}
    assert tables["iot_readings"].refresh().scan().to_arrow().num_rows == 3


def test_a_window_flush_rewrites_only_the_windows_it_changes(warehouse):
    """A backlog drained in many flushes: each flush's window commit writes the rows of the windows
    it changed (and once, apart, the other rows of a file it replaces), not every window stored in
    the partition so far. Before, each rewrite carried all the rows of the file it replaced, so
    that file grew by a window at every flush and a flush's work and memory grew with the backlog."""
    _, _, tables = warehouse
    writer = ExactlyOnceWriter(tables, 60)
    previous = None
    written = []
    for minute in range(8):
        # GIVEN flushes of 4 readings from :30 of one minute to :15 of the next, two devices: each
        # flush changes its first window (which the flush before wrote) and a new one
        at = T0 + timedelta(minutes=minute, seconds=30)
        readings = [
            IotReading(device_id=f"d{i % 2}", event_time=at + timedelta(seconds=15 * i),
                       metrics={"t": float(i)})
            for i in range(4)
        ]  # fmt: skip
        arrival = at + timedelta(minutes=1)
        batch = make_batch("s", records_for(readings, 10 * minute + 1, arrival), previous)
        previous = batch.last_sequence
        writer.add(batch)
        written.append(writer.flush().rows["iot_metrics_1m"])
    # THEN the first flush writes its 2 windows' 4 rows; every later one its 2 windows' 4 rows and
    # the 2 rows of the window before them, out of the file it replaces: never the whole day
    assert written == [4] + [6] * 7
    rows = tables["iot_metrics_1m"].refresh().scan().to_arrow()
    assert rows.num_rows == 18  # 9 windows x 2 devices, each once
    assert sorted(rows.column("count").to_pylist()) == [1] * 4 + [2] * 14
