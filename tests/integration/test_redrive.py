"""Re-drive planning (pure): which dead letters are re-driven, how, and with which event ids."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from sluice.core.contracts import ErrorType, IotReading, Source, WebAccessLog, make_event_id
from sluice.core.deadletters import dead_letter
from sluice.edges.delivery import OutgoingEnvelope, delivery_failed_letters
from sluice.parsing.iot import parse_iot_batch
from sluice.parsing.weblog import LogParser
from sluice.stream.envelopes import encode, weblog_event_id, wrap_reading
from sluice.tables.redrive import plan_letter, plan_redrive, redrive_event_id

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
FORMAT_B = '$remote_addr [$time_local] "$request" $status $body_bytes_sent rt=$request_time'
LINE_B = '203.0.113.9 [26/Nov/2026:12:00:01 +0000] "GET /a?x=1 HTTP/1.1" 200 512 rt=0.012'


def weblog_letter(line: str = LINE_B, log_format: str = "combined"):
    result = LogParser(log_format).parse_batch([line.encode()])
    assert not result.valid
    (letter,) = result.dead_letters
    return letter


def test_a_line_rejected_under_format_a_reparses_under_format_b():
    letter = weblog_letter()
    assert letter.error_type == ErrorType.UNPARSEABLE_LINE
    outcome = plan_letter(letter, LogParser(FORMAT_B), ())
    assert outcome.status == "redrivable"
    (envelope,) = outcome.envelopes
    record = WebAccessLog.model_validate(envelope.payload)
    assert (record.client_ip, record.path, record.query, record.status) == (
        "203.0.113.9",
        "/a",
        "x=1",
        200,
    )
    assert record.request_time == 0.012
    assert envelope.source == Source.WEBLOG and envelope.kind == "record"
    assert envelope.ingest_time == letter.first_seen


def test_still_failing_under_the_same_format():
    plan = plan_redrive([weblog_letter()], log_format="combined")
    assert plan.counts("still_failing") == {"unparseable_line": 1}
    assert plan.envelopes() == []
    assert "unparseable_line" in plan.outcomes[0].reason


def test_event_ids_are_deterministic_functions_of_the_letter():
    letter = weblog_letter()
    first = plan_redrive([letter], log_format=FORMAT_B).envelopes()
    again = plan_redrive([letter], log_format=FORMAT_B).envelopes()
    assert [encode(e) for e in first] == [encode(e) for e in again]  # byte-identical
    expected = make_event_id(Source.WEBLOG, "redrive", letter.dead_letter_id)
    assert first[0].event_id == expected == redrive_event_id(letter)
    assert expected == weblog_event_id("redrive", letter.dead_letter_id)
    other = weblog_letter(LINE_B.replace("/a", "/b"))
    assert plan_redrive([other], log_format=FORMAT_B).envelopes()[0].event_id != expected


def test_too_late_is_never_redriven():
    raw = encode(wrap_reading(IotReading(device_id="d", event_time=T0, metrics={"t": 1.0})))
    letter = dead_letter(Source.IOT, "window", ErrorType.TOO_LATE, "late", raw, identity=("s", 1))
    plan = plan_redrive([letter])
    assert plan.outcomes[0].status == "skipped"
    assert "window is closed" in plan.outcomes[0].reason
    assert plan.counts("skipped") == {"too_late": 1}


def test_too_many_errors_summaries_are_skipped_and_counted():
    # GIVEN three lines of format B parsed as combined with a cap of one dead letter: one letter,
    # and one too_many_errors summary whose sample lines would parse under format B
    lines = [LINE_B.replace("/a", f"/{n}").encode() for n in range(3)]
    result = LogParser("combined").parse_batch(lines, max_dead_letters=1, now=T0)
    kinds = [d.error_type for d in result.dead_letters]
    assert kinds == [ErrorType.UNPARSEABLE_LINE, ErrorType.TOO_MANY_ERRORS]
    # WHEN re-driven with format B
    plan = plan_redrive(result.dead_letters, log_format=FORMAT_B)
    # THEN the letter is re-driven, the summary skipped (it is no record), and counted as skipped
    assert [o.status for o in plan.outcomes] == ["redrivable", "skipped"]
    assert "summary" in plan.outcomes[1].reason
    assert plan.counts("skipped") == {"too_many_errors": 1}
    assert len(plan.envelopes()) == 1


def test_delivery_failed_envelope_is_resubmitted_as_is():
    envelope = wrap_reading(IotReading(device_id="d", event_time=T0, metrics={"t": 1.0}), T0)
    (letter,) = delivery_failed_letters([OutgoingEnvelope.of(envelope)], "throttled", now=T0)
    outcome = plan_letter(letter, LogParser(), ())
    assert outcome.status == "redrivable"
    # as is: same event id and payload, only marked as the re-drive of this letter
    assert outcome.envelopes == (envelope.model_copy(update={"redrive_of": letter.dead_letter_id}),)


def test_iot_parse_failure_redrives_with_current_parser_and_truncated_never():
    good = orjson.dumps({"device_id": "d1", "ts": "2026-11-26T12:00:00Z", "temp": 3.5})
    letter = dead_letter(Source.IOT, "parse", ErrorType.MISSING_FIELD, "old parser", good)
    outcome = plan_letter(letter, LogParser(), ())
    assert parse_iot_batch([good]).valid  # today's parser takes it
    assert outcome.status == "redrivable"
    assert outcome.envelopes[0].event_id == redrive_event_id(letter)
    assert outcome.envelopes[0].partition_key == "d1"
    assert IotReading.model_validate(outcome.envelopes[0].payload).metrics == {"temp": 3.5}
    bad = dead_letter(Source.IOT, "parse", ErrorType.INVALID_JSON, "bad", b"{nope")
    assert plan_letter(bad, LogParser(), ()).status == "still_failing"
    cut = letter.model_copy(update={"raw_truncated": True})
    assert plan_letter(cut, LogParser(), ()).status == "still_failing"


def test_a_job_parse_rejection_whose_payload_still_fails_stays():
    raw = b'{"source": "iot", "event_id": "x", "ingest_time": "2026-01-01T00:00:00Z", "partition_key": "k", "payload": {"device_id": "d"}}'
    letter = dead_letter(Source.IOT, "parse", ErrorType.MISSING_FIELD, "m", raw, identity=("s", 2))
    outcome = plan_letter(letter, LogParser(), ())
    assert outcome.status == "still_failing"
    assert "payload still refused" in outcome.reason


def test_feed_letters_need_exactly_one_configured_feed():
    letter = dead_letter(Source.FEED, "parse", ErrorType.MISSING_FIELD, "m", b"{}")
    outcome = plan_letter(letter, LogParser(), ())
    assert outcome.status == "still_failing" and "feeds configured" in outcome.reason
