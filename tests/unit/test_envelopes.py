"""Envelopes: deterministic ids, lossless wire round trip, bad wire records become dead letters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sluice.core.contracts import ErrorType, FeedItem, IotReading, Source, Stage, WebAccessLog
from sluice.core.deadletters import dead_letter
from sluice.stream.envelopes import (
    decode_envelopes,
    encode,
    wrap_access_log,
    wrap_dead_letter,
    wrap_feed_item,
    wrap_reading,
)

T0 = datetime(2026, 11, 26, 12, tzinfo=UTC)
READING = IotReading(device_id="d1", event_time=T0, metrics={"t": 1.0})
REQUEST = WebAccessLog(client_ip="81.2.69.1", event_time=T0, status=200, path="/")
ITEM = FeedItem(feed="usgs_earthquakes", item_id="us1", event_time=T0, updated_time=T0)


def test_reading_ids_depend_on_identity_not_on_ingest_time():
    a = wrap_reading(READING, T0)
    b = wrap_reading(READING, datetime(2027, 1, 1, tzinfo=UTC))
    assert a.event_id == b.event_id and a.partition_key == "d1"
    changed = wrap_reading(READING.model_copy(update={"metrics": {"t": 2.0}}))
    assert changed.event_id != a.event_id
    with_msg = READING.model_copy(update={"message_id": "m1"})
    assert (
        wrap_reading(with_msg).event_id
        == wrap_reading(with_msg.model_copy(update={"metrics": {}})).event_id
    )


def test_identical_log_lines_at_different_positions_are_different_events():
    assert (
        wrap_access_log(REQUEST, "s3://b/k", 1).event_id
        != wrap_access_log(REQUEST, "s3://b/k", 2).event_id
    )
    assert (
        wrap_access_log(REQUEST, "s3://b/k", 1).event_id
        == wrap_access_log(REQUEST, "s3://b/k", 1).event_id
    )


def test_updated_feed_item_is_a_new_event():
    later = ITEM.model_copy(update={"updated_time": datetime(2026, 11, 26, 13, tzinfo=UTC)})
    assert wrap_feed_item(ITEM).event_id != wrap_feed_item(later).event_id


@pytest.mark.parametrize(
    "envelope",
    [
        wrap_reading(READING, T0),
        wrap_access_log(REQUEST, "f", 3, T0),
        wrap_feed_item(ITEM, T0),
        wrap_dead_letter(
            dead_letter(Source.WEBLOG, Stage.EDGE_LOGS, ErrorType.UNPARSEABLE_LINE, "m", b"x"), T0
        ),
    ],
    ids=["iot", "weblog", "feed", "dead-letter"],
)
def test_wire_round_trip(envelope):
    result = decode_envelopes([encode(envelope)])
    assert result.valid == [envelope] and result.dead_letters == []


def test_payloads_decode_back_into_their_contracts():
    [envelope] = decode_envelopes([encode(wrap_reading(READING))]).valid
    assert IotReading.model_validate(envelope.payload) == READING


@pytest.mark.parametrize(
    ("raw", "error_type", "source"),
    [
        (b"not json", ErrorType.INVALID_JSON, Source.IOT),
        (b'{"source": "weblog"}', ErrorType.MISSING_FIELD, Source.WEBLOG),
        (b'{"source": "mars", "event_id": "x"}', ErrorType.SCHEMA_VIOLATION, Source.IOT),
    ],
)
def test_bad_wire_records_become_dead_letters(raw, error_type, source):
    result = decode_envelopes([raw])
    assert result.valid == []
    [letter] = result.dead_letters
    assert (letter.error_type, letter.source) == (error_type, source)
