"""Feeds as configuration: id_fields, items_columns, items_path ".", "$." paths, time formats, feeds
files in JSON and YAML, and a document that does not match its spec as one dead letter."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.core.config import load_settings
from sluice.core.errors import ConfigError
from sluice.parsing.feeds import FeedSpec, parse_feed_document
from sluice.parsing.feeds_file import load_feeds_file, select_feed

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {spec.name: spec for spec in load_feeds_file(ROOT / "docs" / "feeds.example.yaml")}
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

# Documents shaped as the three APIs answer (invented values, same shapes).
OPENAQ = {
    "meta": {"name": "openaq-api", "page": 1, "limit": 100, "found": 2},
    "results": [
        {"period": {"datetimeFrom": {"utc": "2026-11-30T12:00:00+00:00"}}, "value": 6,
         "parameter": {"id": 2, "name": "pm25", "units": "µg/m³"}},
        {"period": {"datetimeFrom": {"utc": "2026-11-30T13:00:00+00:00"}}, "value": 7.5,
         "parameter": {"id": 2, "name": "pm25", "units": "µg/m³"}},
    ],
}  # fmt: skip
OPEN_METEO = {
    "latitude": 52.52, "longitude": 13.419998, "generationtime_ms": 0.03, "timezone": "GMT",
    "hourly_units": {"time": "iso8601", "temperature_2m": "°C"},
    "hourly": {"time": ["2026-11-30T00:00", "2026-11-30T01:00", "2026-11-30T02:00"],
               "temperature_2m": [1.5, 1.1, None], "relative_humidity_2m": [88, 90, 91]},
}  # fmt: skip
STATUS = {
    "page": {"id": "kctbh9vrtdwd", "name": "GitHub", "updated_at": "2026-11-30T21:04:25.123Z"},
    "status": {"indicator": "none", "description": "All Systems Operational"},
}


def parse(spec: FeedSpec, document: Any) -> Any:
    return parse_feed_document(spec, orjson.dumps(document), now=NOW)


def test_paginated_list_api_items_identified_by_several_fields() -> None:
    result = parse(EXAMPLES["openaq_pm25"], OPENAQ)
    assert not result.dead_letters
    first, second = result.valid
    assert first.event_time == datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert first.fields == {"value": 6, "parameter": "pm25", "units": "µg/m³"}
    assert len(first.item_id) == 32 and first.item_id != second.item_id
    # deterministic: the same values, the same id, in another parse
    assert parse(EXAMPLES["openaq_pm25"], OPENAQ).valid[0].item_id == first.item_id


def test_column_oriented_forecast_is_zipped_one_item_per_index() -> None:
    result = parse(EXAMPLES["open_meteo_berlin"], OPEN_METEO)
    assert not result.dead_letters
    assert [i.event_time.hour for i in result.valid] == [0, 1, 2]
    assert all(i.event_time.tzinfo is UTC for i in result.valid)  # no offset: UTC
    assert [i.fields["temperature_c"] for i in result.valid] == [1.5, 1.1, None]
    assert [i.fields["humidity_pct"] for i in result.valid] == [88, 90, 91]
    assert {(i.location.lat, i.location.lon) for i in result.valid if i.location} == {
        (52.52, 13.419998)
    }
    assert len({i.item_id for i in result.valid}) == 3


def test_status_snapshot_is_one_item() -> None:
    result = parse(EXAMPLES["github_status"], STATUS)
    (item,) = result.valid
    assert item.fields == {"indicator": "none", "description": "All Systems Operational"}
    assert item.event_time == datetime(2026, 11, 30, 21, 4, 25, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "document", "message"),
    [
        pytest.param("openaq_pm25", {"meta": {}}, "no item list at 'results'", id="list-missing"),
        pytest.param("open_meteo_berlin", {"latitude": 1}, "no object of arrays at 'hourly'", id="columns-missing"),
        pytest.param("open_meteo_berlin", {"hourly": {"time": ["2026-11-30T00:00"], "temperature_2m": []}},
                     "differ in length: time 1, temperature_2m 0", id="columns-of-different-lengths"),
        pytest.param("github_status", [1, 2], "the document must be one object", id="snapshot-not-an-object"),
    ],
)  # fmt: skip
def test_a_document_not_matching_its_spec_is_one_dead_letter(
    spec: str, document: Any, message: str
) -> None:
    raw = orjson.dumps(document)
    result = parse_feed_document(EXAMPLES[spec], raw, now=NOW)
    (letter,) = result.dead_letters
    assert result.valid == [] and message in letter.message
    assert letter.raw == raw.decode()  # the document is kept


@pytest.mark.parametrize(
    ("item", "message"),
    [
        pytest.param({"value": 1, "period": {"datetimeFrom": {"utc": "2026-11-30T12:00:00Z"}}},
                     "no item id at 'parameter.id'", id="an-id-field-missing"),
        pytest.param({"parameter": {"id": [2]}, "period": {"datetimeFrom": {"utc": "2026-11-30T12:00:00Z"}}},
                     "must be a string or a number", id="an-id-field-not-scalar"),
        pytest.param({"parameter": {"id": 2}}, "no item id at 'period.datetimeFrom.utc'", id="time-missing"),
    ],
)  # fmt: skip
def test_items_without_their_paths_are_dead_letters(item: dict[str, Any], message: str) -> None:
    result = parse(EXAMPLES["openaq_pm25"], {"results": [item]})
    (letter,) = result.dead_letters
    assert message in letter.message


@pytest.mark.parametrize(
    ("time_format", "value", "expected"),
    [
        ("epoch_ms", 1796126400123, datetime(2026, 12, 1, 12, 0, 0, 123000, tzinfo=UTC)),
        ("epoch_s", 1796126400, datetime(2026, 12, 1, 12, tzinfo=UTC)),
        ("epoch_s", "1796126400.5", datetime(2026, 12, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        ("iso8601", "2026-12-01T13:00:00+01:00", datetime(2026, 12, 1, 12, tzinfo=UTC)),
        ("iso8601", "2026-12-01T12:00", datetime(2026, 12, 1, 12, tzinfo=UTC)),
        ("iso8601", "2026-12-01T12:00:00Z", datetime(2026, 12, 1, 12, tzinfo=UTC)),
    ],
)
def test_time_formats(time_format: str, value: Any, expected: datetime) -> None:
    spec = FeedSpec(
        name="t", items_path=".", id_field="id", time_field="t", time_format=time_format
    )
    (item,) = parse(spec, {"id": "a", "t": value}).valid
    assert item.event_time == expected


@settings(deadline=None)
@given(st.lists(st.one_of(st.text(min_size=1), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False)), min_size=1, max_size=4))  # fmt: skip
def test_property_id_fields_hash_is_deterministic_and_typed(values: list[Any]) -> None:
    paths = [f"k{i}" for i in range(len(values))]
    spec = FeedSpec(name="h", items_path=".", id_fields=paths, time_field="t")
    document = {"t": "2026-11-30T00:00:00Z", **dict(zip(paths, values, strict=True))}
    (one,) = parse(spec, document).valid
    (again,) = parse(spec, dict(reversed(document.items()))).valid
    assert one.item_id == again.item_id
    # a number and its text are different ids
    changed = {**document, "k0": str(values[0]) if not isinstance(values[0], str) else [values[0]]}
    other = parse(spec, changed)
    assert not other.valid or other.valid[0].item_id != one.item_id


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        pytest.param('{"feeds": [{"name": "a", "time_field": "t"}]}', ".json", "feeds.0: Value error, give exactly one of id_field and id_fields", id="no-id"),
        pytest.param('{"feeds": [{"name": "a", "id_fields": [], "time_field": "t"}]}', ".json", "feeds.0.id_fields: Tuple should have at least 1 item", id="empty-id-fields"),
        pytest.param('{"feeds": [{"name": "a", "id_field": "i", "time_field": "t", "time_format": "epoch_us"}]}', ".json", "feeds.0.time_format: Input should be", id="bad-time-format"),
        pytest.param('{"feeds": [{"name": "a", "id_field": "i", "time_field": "t", "itemz_path": "x"}]}', ".json", "feeds.0.itemz_path: Extra inputs are not permitted", id="unknown-key"),
        pytest.param('{"feeds": [{"name": "a", "id_field": "i", "time_field": "t", "items_path": "x", "items_columns": "y"}]}', ".json", "give items_path or items_columns", id="both-item-locations"),
        pytest.param('{"feeds": [{"name": "a", "id_field": "i", "time_field": "t", "api_key": {"env": "K"}}]}', ".json", "feeds.0.api_key: Value error, give exactly one of header and query_param", id="api-key-nowhere"),
        pytest.param("feeds:\n  - name: a\n    id_field: i\n    time_field: t\n  - name: a\n    id_field: i\n    time_field: t\n", ".yaml", "feed names must be unique: 'a' twice", id="duplicate-names"),
        pytest.param("feeds: [name: a", ".yaml", "not YAML (line", id="broken-yaml"),
        pytest.param("{", ".json", "not JSON", id="broken-json"),
        pytest.param('{"feed": []}', ".json", 'expected {"feeds": [feed spec, ...]}', id="wrong-top-level"),
        pytest.param('{"feeds": []}', ".json", "feeds: no feed", id="no-feed"),
    ],
)  # fmt: skip
def test_a_malformed_feeds_file_is_one_line_naming_the_field(
    tmp_path: Path, text: str, suffix: str, message: str
) -> None:
    path = tmp_path / f"feeds{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_feeds_file(path)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert str(path) in str(raised.value)


def test_json_and_yaml_files_give_the_same_specs(tmp_path: Path) -> None:
    specs = [s.model_dump(mode="json", exclude_defaults=True) for s in EXAMPLES.values()]
    path = tmp_path / "feeds.json"
    path.write_bytes(orjson.dumps({"feeds": specs}))
    assert load_feeds_file(path) == tuple(EXAMPLES.values())


def test_settings_read_the_feeds_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_FEEDS_FILE", str(ROOT / "docs" / "feeds.example.yaml"))
    assert [f.name for f in load_settings().feeds] == list(EXAMPLES)
    monkeypatch.setenv("SLUICE_FEEDS_FILE", str(ROOT / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"feeds_file: feeds file .*missing\.yaml: No such file"):
        load_settings()


def test_select_feed() -> None:
    specs = tuple(EXAMPLES.values())
    assert select_feed(specs, "github_status", "f").name == "github_status"
    with pytest.raises(ConfigError, match="no feed 'nope' in f; it has: openaq_pm25"):
        select_feed(specs, "nope", "f")
    with pytest.raises(ConfigError, match="has 3 feeds; name one with --feed"):
        select_feed(specs, None, "f")
    assert select_feed(specs[:1], None, "f") is specs[0]


def test_the_readme_shows_the_worked_specs_the_tests_use() -> None:
    import yaml  # type: ignore[import-untyped]

    readme = (ROOT / "README.md").read_text()
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert tuple(FeedSpec.model_validate(s) for s in yaml.safe_load(block)["feeds"]) == tuple(
        EXAMPLES.values()
    )
