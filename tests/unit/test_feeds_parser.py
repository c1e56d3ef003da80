"""Feed parser: USGS GeoJSON as the shipped example, and configured feeds of other shapes."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devkit.samples import usgs_document
from sluice.core.contracts import ErrorType
from sluice.core.errors import ConfigError
from sluice.parsing.feeds import (
    USGS_EARTHQUAKES,
    FeedSpec,
    builtin_feed,
    get_path,
    parse_feed_document,
)


def quake(item_id="us1", time_ms=1_700_000_000_000, **props):
    return {
        "type": "Feature",
        "id": item_id,
        "properties": {
            "mag": 2.5,
            "place": "10km N of X",
            "time": time_ms,
            "updated": time_ms + 1000 if isinstance(time_ms, int) else None,
            **props,
        },
        "geometry": {"type": "Point", "coordinates": [-118.2, 35.6, 4.5]},
    }


def test_usgs_feature_becomes_feed_item():
    # GIVEN a USGS FeatureCollection with one earthquake
    document = orjson.dumps({"type": "FeatureCollection", "features": [quake()]})
    # WHEN parsed with the shipped spec
    result = parse_feed_document(USGS_EARTHQUAKES, document)
    # THEN id, times, position and properties are normalized
    [item] = result.valid
    assert item.feed == "usgs_earthquakes" and item.item_id == "us1"
    assert item.event_time == datetime.fromtimestamp(1_700_000_000, UTC)
    assert item.updated_time == datetime.fromtimestamp(1_700_000_001, UTC)
    assert item.location is not None and (item.location.lat, item.location.lon) == (35.6, -118.2)
    assert item.fields["mag"] == 2.5 and item.fields["depth_km"] == 4.5


@pytest.mark.parametrize(
    ("feature", "error_type"),
    [
        pytest.param({**quake(), "id": None}, ErrorType.MISSING_FIELD, id="no-id"),
        pytest.param(quake(time_ms=None), ErrorType.MISSING_FIELD, id="no-time"),
        pytest.param(quake(time_ms="soon"), ErrorType.INVALID_TIMESTAMP, id="bad-time"),
        pytest.param(quake(time_ms=10**18), ErrorType.INVALID_TIMESTAMP, id="time-overflow"),
        pytest.param("not an object", ErrorType.SCHEMA_VIOLATION, id="not-object"),
        pytest.param({**quake(), "geometry": {"coordinates": [500, 100]}}, ErrorType.SCHEMA_VIOLATION, id="bad-position"),
    ],
)  # fmt: skip
def test_bad_items_are_dead_letters_good_ones_survive(feature, error_type):
    document = orjson.dumps({"features": [quake("ok"), feature]})
    result = parse_feed_document(USGS_EARTHQUAKES, document)
    assert [i.item_id for i in result.valid] == ["ok"]
    assert [d.error_type for d in result.dead_letters] == [error_type]


@pytest.mark.parametrize(
    ("document", "error_type"),
    [
        pytest.param(b"<html>", ErrorType.INVALID_JSON, id="not-json"),
        pytest.param(b'{"features": {}}', ErrorType.SCHEMA_VIOLATION, id="no-list"),
        pytest.param(
            b'{"type": "FeatureCollection"}', ErrorType.SCHEMA_VIOLATION, id="missing-list"
        ),
    ],
)
def test_unusable_document_is_one_dead_letter(document, error_type):
    result = parse_feed_document(USGS_EARTHQUAKES, document)
    assert result.valid == [] and [d.error_type for d in result.dead_letters] == [error_type]


def test_configured_feed_with_iso_times_and_nested_items():
    # GIVEN an OpenAQ-like paginated response shape, configured rather than coded
    spec = FeedSpec(
        name="air_quality", items_path="results", id_field="id", time_field="datetime.utc",
        lat_field="coordinates.latitude", lon_field="coordinates.longitude",
        fields={"value": "value", "parameter": "parameter.name"},
    )  # fmt: skip
    document = {
        "meta": {"page": 1, "limit": 2, "found": 9},
        "results": [{"id": 7, "datetime": {"utc": "2026-11-26T10:00:00Z"}, "value": 12.5,
                     "parameter": {"name": "pm25"}, "coordinates": {"latitude": 1.0, "longitude": 2.0}}],
    }  # fmt: skip
    [item] = parse_feed_document(spec, document).valid
    assert item.item_id == "7" and item.fields == {"value": 12.5, "parameter": "pm25"}
    assert item.event_time == datetime(2026, 11, 26, 10, tzinfo=UTC)


def test_generated_usgs_sample_parses_with_its_one_deliberate_dead_letter():
    result = parse_feed_document(USGS_EARTHQUAKES, usgs_document(50))
    assert len(result.valid) == 50 and len(result.dead_letters) == 1


@pytest.mark.parametrize(
    ("obj", "path", "expected"),
    [({"a": {"b": [1, 2]}}, "a.b.1", 2), ({"a": [1]}, "a.5", None), ({"a": 1}, "a.b", None), ({"a": 1}, "", {"a": 1}),
     ({"a": [1, 2]}, "a.-1", 2)],
)  # fmt: skip
def test_get_path(obj, path, expected):
    assert get_path(obj, path) == expected


def test_unknown_feed_and_unknown_spec_keys_are_config_errors():
    with pytest.raises(ConfigError, match="unknown feed 'nope'"):
        builtin_feed("nope")
    with pytest.raises(ValueError, match="extra"):
        FeedSpec(name="x", id_field="id", time_field="t", colour="red")  # type: ignore[call-arg]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_no_document_makes_the_parser_raise(document):
    result = parse_feed_document(USGS_EARTHQUAKES, document)
    # Every document is accounted for: items, or a dead letter saying why there are none.
    assert result.valid or result.dead_letters or orjson.loads(document)["features"] == []
