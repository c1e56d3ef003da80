"""Optional: the worked OpenAQ spec of docs/feeds.example.yaml over real OpenAQ v3 responses in
../shared/realdata (skipped when absent): measurements without an id get one from id_fields."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sluice.core.contracts import TimeHorizon
from sluice.parsing.feeds import parse_feed_document
from sluice.parsing.feeds_file import load_feeds_file, select_feed

ROOT = Path(__file__).resolve().parents[2]
RESPONSES = ROOT.parent / "shared" / "realdata" / "api_feeds" / "openaq" / "openaq_python_v3_unit"
if not RESPONSES.is_dir():
    pytest.skip(f"no real data at {RESPONSES}", allow_module_level=True)

pytestmark = pytest.mark.realdata


def test_openaq_measurements_parse_with_the_worked_spec() -> None:
    spec = select_feed(load_feeds_file(ROOT / "docs" / "feeds.example.yaml"), "openaq_pm25", "x")
    raw = (RESPONSES / "responses_measurements.json").read_bytes()
    found = orjson.loads(raw)["meta"]["found"]
    result = parse_feed_document(spec, raw, horizon=TimeHorizon(max_future_seconds=0))
    assert result.dead_letters == []
    assert len(result.valid) == found
    assert len({item.item_id for item in result.valid}) == found
    assert all(item.fields["parameter"] == "pm25" for item in result.valid)


def test_a_response_of_another_shape_is_one_dead_letter_naming_the_path() -> None:
    spec = select_feed(
        load_feeds_file(ROOT / "docs" / "feeds.example.yaml"), "open_meteo_berlin", "x"
    )
    raw = (RESPONSES / "responses_measurements.json").read_bytes()
    result = parse_feed_document(spec, raw)
    (letter,) = result.dead_letters
    assert "no object of arrays at 'hourly'" in letter.message and letter.raw_size == len(raw)
