"""IoT parser: every accepted device shape, every rejection typed."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.core.contracts import ErrorType, IotReading
from sluice.core.inputs import MAX_RECORD_BYTES
from sluice.parsing.iot import parse_iot_batch

T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
EPOCH = int(T0.timestamp())


@pytest.mark.parametrize(
    ("message", "device", "metrics", "attributes"),
    [
        pytest.param({"device_id": "d1", "event_time": EPOCH, "metrics": {"t": 1.5}}, "d1", {"t": 1.5}, {}, id="canonical"),
        pytest.param({"deviceId": "d2", "ts": EPOCH * 1000, "temp": 20, "fw": "1.0"}, "d2", {"temp": 20.0}, {"fw": "1.0"}, id="flat-camel-ms"),
        pytest.param({"device": "d3", "timestamp": "2026-11-26T12:00:00Z", "on": True}, "d3", {"on": 1.0}, {}, id="iso-z-bool"),
        pytest.param({"node-id": "d4", "time": "2026-11-26T12:00:00", "x": {"y": 2}}, "d4", {"x.y": 2.0}, {}, id="naive-iso-nested"),
        pytest.param({"sensorId": "d5", "Time": "2026-11-26T13:00:00+01:00", "v": -1}, "d5", {"v": -1.0}, {}, id="offset-iso"),
        pytest.param({"topic": "motion", "payload": {"node-id": "d6", "sensor": "pir", "m": 0, "timestamp": EPOCH},
                      "_msgid": "ab.1", "receivedTimestamp": "2020-01-01T00:00:00Z"},
                     "d6", {"m": 0.0}, {"sensor": "pir", "topic": "motion"}, id="mqtt-capture"),
        pytest.param({"topic": "sonoff/tele/plug-1/STATE", "payload": {"Time": "2026-11-26T12:00:00", "Wifi": {"RSSI": 94}}},
                     "plug-1", {"Wifi.RSSI": 94.0}, {"topic": "sonoff/tele/plug-1/STATE"}, id="device-from-topic"),
        pytest.param({"topic": "t", "payload": {"device_id": "d8", "n": 1}, "receivedTimestamp": "2026-11-26T12:00:00Z"},
                     "d8", {"n": 1.0}, {"topic": "t"}, id="wrapper-time-fallback"),
        pytest.param({"device_id": 17, "event_time": EPOCH, "metrics": {}}, "17", {}, {}, id="numeric-device-id"),
    ],
)  # fmt: skip
def test_accepted_shapes_normalize(message, device, metrics, attributes):
    # GIVEN a device message in one of the documented shapes
    # WHEN it is parsed
    result = parse_iot_batch([orjson.dumps(message)])
    # THEN it becomes one canonical reading at 12:00 UTC
    assert result.dead_letters == []
    [reading] = result.valid
    assert reading.device_id == device
    assert reading.event_time == T0
    assert reading.metrics == metrics
    assert reading.attributes == attributes


def test_location_and_message_id():
    raw = orjson.dumps(
        {"deviceId": "d", "ts": EPOCH, "lat": 48.1, "lng": 11.5, "msgid": 99, "t": 1}
    )
    [reading] = parse_iot_batch([raw]).valid
    assert reading.location is not None and (reading.location.lat, reading.location.lon) == (
        48.1,
        11.5,
    )
    assert reading.message_id == "99"
    assert reading.metrics == {"t": 1.0}


def test_array_record_yields_each_reading():
    raw = orjson.dumps(
        [{"device_id": "a", "ts": EPOCH}, {"device_id": "b", "ts": EPOCH}, {"ts": EPOCH}]
    )
    result = parse_iot_batch([raw])
    assert [r.device_id for r in result.valid] == ["a", "b"]
    [letter] = result.dead_letters
    assert letter.error_type == ErrorType.MISSING_FIELD
    assert orjson.loads(letter.raw) == {"ts": EPOCH}


@pytest.mark.parametrize(
    ("raw", "error_type"),
    [
        pytest.param(b'{"device_id": "x"', ErrorType.INVALID_JSON, id="truncated-json"),
        pytest.param(b"\xff\xfe{}", ErrorType.INVALID_ENCODING, id="not-utf8"),
        pytest.param(b'{"ts": 1}', ErrorType.MISSING_FIELD, id="no-device"),
        pytest.param(b'{"device_id": "x"}', ErrorType.MISSING_FIELD, id="no-time"),
        pytest.param(b'{"device_id": "x", "ts": "yesterday"}', ErrorType.INVALID_TIMESTAMP, id="bad-time"),
        pytest.param(b'{"device_id": "x", "ts": 1e30}', ErrorType.INVALID_TIMESTAMP, id="time-overflow"),
        pytest.param(b'{"device_id": "x", "ts": 1, "metrics": {"a": "hot"}}', ErrorType.SCHEMA_VIOLATION, id="metric-not-number"),
        pytest.param(b'{"device_id": "x", "ts": 1, "location": {"lat": 91, "lon": 0}}', ErrorType.SCHEMA_VIOLATION, id="lat-out-of-range"),
        pytest.param(b'"just a string"', ErrorType.SCHEMA_VIOLATION, id="not-an-object"),
        pytest.param(b'["a"]', ErrorType.SCHEMA_VIOLATION, id="array-of-strings"),
        pytest.param(b'{"device_id": "x", "ts": 1, "a": ' * 12 + b"1" + b"}" * 12, ErrorType.SCHEMA_VIOLATION, id="too-deep"),
        pytest.param(b"[" * 5000 + b"]" * 5000, ErrorType.INVALID_JSON, id="recursion-limit"),
        pytest.param(b" " * (MAX_RECORD_BYTES + 1), ErrorType.TOO_LARGE, id="too-large"),
    ],
)  # fmt: skip
def test_rejections_are_typed_dead_letters(raw, error_type):
    # GIVEN a bad record  WHEN parsed  THEN one dead letter of the expected type, nothing valid
    result = parse_iot_batch([raw])
    assert result.valid == []
    assert [d.error_type for d in result.dead_letters] == [error_type]
    assert result.dead_letters[0].source == "iot"
    assert result.dead_letters[0].message


def test_bad_record_does_not_spoil_the_batch():
    good = orjson.dumps({"device_id": "ok", "ts": EPOCH})
    result = parse_iot_batch([good, b"{", good])
    assert len(result.valid) == 2 and len(result.dead_letters) == 1


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), json_values.map(orjson.dumps)))
def test_no_input_makes_the_parser_raise(raw):
    # Every record is accounted for: valid readings, typed dead letters or a skipped blank record,
    # never an exception.
    result = parse_iot_batch([raw])

    def leaves(value):
        return sum(leaves(v) for v in value) if isinstance(value, list) else 1

    if not raw.strip():
        assert (result.skipped, result.valid, result.dead_letters) == (1, [], [])
        return
    try:
        # arrays (nested too) are readings' containers; one without any reading is one rejection
        decoded_items = max(1, leaves(orjson.loads(raw)))
    except orjson.JSONDecodeError:
        decoded_items = None
    produced = len(result.valid) + len(result.dead_letters)
    assert produced == (decoded_items if decoded_items is not None else 1)


readings = st.builds(
    IotReading,
    device_id=st.text(
        st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=30
    ).filter(lambda s: s.strip() == s and s != ""),
    event_time=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)
    ),
    metrics=st.dictionaries(
        st.text(max_size=10), st.floats(allow_nan=False, allow_infinity=False), max_size=5
    ),
    attributes=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(readings)
def test_valid_readings_round_trip_through_the_wire(reading):
    # GIVEN a valid reading  WHEN encoded as the edges do and parsed back  THEN it is unchanged
    [back] = parse_iot_batch([reading.model_dump_json()]).valid
    assert back == reading
