"""Event times are bounded in the contracts, and epoch numbers take their unit from their magnitude.

A device clock set to 9999 (or an epoch in seconds beyond 2e10) used to become a row whose window
arithmetic overflowed in the job on every restart; now it is an ``invalid_timestamp`` dead letter at
the parser, at the edge, and at the job's parse stage, judged against the record's arrival there.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from sluice.core.config import load_settings
from sluice.core.contracts import (
    EPOCH,
    MAX_FUTURE_SECONDS,
    Envelope,
    ErrorType,
    IotReading,
    Source,
    TimeHorizon,
    epoch_to_datetime,
)
from sluice.core.errors import ConfigError
from sluice.edges.ingest import IotRequest, ingest_iot_request, read_log_stream
from sluice.parsing.feeds import USGS_EARTHQUAKES, parse_feed_document
from sluice.parsing.iot import parse_iot_batch
from sluice.parsing.weblog import LogParser
from sluice.stream.envelopes import encode, wrap_reading
from sluice.stream.stages import InputRecord, decode_batch, window_batch

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
MS_START = datetime(2001, 9, 9, 1, 46, 40, tzinfo=UTC)
"""1e9 s: where milliseconds, microseconds and nanoseconds begin."""


def one(raw: bytes | str, **kwargs: object) -> IotReading | ErrorType:
    result = parse_iot_batch([raw], now=NOW, **kwargs)  # type: ignore[arg-type]
    if result.valid:
        return result.valid[0]
    [letter] = result.dead_letters
    return letter.error_type


def reading(ts: object) -> bytes:
    return orjson.dumps({"deviceId": "d1", "ts": ts, "t": 1})


# --- the unit rule ---


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(0, EPOCH, id="zero-is-the-epoch"),
        pytest.param(-0.0, EPOCH, id="negative-zero"),
        pytest.param(1_764_158_400, datetime(2025, 11, 26, 12, tzinfo=UTC), id="seconds"),
        pytest.param(1_764_158_400.25, datetime(2025, 11, 26, 12, 0, 0, 250000, tzinfo=UTC), id="fractional-seconds"),
        pytest.param(253_402_300_799, datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), id="year-9999-in-seconds-not-1978"),
        pytest.param(10**12, MS_START, id="1e12-is-milliseconds"),
        pytest.param(1_764_158_400_123, datetime(2025, 11, 26, 12, 0, 0, 123000, tzinfo=UTC), id="milliseconds"),
        pytest.param(10**15, MS_START, id="1e15-is-microseconds"),
        pytest.param(1_764_158_400_123_456, datetime(2025, 11, 26, 12, 0, 0, 123456, tzinfo=UTC), id="microseconds"),
        pytest.param(10**18, MS_START, id="1e18-is-nanoseconds"),
        pytest.param(1_764_158_400_123_456_789, datetime(2025, 11, 26, 12, 0, 0, 123456, tzinfo=UTC), id="nanoseconds-floor"),
        pytest.param(-1, datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), id="before-the-epoch"),
    ],
)  # fmt: skip
def test_the_magnitude_decides_the_unit(value: float, expected: datetime) -> None:
    assert epoch_to_datetime(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(10**12 - 1, id="just-below-1e12-is-seconds-past-9999"),
        pytest.param(10**15 - 1, id="just-below-1e15-is-ms-past-9999"),
        pytest.param(10**21, id="1e21-is-no-unit"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="infinity"),
        pytest.param(-1e300, id="far-negative"),
    ],
)
def test_numbers_valid_in_no_unit_are_refused(value: float) -> None:
    with pytest.raises(ValueError):
        epoch_to_datetime(value)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        pytest.param(253_402_300_799, ErrorType.INVALID_TIMESTAMP, id="seconds-of-9999"),
        pytest.param("253402300799", ErrorType.INVALID_TIMESTAMP, id="seconds-of-9999-as-text"),
        pytest.param(10**12 - 1, ErrorType.INVALID_TIMESTAMP, id="largest-seconds"),
        pytest.param(1e21, ErrorType.INVALID_TIMESTAMP, id="no-unit"),
        pytest.param("9999-12-31T23:59:59Z", ErrorType.INVALID_TIMESTAMP, id="iso-9999"),
        pytest.param("0001-01-01T00:00:00+14:00", ErrorType.INVALID_TIMESTAMP, id="offset-before-year-1"),
        pytest.param("9999-12-31T23:59:59-14:00", ErrorType.INVALID_TIMESTAMP, id="offset-after-year-9999"),
        pytest.param(-1, ErrorType.INVALID_TIMESTAMP, id="before-1970"),
        pytest.param(True, ErrorType.INVALID_TIMESTAMP, id="a-boolean-is-no-time"),
    ],
)  # fmt: skip
def test_iot_times_outside_the_horizon_or_calendar_are_invalid_timestamps(
    ts: object, expected: ErrorType
) -> None:
    # GIVEN a reading with that time WHEN parsed THEN a typed dead letter, never an exception
    assert one(reading(ts)) is expected


@pytest.mark.parametrize(
    "ts",
    [int(NOW.timestamp()), int(NOW.timestamp()) * 1000, int(NOW.timestamp()) * 10**6,
     int(NOW.timestamp()) * 10**9, str(int(NOW.timestamp())), NOW.isoformat()],
    ids=["s", "ms", "us", "ns", "s-text", "iso"],
)  # fmt: skip
def test_every_unit_of_the_same_instant_reads_the_same(ts: object) -> None:
    parsed = one(reading(ts))
    assert isinstance(parsed, IotReading) and parsed.event_time == NOW


# --- the horizon ---


def test_the_horizon_is_inclusive_at_both_ends() -> None:
    # GIVEN the default horizon around NOW
    latest = NOW + timedelta(seconds=MAX_FUTURE_SECONDS)
    # WHEN times at and just past each end are parsed THEN the ends are in, one step further is out
    assert isinstance(one(reading(latest.isoformat())), IotReading)
    assert (
        one(reading((latest + timedelta(microseconds=1)).isoformat()))
        is ErrorType.INVALID_TIMESTAMP
    )
    assert isinstance(one(reading(EPOCH.isoformat())), IotReading)
    early = (EPOCH - timedelta(microseconds=1)).isoformat()
    assert one(reading(early)) is ErrorType.INVALID_TIMESTAMP


def test_the_horizon_message_says_how_far_and_from_when() -> None:
    [letter] = parse_iot_batch([reading("9999-12-31T23:59:59Z")], now=NOW).dead_letters
    assert letter.message == (
        "event_time: 9999-12-31T23:59:59+00:00 is more than 86400 s after the time of ingestion "
        "(2026-11-30T12:00:00+00:00; a wrong clock?)"
    )


def test_the_horizon_is_configurable() -> None:
    # GIVEN a strict horizon (no future at all) and an early floor
    horizon = TimeHorizon(max_future_seconds=0, min_event_time=datetime(1900, 1, 1))
    # THEN a second ahead is refused, 1950 is accepted
    ahead = reading((NOW + timedelta(seconds=1)).isoformat())
    assert one(ahead, horizon=horizon) is ErrorType.INVALID_TIMESTAMP
    assert isinstance(one(reading("1950-06-01T00:00:00Z"), horizon=horizon), IotReading)


def test_settings_give_the_horizon_and_refuse_impossible_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_MAX_FUTURE_SECONDS", "3600")
    monkeypatch.setenv("SLUICE_MIN_EVENT_TIME", "2000-01-01T00:00:00")
    horizon = load_settings().time_horizon()
    assert horizon == TimeHorizon(3600, datetime(2000, 1, 1, tzinfo=UTC))
    for name, value in (("max_future_seconds", -1), ("min_event_time", "0001-01-01T00:00:00")):
        with pytest.raises(ConfigError, match=name):
            load_settings(**{name: value})


def test_a_weblog_line_dated_9999_is_a_dead_letter_at_the_parser_and_the_edge() -> None:
    line = b'192.0.2.1 - - [31/Dec/9999:23:59:59 +0000] "GET / HTTP/1.1" 200 1 "-" "-"'
    parsed = LogParser().parse_batch([line], now=NOW)
    assert [d.error_type for d in parsed.dead_letters] == [ErrorType.INVALID_TIMESTAMP]
    [batch] = read_log_stream(io.BytesIO(line + b"\n"), "s3://logs/a.log", LogParser(), now=NOW)
    assert batch.valid == [] and batch.dead_letters[0].error_type is ErrorType.INVALID_TIMESTAMP


def test_the_iot_edge_refuses_a_reading_from_9999_with_400() -> None:
    # GIVEN the reading that wedged the job WHEN posted THEN it is refused, a dead letter
    body = b'{"deviceId":"x","ts":"9999-12-31T23:59:59Z","t":1}'
    outcome = ingest_iot_request(IotRequest(body=body), now=NOW)
    assert (outcome.status, outcome.accepted) == (400, 0)
    assert outcome.errors[0]["error_type"] == "invalid_timestamp"


def test_feed_times_and_update_times_are_bounded_too() -> None:
    def document(time_ms: int, updated_ms: int) -> bytes:
        item = {"id": "us1", "properties": {"time": time_ms, "updated": updated_ms}}
        return orjson.dumps({"features": [item]})

    now_ms = int(NOW.timestamp() * 1000)
    future_ms = 253_402_300_799_000
    for doc in (document(future_ms, now_ms), document(now_ms, future_ms)):
        [letter] = parse_feed_document(USGS_EARTHQUAKES, doc, now=NOW).dead_letters
        assert letter.error_type is ErrorType.INVALID_TIMESTAMP


# --- the job: the horizon around each record's arrival ---


def input_record(event_time: str, arrival: datetime, sequence: int = 1) -> InputRecord:
    payload = {"device_id": "d1", "event_time": event_time, "metrics": {"t": 1.0}}
    envelope = Envelope(
        source=Source.IOT, event_id=f"e{sequence}", ingest_time=arrival, partition_key="d1",
        payload=payload,
    )  # fmt: skip
    return InputRecord(sequence, 0, arrival.timestamp(), encode(envelope))


def test_the_job_judges_event_times_by_arrival_not_by_its_clock() -> None:
    # GIVEN records that arrived in 2020: one an hour ahead of its arrival, one two days ahead
    # (both long past by the job's clock), and one from 9999 (what used to wedge the job)
    arrival = datetime(2020, 1, 1, tzinfo=UTC)
    records = [
        input_record("2020-01-01T01:00:00Z", arrival, 1),
        input_record("2020-01-03T00:00:00Z", arrival, 2),
        input_record("9999-12-31T23:59:59Z", arrival, 3),
    ]
    # WHEN decoded and windowed (lateness wide enough to keep 2020 on time)
    batch = decode_batch("shard-0", records)
    batch = window_batch(batch, 60, 10**9)  # a stage returns a new batch
    # THEN the first is an event and a window, the others invalid_timestamp dead letters
    assert [e.sequence for e in batch.events[Source.IOT]] == [1]
    assert [e.record.error_type for e in batch.dead_letters] == [ErrorType.INVALID_TIMESTAMP] * 2
    assert len(batch.iot_windows) == 1
    # and a configured horizon reaches the stage
    strict = decode_batch("shard-0", records[:1], horizon=TimeHorizon(max_future_seconds=60))
    assert strict.events[Source.IOT] == ()


def test_what_the_edge_accepts_the_job_accepts() -> None:
    # GIVEN a reading a whole day ahead, accepted at the edge WHEN it arrives a moment later
    latest = NOW + timedelta(seconds=MAX_FUTURE_SECONDS)
    [accepted] = parse_iot_batch([reading(latest.isoformat())], now=NOW).valid
    wire = encode(wrap_reading(accepted, NOW))
    batch = decode_batch("shard-0", [InputRecord(1, 0, NOW.timestamp() + 0.5, wire)])
    # THEN the job accepts it too (its reference, the arrival, is later than the edge's)
    assert [e.record for e in batch.events[Source.IOT]] == [accepted]
