"""The columnar IoT parse gives exactly what the record path gives: the same valid readings (as
models and byte for byte as JSON lines), the same dead letters in the same order with the same
reasons and error types, the same counts. Property tests over generated records, valid and bad."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit import samples
from sluice.core.contracts import TimeHorizon
from sluice.parsing.iot import Sentinels, parse_iot_batch
from sluice.parsing.iot_columns import parse_iot_columns

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def assert_same(records: list[Any], **options: Any) -> None:
    reference = parse_iot_batch(records, now=NOW, **options)
    columnar = parse_iot_columns(records, now=NOW, **options)
    expected_lines = b"".join(r.model_dump_json().encode() + b"\n" for r in reference.valid)
    assert columnar.columns.json_lines() == expected_lines
    assert [r.model_dump() for r in columnar.columns.readings()] == [
        r.model_dump() for r in reference.valid
    ]
    assert columnar.to_result().valid == reference.valid
    letters = [d.model_dump(exclude={"first_seen"}) for d in columnar.dead_letters]
    assert letters == [d.model_dump(exclude={"first_seen"}) for d in reference.dead_letters]
    assert columnar.skipped == reference.skipped
    assert columnar.suppressed == reference.suppressed
    assert columnar.missing_metrics == reference.missing_metrics
    assert columnar.rejected == reference.rejected
    assert len(columnar.columns) + columnar.rejected + columnar.skipped >= len(records) - sum(
        1 for r in records if isinstance(r, bytes) and r.lstrip().startswith(b"[")
    )


# --- generated readings -----------------------------------------------------------------------

base = NOW.timestamp()
texts = st.text(max_size=12)
device_ids = st.one_of(
    st.sampled_from(["device-0001", "d", "", "a\x00b", "x" * 256, "x" * 257, "tab\there", "é"]),
    texts,
    st.integers(-5, 5),
    st.none(),
    st.booleans(),
)
iso_times = st.builds(
    lambda seconds, fraction, zone: (
        (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S") + fraction + zone
    ),
    st.integers(-200_000, 2_000_000_000),
    st.sampled_from(["", ".1", ".123", ".123456", ".1234567", ",5"]),
    st.sampled_from(["", "Z", "+00:00", "+01:00", "-00:00", "z", " "]),
)
event_times = st.one_of(
    st.floats(base - 1e9, base + 200_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**64), 2**64),
    st.integers(int(base * 1000) - 10**9, int(base * 1000) + 10**9),
    st.integers(int(base * 10**6) - 10**12, int(base * 10**6) + 10**12),
    st.integers(int(base * 10**9) - 10**15, int(base * 10**9) + 10**15),
    iso_times,
    st.sampled_from(
        [
            "2026-02-30T00:00:00",
            "2026-13-01T00:00:00",
            "2026-11-26T24:00:00",
            "2026-11-26",
            "1700000000",
            "0000-01-01T00:00:00",
            "0001-01-01T00:00:00Z",
            "2026-11-26T12:00:60",
            "",
            "now",
            "2026-11-26 12:00:00",
        ]
    ),
    st.none(),
    st.booleans(),
)
metric_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**63), 2**64 - 1),
    st.booleans(),
    st.sampled_from(["1.5", "NaN", "x", None]),
    st.just({"nested": 1.0}),
    st.just([1, 2]),
    st.just(-200),
)
metric_names = st.sampled_from(["temperature", "humidity", "co2", "a.b", "", "location"])
metrics = st.dictionaries(metric_names, metric_values, max_size=4)
attributes = st.dictionaries(
    st.sampled_from(["firmware", "site", "k"]),
    st.one_of(texts, st.integers(0, 3), st.none(), st.just("NaN")),
    max_size=3,
)
locations = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "lat": st.one_of(st.floats(-100, 100), st.integers(-95, 95), st.booleans()),
            "lon": st.one_of(st.floats(-200, 200), st.integers(-190, 190)),
        }
    ),
    st.just({"lat": 1.0}),
    st.just({"lat": 1.0, "lon": 2.0, "alt": 3.0}),
    st.just("here"),
)
optional = st.sampled_from([True, False])


def mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` four times in five: most generated readings pass, so the fast path is exercised."""
    return st.integers(0, 4).flatmap(lambda pick: other if pick == 0 else valid)


