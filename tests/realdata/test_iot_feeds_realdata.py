"""Optional: the IoT and feed parsers over ../shared/realdata (skipped when that folder is absent)."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest

from sluice.parsing.feeds import USGS_EARTHQUAKES, parse_feed_document
from sluice.parsing.iot import parse_iot_batch
from sluice.stream.envelopes import iot_event_id

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
if not REALDATA.is_dir():
    pytest.skip(f"no real data at {REALDATA}", allow_module_level=True)

pytestmark = pytest.mark.realdata


def test_mqtt_lab_capture_every_message_is_a_reading_and_duplicates_share_ids():
    # GIVEN 120 real MQTT messages: varying shapes, arrays wrapping messages, duplicate deliveries
    capture = orjson.loads(
        (REALDATA / "iot_telemetry/moziot_lab_mqtt_capture/sample-lab-data.json").read_bytes()
    )
    # WHEN each message is parsed as its own record
    result = parse_iot_batch(orjson.dumps(message) for message in capture)
    # THEN every message is a reading (the capture is valid telemetry), with a device and metrics
    assert result.dead_letters == []
    assert len(result.valid) == len(capture)
    assert all(r.device_id and r.metrics for r in result.valid)
    # AND re-delivered messages (same _msgid) get the same event id from production's own rule
    # (``iot_event_id``, what the edge puts in the envelope), so they can be de-duplicated
    ids = [iot_event_id(r) for r in result.valid]
    with_msgid = [r for r in result.valid if r.message_id]
    assert len(set(ids)) < len(ids)
    assert len({r.message_id for r in with_msgid}) < len(with_msgid)
    ids_with_msgid = {iot_event_id(r) for r in with_msgid}
    assert len(ids_with_msgid) == len({(r.device_id, r.message_id) for r in with_msgid})


def test_uci_occupancy_rows_as_flat_readings():
    path = REALDATA / "iot_telemetry/uci_occupancy/datatest.txt"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = [
        orjson.dumps(
            {
                "device_id": "office-1",
                "Date": row.pop("Date"),
                **{k: float(v) for k, v in row.items()},
            }
        )
        for row in rows
    ]
    result = parse_iot_batch(records)
    assert result.dead_letters == [] and len(result.valid) == len(rows)
    assert set(result.valid[0].metrics) == {
        "Temperature",
        "Humidity",
        "Light",
        "CO2",
        "HumidityRatio",
        "Occupancy",
    }


@pytest.mark.parametrize(
    "path",
    sorted((REALDATA / "api_feeds/usgs_earthquake_geojson").glob("*.geojson")),
    ids=lambda p: p.name,
)
def test_usgs_snapshots_parse_completely(path: Path):
    document = path.read_bytes()
    expected = len(orjson.loads(document)["features"])
    result = parse_feed_document(USGS_EARTHQUAKES, document)
    assert result.dead_letters == []
    assert len(result.valid) == expected
    assert all(item.location is not None and item.updated_time is not None for item in result.valid)
