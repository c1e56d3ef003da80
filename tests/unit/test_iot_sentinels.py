"""IoT sentinels: configured "not measured" values become missing metrics, counted, never dead letters."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.core.config import load_settings
from sluice.core.errors import ConfigError
from sluice.edges.ingest import IotRequest, ingest_iot_request
from sluice.parsing.iot import Sentinels, parse_iot_batch

T = 1764158400000
SENTINELS = Sentinels([-200, -999, "NaN", "N/A"])


@pytest.mark.parametrize(
    ("reading", "metrics", "attributes", "missing"),
    [
        # flat shape: numeric sentinels, int or float, are missing metrics
        ({"deviceId": "d", "ts": T, "co": -200, "no2": 41.5}, {"no2": 41.5}, {}, 1),
        ({"deviceId": "d", "ts": T, "co": -200.0, "t": -999}, {}, {}, 2),
        # a string sentinel where a number was expected is no attribute either
        ({"deviceId": "d", "ts": T, "t": "NaN", "rh": 40}, {"rh": 40.0}, {}, 1),
        ({"deviceId": "d", "ts": T, "state": "N/A", "fw": "1.2"}, {}, {"fw": "1.2"}, 1),
        # close to a sentinel is a value; case matters for strings
        ({"deviceId": "d", "ts": T, "t": -200.5, "x": "nan"}, {"t": -200.5}, {"x": "nan"}, 0),
        # nested objects and the canonical shape
        ({"deviceId": "d", "ts": T, "env": {"t": -999, "rh": 3}}, {"env.rh": 3.0}, {}, 1),
        (
            {"device_id": "d", "event_time": T, "metrics": {"t": -200, "p": 1013.0}},
            {"p": 1013.0},
            {},
            1,
        ),
        # booleans are never sentinels (True == 1, False == 0)
        ({"deviceId": "d", "ts": T, "on": True}, {"on": 1.0}, {}, 0),
    ],
)
def test_sentinels_become_missing_metrics(reading, metrics, attributes, missing) -> None:
    # GIVEN a reading with sentinel values WHEN parsed with the sentinels configured
    result = parse_iot_batch([orjson.dumps(reading)], sentinels=SENTINELS)
    # THEN the reading is valid, without those values, and they are counted
    assert not result.dead_letters
    (parsed,) = result.valid
    assert parsed.metrics == metrics
    assert parsed.attributes == attributes
    assert result.missing_metrics == missing


def test_without_sentinels_values_are_kept() -> None:
    result = parse_iot_batch([orjson.dumps({"deviceId": "d", "ts": T, "co": -200, "t": "NaN"})])
    assert result.valid[0].metrics == {"co": -200.0}
    assert result.valid[0].attributes == {"t": "NaN"}
    assert result.missing_metrics == 0


def test_a_reading_of_only_sentinels_is_still_a_reading() -> None:
    result = parse_iot_batch(
        [orjson.dumps({"deviceId": "d", "ts": T, "co": -200}), b"not json"], sentinels=SENTINELS
    )
    assert len(result.valid) == 1 and result.valid[0].metrics == {}
    assert [d.error_type for d in result.dead_letters] == ["invalid_json"]
    assert result.missing_metrics == 1


@settings(deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"m_[a-z]{1,8}", fullmatch=True),
        st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([-200, -999])),
        max_size=20,
    )
)
def test_every_value_is_kept_or_counted(values: dict[str, float]) -> None:
    reading = {"deviceId": "d", "ts": T, **values}
    result = parse_iot_batch([orjson.dumps(reading)], sentinels=SENTINELS)
    (parsed,) = result.valid
    assert len(parsed.metrics) + result.missing_metrics == len(values)
    assert all(v not in (-200.0, -999.0) and math.isfinite(v) for v in parsed.metrics.values())


def test_settings_take_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_IOT_SENTINELS", '[-200, -999, "NaN"]')
    sentinels = load_settings().sentinels()
    assert sentinels.numbers == {-200.0, -999.0} and sentinels.strings == {"NaN"}
    monkeypatch.setenv("SLUICE_IOT_SENTINELS", "[true]")
    with pytest.raises(ConfigError, match="iot_sentinels"):
        load_settings()


def test_the_iot_edge_counts_missing_metrics() -> None:
    body = b"\n".join(orjson.dumps({"deviceId": "d", "ts": T, "co": v, "t": 1}) for v in (-200, 5))
    outcome = ingest_iot_request(
        IotRequest(body=body.decode(), content_type="application/x-ndjson"), sentinels=SENTINELS
    )
    assert outcome.accepted == 2 and outcome.missing_metrics == 1
    payloads = [e.payload["metrics"] for e in outcome.envelopes]
    assert payloads == [{"t": 1.0}, {"co": 5.0, "t": 1.0}]