valid_ids = st.sampled_from(["device-0001", "d", "x" * 256, "é", "device-0002"])
valid_times = st.one_of(
    st.floats(base - 1e8, base + 80_000),
    st.integers(int(base) - 10**8, int(base) + 80_000),
    st.integers(int(base * 1000) - 10**9, int(base * 1000) + 10**7),
    st.floats(base * 1e3 - 1e9, base * 1e3 + 1e7),
    st.floats(base * 1e6 - 1e12, base * 1e6 + 1e10),
    st.integers(int(base * 10**6) - 10**12, int(base * 10**6) + 10**10),
    st.floats(base * 1e9 - 1e15, base * 1e9 + 1e13),
    st.integers(int(base * 10**9) - 10**15, int(base * 10**9) + 10**13),
    iso_times,
)
valid_metrics = st.dictionaries(
    metric_names, st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-9, 9)),
    max_size=4,
)  # fmt: skip


@st.composite
def canonical(draw: st.DrawFn) -> dict[str, Any]:
    reading: dict[str, Any] = {}
    if draw(st.integers(0, 30)):
        reading["device_id"] = draw(mostly(valid_ids, device_ids))
    if draw(st.integers(0, 30)):
        reading["event_time"] = draw(mostly(valid_times, event_times))
    if draw(st.integers(0, 5)):
        reading["metrics"] = draw(mostly(valid_metrics, st.one_of(metrics, st.none(), st.just([]))))
    if draw(optional):
        reading["attributes"] = draw(
            mostly(st.dictionaries(st.sampled_from(["k", "site"]), texts, max_size=2),
                   st.one_of(attributes, st.just("x")))
        )  # fmt: skip
    if draw(optional):
        reading["location"] = draw(locations)
    if draw(optional):
        reading["message_id"] = draw(mostly(st.one_of(st.none(), texts), st.integers(0, 9)))
    if not draw(st.integers(0, 5)):
        reading["flags"] = draw(
            mostly(st.lists(texts, max_size=2), st.one_of(st.just([1]), st.just("f"), st.none()))
        )
    if not draw(st.integers(0, 30)):
        reading["extra"] = 1
    return reading


@st.composite
def flat(draw: st.DrawFn) -> dict[str, Any]:
    reading: dict[str, Any] = {
        draw(st.sampled_from(["deviceId", "sensor_id", "node-id"])): draw(
            mostly(valid_ids, device_ids)
        ),
        draw(st.sampled_from(["ts", "timestamp", "time"])): draw(mostly(valid_times, event_times)),
    }
    reading.update(draw(mostly(valid_metrics, metrics)))
    if draw(optional):
        reading["lat"], reading["lon"] = draw(st.floats(-95, 95)), draw(st.floats(-185, 185))
    if draw(optional):
        reading["status"] = draw(texts)
    return reading


@st.composite
def mqtt(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "topic": f"site/{draw(st.sampled_from(['dev-1', 'x']))}/telemetry",
        "payload": {
            **draw(mostly(valid_metrics, metrics)),
            "timestamp": draw(mostly(valid_times, event_times)),
        },
        "_msgid": draw(st.one_of(texts, st.integers(0, 9), st.just([1]))),
    }


