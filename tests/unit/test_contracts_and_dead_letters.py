"""Contracts: deterministic ids, UTC times, bounded dead letters."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.core.contracts import (
    DeadLetter,
    Envelope,
    ErrorType,
    IotReading,
    Source,
    Stage,
    make_event_id,
)
from sluice.core.deadletters import MAX_RAW_BYTES, count_by_reason, dead_letter, raw_bytes


def test_event_id_is_deterministic_and_identity_sensitive():
    assert make_event_id(Source.IOT, "d1", 5) == make_event_id("iot", "d1", 5)
    assert make_event_id(Source.IOT, "d1", 5) != make_event_id(Source.IOT, "d1", 6)
    assert make_event_id(Source.IOT, "d1", 5) != make_event_id(Source.WEBLOG, "d1", 5)
    # parts are separated, so ("ab", "c") and ("a", "bc") differ
    assert make_event_id(Source.IOT, "ab", "c") != make_event_id(Source.IOT, "a", "bc")


def test_times_are_normalized_to_utc():
    local = datetime(2026, 11, 26, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    naive = datetime(2026, 11, 26, 12, 0)
    expected = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert IotReading(device_id="d", event_time=local).event_time == expected
    assert IotReading(device_id="d", event_time=naive).event_time == expected


def test_envelope_round_trips_as_json():
    envelope = Envelope(
        source=Source.IOT, event_id="e1", ingest_time=datetime(2026, 1, 1, tzinfo=UTC),
        partition_key="d1", payload={"device_id": "d1", "metrics": {"t": 1.0}},
    )  # fmt: skip
    assert Envelope.model_validate_json(envelope.model_dump_json()) == envelope
    assert envelope.schema_version == 1


@pytest.mark.parametrize(
    ("raw", "encoding", "truncated"),
    [
        pytest.param(b"plain text", "utf-8", False, id="text"),
        pytest.param("ünïcödé", "utf-8", False, id="unicode-str"),
        pytest.param(b"\x00\xff\xfe binary", "base64", False, id="binary"),
        pytest.param(b"x" * (MAX_RAW_BYTES + 10), "utf-8", True, id="long-text"),
        pytest.param("é" * MAX_RAW_BYTES, "utf-8", True, id="cut-inside-a-character"),
        pytest.param(b"\xff" * (MAX_RAW_BYTES * 2), "base64", True, id="long-binary"),
    ],
)
def test_dead_letter_raw_is_bounded_and_recoverable(raw, encoding, truncated):
    letter = dead_letter(Source.IOT, "parse", ErrorType.INVALID_JSON, "bad", raw)
    data = raw.encode() if isinstance(raw, str) else raw
    assert letter.raw_encoding == encoding and letter.raw_truncated is truncated
    assert letter.raw_size == len(data)
    assert len(raw_bytes(letter)) <= MAX_RAW_BYTES
    assert data.startswith(raw_bytes(letter))
    if encoding == "base64":
        base64.b64decode(letter.raw, validate=True)


def test_dead_letter_id_ignores_when_it_was_seen():
    a = dead_letter(
        Source.FEED,
        "parse",
        ErrorType.INVALID_JSON,
        "m",
        b"x",
        first_seen=datetime(2026, 1, 1, tzinfo=UTC),
    )
    b = dead_letter(Source.FEED, "parse", ErrorType.INVALID_JSON, "m", b"x")
    c = dead_letter(Source.FEED, "parse", ErrorType.INVALID_JSON, "m", b"y")
    assert a.dead_letter_id == b.dead_letter_id != c.dead_letter_id
    assert count_by_reason([a, b, c]) == {"invalid_json": 3}


def test_long_messages_are_cut():
    letter = dead_letter(Source.IOT, "parse", ErrorType.SCHEMA_VIOLATION, "x" * 10_000, b"")
    assert len(letter.message) <= 2000


@given(st.binary(max_size=MAX_RAW_BYTES // 64) | st.text(max_size=500))
def test_any_raw_input_makes_a_valid_json_round_trippable_dead_letter(raw):
    letter = dead_letter(Source.WEBLOG, "parse", ErrorType.UNPARSEABLE_LINE, "m", raw)
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    assert raw_bytes(letter) == data


def test_identity_keeps_equal_inputs_from_different_places_apart():
    first = dead_letter(
        Source.WEBLOG,
        Stage.EDGE_LOGS,
        ErrorType.UNPARSEABLE_LINE,
        "m",
        b"bad",
        identity=("s3://b/k", 1),
    )
    second = dead_letter(
        Source.WEBLOG,
        Stage.EDGE_LOGS,
        ErrorType.UNPARSEABLE_LINE,
        "m",
        b"bad",
        identity=("s3://b/k", 2),
    )
    again = dead_letter(
        Source.WEBLOG,
        Stage.EDGE_LOGS,
        ErrorType.UNPARSEABLE_LINE,
        "m",
        b"bad",
        identity=("s3://b/k", 1),
    )
    assert first.dead_letter_id != second.dead_letter_id
    assert first.dead_letter_id == again.dead_letter_id
