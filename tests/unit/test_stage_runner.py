"""``StageRunner`` runs the stages in the job's order and equals calling them one by one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sluice.core.config import CoreSettings
from sluice.core.contracts import ErrorType, IotReading, Source
from sluice.stream.envelopes import encode, wrap_reading
from sluice.stream.run import StageRunner
from sluice.stream.stages import InputRecord, decode_batch, filter_batch, window_batch
from sluice.transform.filters import RecordFilter

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _records() -> list[InputRecord]:
    out = []
    for i in range(6):
        at = T0 + timedelta(seconds=10 * i)
        reading = IotReading(device_id=f"d{i % 2}", event_time=at, metrics={"temp": float(i)})
        out.append(InputRecord(100 + i, 0, (at + timedelta(seconds=1)).timestamp(),
                               encode(wrap_reading(reading, ingest_time=at))))  # fmt: skip
    late = IotReading(device_id="d0", event_time=T0, metrics={"temp": 9.0})
    out.append(
        InputRecord(
            200,
            0,
            (T0 + timedelta(hours=2)).timestamp(),
            encode(wrap_reading(late, ingest_time=T0)),
        )
    )
    out.append(InputRecord(201, 0, T0.timestamp(), b"{not json"))
    return out


def test_runner_equals_the_stages_called_one_by_one():
    settings = CoreSettings()
    with StageRunner(settings) as runner:
        batch = runner.run("shardId-000000000000", _records(), previous_sequence=99)
    by_hand = decode_batch("shardId-000000000000", _records(), previous_sequence=99,
                           horizon=settings.time_horizon())  # fmt: skip
    filters = {source: RecordFilter(settings.filter_rules, source.value) for source in Source}
    by_hand = window_batch(filter_batch(by_hand, filters), 60, settings.allowed_lateness_seconds)

    assert len(batch.events[Source.IOT]) == 6
    assert sorted(e.record.error_type for e in batch.dead_letters) == [
        ErrorType.INVALID_JSON,
        ErrorType.TOO_LATE,
    ]
    assert batch.previous_sequence == 99 and batch.last_sequence == 201
    assert batch.iot_windows.keys() == by_hand.iot_windows.keys() and len(batch.iot_windows) == 2
    assert batch.counters == by_hand.counters