def encoded(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an int beyond 64 bits: a record orjson cannot read back either
        return b'{"device_id": "big", "event_time": 1e400}'


junk = st.sampled_from(
    [b"", b"   ", b"\t\n", b'{"device_id": "broken', b"\xff\xfe", b"[]", b"[[], []]", b"1",
     b'"text"', b"null", b'[{"device_id": "a", "event_time": 1764590400}, 3]',
     b'{"device_id": "a", "event_time": 1764590400, "device_id": "b"}',
     b'{"device_id": "a",\n "event_time": 1764590400}', b"x" * 300_000]
)  # fmt: skip
records = st.one_of(
    st.builds(encoded, canonical()),
    st.builds(encoded, canonical()),
    st.builds(encoded, canonical()),
    st.builds(encoded, flat()),
    st.builds(encoded, mqtt()),
    st.builds(lambda readings: encoded(readings), st.lists(canonical(), max_size=3)),
    junk,
)
as_text = st.sampled_from([False, False, True])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, max_size=25), as_text)
def test_columns_equal_the_record_path(batch: list[bytes], text: bool) -> None:
    if text:
        batch_any: list[Any] = [r.decode("utf-8", "surrogateescape") for r in batch]
    else:
        batch_any = list(batch)
    assert_same(batch_any)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(records, max_size=30),
    st.integers(1, 5),
    st.sampled_from([Sentinels(), Sentinels([-200, "NaN"]), Sentinels([0.0])]),
    st.sampled_from(
        [
            TimeHorizon(),
            TimeHorizon(max_future_seconds=0),
            TimeHorizon(min_event_time=datetime(1, 1, 2, tzinfo=UTC)),
        ]
    ),
)
def test_columns_equal_with_caps_sentinels_and_horizons(
    batch: list[bytes], cap: int, sentinels: Sentinels, horizon: TimeHorizon
) -> None:
    assert_same(batch, max_dead_letters=cap, sentinels=sentinels, horizon=horizon)


def test_seeded_samples_in_every_shape_match() -> None:
    mixed = list(samples.iot_messages(3000, bad_ratio=0.05))
    assert_same(mixed)
    canonical_lines = [r.model_dump_json().encode() for r in parse_iot_batch(mixed, now=NOW).valid]
    assert_same(canonical_lines)
    assert len(parse_iot_columns(canonical_lines, now=NOW).columns) == len(canonical_lines)


def test_columns_are_immutable_and_convert_to_arrow() -> None:
    parsed = parse_iot_columns(list(samples.iot_messages(50, bad_ratio=0.0)), now=NOW)
    columns = parsed.columns
    assert not columns.event_time_us.flags.writeable
    rows, names, values = columns.metric_values()
    assert len(rows) == len(names) == len(values) == sum(len(m) for m in columns.metrics)
    pytest.importorskip("pyarrow")  # not a core dependency (the tables extra)
    table = columns.to_arrow()
    assert table.num_rows == len(columns) == 50
    assert table.column("device_id").to_pylist() == list(columns.device_id)


# --- what the typed decoder must refuse or read exactly as orjson does ------------------------
# A canonical record written as JSON text field by field, then changed the ways a strict typed
# decode could differ from orjson + pydantic: null vs missing, duplicate and escaped keys, numbers
# beyond 64 bits or a double, ints and bools where floats go, surrogates, bad UTF-8, raw control
# characters, a byte-order mark, extra fields, trailing bytes.

tricky_numbers = st.sampled_from(
    ["0", "-0", "1", "-1.5e3", "9007199254740993", "9223372036854775807", "9223372036854775808",
     "18446744073709551615", "18446744073709551616", "-9223372036854775809", "1e308", "1e400",
     "-1e400", "1e-400", "1.7976931348623157e308", "true", "false", "null", '"1.5"', "[]", "{}"]
)  # fmt: skip
tricky_strings = st.sampled_from(
    ['"ok"', '""', '"\\u0064evice"', '"\\ud800"', '"\\udc00\\ud800"', '"\\ud83d\\ude00"',
     '"a\x01b"', '"\\u0000"', '"caf\\u00e9"', '"tab\\t"', "null", "1", "[]"]
)  # fmt: skip
valid_field_values: dict[str, st.SearchStrategy[str]] = {
    "device_id": st.sampled_from(['"device-0001"', '"d"', '"\\u00e9t\\u00e9"']),
    "event_time": st.one_of(
        st.builds(lambda s: orjson.dumps(s).decode(), iso_times),
        st.builds(lambda v: orjson.dumps(v).decode(), valid_times),
    ),
    "metrics": st.builds(lambda m: orjson.dumps(m).decode(), valid_metrics),
    "attributes": st.sampled_from(["{}", '{"site": "a"}', '{"k": "v", "site": "\\u00e9"}']),
    "location": st.sampled_from(["null", '{"lat": 1.5, "lon": -2}', '{"lat": 90, "lon": 180}']),
    "message_id": st.sampled_from(["null", '"m-1"']),
    "flags": st.sampled_from(["[]", '["x"]', '["a", "b"]']),
}


