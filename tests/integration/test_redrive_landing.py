"""Re-driven dead letters land exactly once: never ``too_late``, de-duplicated by event id in the writer.

Against real Iceberg tables (SQLite catalog), like ``test_stream_warehouse.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sluice.core.contracts import Envelope, ErrorType, IotReading, Source, WebAccessLog
from sluice.stream.envelopes import encode, wrap_access_log, wrap_reading
from sluice.stream.stages import InputRecord, decode_batch, window_batch
from sluice.tables.warehouse import (
    ExactlyOnceWriter,
    WarehouseSettings,
    ensure_tables,
    open_catalog,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(days=2)  # long after the 12:00 window closed


def reading(i: int, at: datetime = T0) -> IotReading:
    return IotReading(device_id="d1", event_time=at + timedelta(seconds=i), metrics={"t": float(i)})


def redriven(envelope: Envelope, letter_id: str = "dl-1") -> Envelope:
    return envelope.model_copy(update={"redrive_of": letter_id})


def record(seq: int, envelope: Envelope, arrival: datetime) -> InputRecord:
    return InputRecord(seq, 0, arrival.timestamp(), encode(envelope))


def make_batch(records: list[InputRecord], previous: int | None = None, shard: str = "s"):
    return window_batch(decode_batch(shard, records, previous_sequence=previous), 60, 600)


@pytest.fixture
def tables(tmp_path):
    settings = WarehouseSettings(state_dir=tmp_path / "state")
    catalog = open_catalog(settings)
    return ensure_tables(catalog, settings)


def iot_windows(tables) -> list[tuple[str, datetime, int, float]]:
    rows = tables["iot_metrics_1m"].refresh().scan().to_arrow().to_pylist()
    return sorted((r["device_id"], r["window_start"], r["count"], r["sum"]) for r in rows)


def test_envelope_omits_redrive_of_when_unset():
    plain = wrap_reading(reading(1), ingest_time=T0)
    assert b"redrive_of" not in encode(plain)
    marked = redriven(plain)
    assert Envelope.model_validate_json(encode(marked)) == marked
    assert Envelope.model_validate_json(encode(marked)).redrive_of == "dl-1"


def test_a_redriven_old_event_is_not_too_late_and_updates_its_old_window(tables):
    writer = ExactlyOnceWriter(tables, 60)
    writer.add(make_batch([record(1, wrap_reading(reading(1), ingest_time=T0), T0)]))
    writer.flush()
    # GIVEN the same kind of old event, arriving two days late: plain, then re-driven
    late = wrap_reading(reading(2), ingest_time=LATER)
    fix = redriven(wrap_reading(reading(3), ingest_time=LATER))
    batch = make_batch([record(2, late, LATER), record(3, fix, LATER)], previous=1)
    # THEN only the plain one is too late; the re-driven one goes on to its 12:00 window
    assert [d.record.error_type for d in batch.dead_letters] == [ErrorType.TOO_LATE]
    assert [(e.event_id, e.redrive_of) for e in batch.events[Source.IOT]] == [
        (fix.event_id, "dl-1")
    ]
    writer.add(batch)
    writer.flush()
    assert iot_windows(tables) == [("d1", T0, 2, 4.0)]
    ids = tables["iot_readings"].refresh().scan().to_arrow().column("event_id").to_pylist()
    assert sorted(ids) == sorted([wrap_reading(reading(1), ingest_time=T0).event_id, fix.event_id])


def test_a_redriven_envelope_delivered_twice_lands_once(tables):
    writer = ExactlyOnceWriter(tables, 60)
    web = WebAccessLog(client_ip="198.51.100.1", event_time=T0, status=200, path="/p/1")
    fix = redriven(wrap_access_log(web, "redrive", "dl-9", ingest_time=T0), "dl-9")
    fixes = [redriven(wrap_reading(reading(i), ingest_time=T0), f"dl-{i}") for i in (1, 2)]
    # GIVEN a re-drive delivered, then delivered again (crash before the letters were deleted),
    # the second time next to a normal event of the same window
    other = wrap_reading(reading(5), ingest_time=LATER - timedelta(days=2))
    first = make_batch([record(1, fixes[0], LATER), record(2, fixes[1], LATER),
                        record(3, fix, LATER)])  # fmt: skip
    writer.add(first)
    writer.flush()
    second = make_batch([record(4, fixes[0], LATER), record(5, other, T0 + timedelta(seconds=30)),
                         record(6, fixes[1], LATER), record(7, fix, LATER)], previous=3)  # fmt: skip
    writer.add(second)
    report = writer.flush()
    # THEN each re-driven event id is one row, and the windows count it once
    assert report.redrive_duplicates == 3
    ids = tables["iot_readings"].refresh().scan().to_arrow().column("event_id").to_pylist()
    assert sorted(ids) == sorted([fixes[0].event_id, fixes[1].event_id, other.event_id])
    assert iot_windows(tables) == [("d1", T0, 3, 8.0)]
    web_ids = tables["web_requests"].refresh().scan().to_arrow().column("event_id").to_pylist()
    assert web_ids == [fix.event_id]
    traffic = tables["web_traffic_1m"].refresh().scan().to_arrow().to_pylist()
    assert [(w["path"], w["requests"]) for w in traffic] == [("/p/1", 1)]
    assert writer.positions["iot_readings"] == writer.positions["iot_metrics_1m"] == {"s": 7}


def test_a_redriven_envelope_twice_in_one_flush_lands_once(tables):
    writer = ExactlyOnceWriter(tables, 60)
    fix = redriven(wrap_reading(reading(1), ingest_time=T0))
    writer.add(make_batch([record(1, fix, LATER), record(2, fix, LATER)]))
    writer.add(make_batch([record(3, fix, LATER)], previous=2))
    assert writer.flush().redrive_duplicates == 2
    assert tables["iot_readings"].refresh().scan().to_arrow().num_rows == 1
    assert iot_windows(tables) == [("d1", T0, 1, 1.0)]


def test_plain_duplicates_land_once_and_only_off_they_are_not_looked_up(tables, monkeypatch):
    plain = wrap_reading(reading(1), ingest_time=T0)
    # GIVEN the same normal envelope at two positions (an edge retried), committed in two flushes
    writer = ExactlyOnceWriter(tables, 60)
    writer.add(make_batch([record(1, plain, T0)]))
    writer.flush()
    batch = make_batch([record(2, plain, T0 + timedelta(seconds=30))], previous=1)
    assert batch.redriven == 0
    writer.add(batch)
    report = writer.flush()
    # THEN the copy is no second row and is not counted twice
    assert (report.duplicates, report.redrive_duplicates) == (1, 0)
    assert tables["iot_readings"].refresh().scan().to_arrow().num_rows == 1
    assert iot_windows(tables) == [("d1", T0, 1, 1.0)]
    # AND with de-duplication off, plain events are never looked up (re-driven ones still are)
    off = ExactlyOnceWriter(tables, 60, deduplicate=False)

    def no_lookup(*args, **kwargs):
        raise AssertionError("no event-id lookup without re-driven events")

    monkeypatch.setattr(off, "_landed", no_lookup)
    off.add(make_batch([record(3, plain, T0 + timedelta(seconds=40))], previous=2))
    assert off.flush().duplicates == 0
    assert tables["iot_readings"].refresh().scan().to_arrow().num_rows == 2
