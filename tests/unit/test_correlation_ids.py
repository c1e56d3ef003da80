"""Correlation ids: checked at the edge, left out of the wire form when unset, kept by the job."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from sluice.core.contracts import DeadLetter, ErrorType, IotReading, Source, Stage, correlation_id
from sluice.core.deadletters import dead_letter
from sluice.edges.delivery import plan_delivery
from sluice.stream.envelopes import encode, with_correlation_id, wrap_dead_letter, wrap_reading
from sluice.stream.stages import InputRecord, decode_batch, window_batch

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("candidate", "kept"),
    [
        ("0b7c1a9e-3f7d-4c1e-9a55-1f2e3d4c5b6a", True),
        ("client:req/42=+.x_y-z", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("has space", False),
        ("new\nline", False),
        ("é", False),
        (None, False),
        (42, False),
    ],
)
def test_only_a_usable_id_is_kept(candidate: object, kept: bool) -> None:
    assert correlation_id(candidate) == (candidate if kept else None)


def test_an_envelope_without_one_is_byte_for_byte_what_it_was() -> None:
    reading = IotReading(device_id="d", event_time=T0, metrics={"t": 1.0})
    plain = encode(wrap_reading(reading, T0))
    assert b"correlation_id" not in plain
    (stamped,) = with_correlation_id([wrap_reading(reading, T0)], "req-1")
    assert orjson.loads(encode(stamped)) == {**orjson.loads(plain), "correlation_id": "req-1"}
    letter = dead_letter(
        Source.IOT, Stage.EDGE_IOT, ErrorType.INVALID_JSON, "bad", b"{", first_seen=T0
    )
    assert "correlation_id" not in letter.model_dump()


def test_an_envelope_that_has_one_keeps_it() -> None:
    reading = IotReading(device_id="d", event_time=T0, metrics={"t": 1.0})
    (first,) = with_correlation_id([wrap_reading(reading, T0)], "first")
    (again,) = with_correlation_id([first], "second")
    assert again.correlation_id == "first"


def test_the_publisher_plan_stamps_records_and_too_large_letters() -> None:
    small = wrap_reading(IotReading(device_id="d", event_time=T0, metrics={"t": 1.0}), T0)
    huge = wrap_reading(
        IotReading(device_id="d", event_time=T0, metrics={f"m{i}": 1.0 for i in range(100_000)}), T0
    )
    plan = plan_delivery([small, huge], aggregated=False, correlation_id="req-9")
    (letter,) = plan.too_large
    assert letter.correlation_id == "req-9"
    sent = [
        orjson.loads(e.data) for batch in plan.batches for entry in batch for e in entry.envelopes
    ]
    assert [e["correlation_id"] for e in sent] == ["req-9", "req-9"]
    assert sent[1]["payload"]["correlation_id"] == "req-9"  # the too-large letter's own field


def test_the_job_keeps_it_on_events_and_dead_letters() -> None:
    on_time = IotReading(device_id="d", event_time=T0, metrics={"t": 1.0})
    edge_letter = dead_letter(
        Source.IOT, Stage.EDGE_IOT, ErrorType.INVALID_JSON, "bad", b"{", first_seen=T0
    )
    envelopes = with_correlation_id(
        [wrap_reading(on_time, T0), wrap_dead_letter(edge_letter, T0)], "req-1"
    )
    records = [InputRecord(i, 0, T0.timestamp(), encode(e)) for i, e in enumerate(envelopes)]
    late = next(with_correlation_id([wrap_reading(on_time, T0)], "req-2"))
    records.append(InputRecord(9, 0, T0.timestamp() + 7200, encode(late)))
    broken = orjson.dumps({"source": "iot", "correlation_id": "req-3", "payload": 1})
    records.append(InputRecord(10, 0, T0.timestamp(), broken))

    batch = window_batch(decode_batch("s", records), 60, 600)

    (event,) = batch.events[Source.IOT]
    assert event.correlation_id == "req-1"
    letters: dict[ErrorType, DeadLetter] = {
        e.record.error_type: e.record for e in batch.dead_letters
    }
    assert {k: v.correlation_id for k, v in letters.items()} == {
        ErrorType.INVALID_JSON: "req-1",
        ErrorType.TOO_LATE: "req-2",
        ErrorType.MISSING_FIELD: "req-3",
    }
    # a too-late letter's raw input is its envelope, id included, so a re-drive keeps it
    assert orjson.loads(letters[ErrorType.TOO_LATE].raw)["correlation_id"] == "req-2"