@st.composite
def tricky_record(draw: st.DrawFn) -> bytes:
    fields = [(name, draw(values)) for name, values in valid_field_values.items() if
              name in ("device_id", "event_time") or draw(st.booleans())]  # fmt: skip
    for _ in range(draw(st.integers(0, 3))):
        change = draw(st.integers(0, 9))
        name = draw(st.sampled_from(list(valid_field_values)))
        if change == 0:  # a duplicate key, valid or not
            value = draw(st.one_of(valid_field_values[name], tricky_strings, tricky_numbers))
            fields.append((name, value))
        elif change == 1:  # an escaped key
            fields = [
                (f"{n[:1]}\\u{ord(n[1]):04x}{n[2:]}" if n == name else n, v) for n, v in fields
            ]
        elif change == 2:  # a field null or dropped
            fields = [(n, "null") for n, v in fields if n != name or draw(st.booleans())]
        elif change == 3:  # a metric of a tricky number
            fields.append(("metrics", f'{{"t": {draw(tricky_numbers)}, "h": 1.5}}'))
        elif change == 4:  # a tricky event time
            fields.append(("event_time", draw(st.one_of(tricky_numbers, tricky_strings))))
        elif change == 5:  # a tricky device id or attribute
            fields.append(
                (draw(st.sampled_from(["device_id", "message_id"])), draw(tricky_strings))
            )
            fields.append(("attributes", f'{{"k": {draw(tricky_strings)}}}'))
        elif change == 6:  # a tricky location
            lat, lon = draw(tricky_numbers), draw(tricky_numbers)
            fields.append(("location", f'{{"lat": {lat}, "lon": {lon}}}'))
        elif change == 7:  # an extra field
            fields.append((draw(st.sampled_from(["extra", "deviceId", "ts", "lat"])), "1"))
        elif change == 8:  # flags of other types
            fields.append(("flags", draw(st.sampled_from(["null", "[1]", '"f"', "[null]"]))))
        else:
            fields.append((name, draw(valid_field_values[name])))
    body = "{" + ", ".join(f'"{n}": {v}' for n, v in fields) + "}"
    data = body.encode("utf-8", "surrogatepass")
    wrap = draw(st.integers(0, 12))
    if wrap == 0:
        data = b"\xef\xbb\xbf" + data
    elif wrap == 1:
        data = data.replace(b'"d', b'"\xff', 1)
    elif wrap == 2:
        data = b" \t" + data + b"\r\n "
    elif wrap == 3:
        data += draw(st.sampled_from([b"x", b"\x00", b"\x0c", b",", b"}"]))
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(tricky_record(), records), max_size=20), as_text)
def test_typed_decode_answers_as_the_record_path(batch: list[bytes], text: bool) -> None:
    if text:
        assert_same([r.decode("utf-8", "surrogateescape") for r in batch])
    else:
        assert_same(batch)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(-(10**9), 10**9), min_size=1, max_size=40),
    st.sampled_from(["", ".5", ".123", ".123456"]),
    st.sampled_from(["", "Z"]),
    st.sampled_from(
        ["", "2026-02-29T00:00:00", "2024-02-29T23:59:59", "2026-04-31T10:00:00",
         "2026-11-26T24:00:00", "2026-1a-26T12:00:00", "2026-11-26t12:00:00"]
    ),
)  # fmt: skip
def test_event_times_of_one_length_match(
    offsets: list[int], fraction: str, zone: str, odd: str
) -> None:
    """Batches whose event times all have one length take the byte-wise ISO check."""
    times = [(NOW - timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%S") + fraction + zone
             for s in offsets]  # fmt: skip
    if odd:
        times[len(times) // 2] = odd + fraction + zone
    batch = [
        orjson.dumps({"device_id": "d", "event_time": t, "metrics": {"t": 1.0}}) for t in times
    ]
    assert_same(batch, horizon=TimeHorizon(min_event_time=datetime(1, 1, 2, tzinfo=UTC)))
