"""Dead letters are capped per request and per batch; blank lines are skipped; keys refuse control
characters.

A 1 MiB body of ``1\\n`` lines used to become 524,288 dead letters (281 MB for Kinesis). Now the first
``max_dead_letters`` are dead letters one by one and the rest one ``too_many_errors`` letter with the
counts by reason, a digest and a sample; the response still counts every rejection.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.core.contracts import ErrorType, FeedItem, IotReading, Source, Stage, WebAccessLog
from sluice.core.deadletters import (
    MAX_DEAD_LETTERS,
    SAMPLE_RECORD_BYTES,
    SAMPLE_RECORDS,
    BatchResult,
    CappedDeadLetters,
    Rejection,
    is_blank,
    raw_bytes,
)
from sluice.edges.ingest import (
    IngestCounts,
    IotRequest,
    LogLine,
    ingest_iot_request,
    log_lines_to_envelopes,
    read_log_stream,
)
from sluice.parsing.feeds import FeedSpec, parse_feed_document
from sluice.parsing.iot import parse_iot_batch
from sluice.parsing.weblog import LogParser
from sluice.stream.envelopes import encode

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
GOOD = b'{"deviceId":"d1","ts":1764158400,"t":1}'
LOG_LINE = b'192.0.2.1 - - [30/Nov/2026:11:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "-"'


def summary_of(letters: list) -> object:
    [summary] = [d for d in letters if d.error_type is ErrorType.TOO_MANY_ERRORS]
    return summary


# --- CappedDeadLetters ---


def test_rejections_over_the_cap_are_counted_hashed_and_sampled() -> None:
    # GIVEN a cap of 3 and 20 rejections of two kinds
    letters = CappedDeadLetters(Source.IOT, Stage.PARSE, 3, first_seen=NOW)
    raws = [f"bad {i}".encode() + b"x" * (2000 if i == 5 else 0) for i in range(20)]
    for i, raw in enumerate(raws):
        kind = ErrorType.INVALID_JSON if i % 2 else ErrorType.SCHEMA_VIOLATION
        letters.add(Rejection(kind, f"reason {i}", raw))
    result: BatchResult[object] = BatchResult()
    # WHEN finished
    letters.finish(result)
    # THEN three letters in full, then one summary of the 17 others
    assert [d.message for d in result.dead_letters[:3]] == ["reason 0", "reason 1", "reason 2"]
    assert result.suppressed == {ErrorType.INVALID_JSON: 9, ErrorType.SCHEMA_VIOLATION: 8}
    assert result.rejected == 20
    summary = result.dead_letters[3]
    assert summary.error_type is ErrorType.TOO_MANY_ERRORS and summary.first_seen == NOW
    digest = hashlib.blake2b(b"".join(raw + b"\n" for raw in raws[3:]), digest_size=16)
    assert summary.message == (
        "17 more rejections than the 3 dead-lettered one by one in this batch: invalid_json=9, "
        f"schema_violation=8; suppressed records blake2b-128 {digest.hexdigest()}; raw: the first "
        f"{SAMPLE_RECORDS} of them, one per line"
    )
    # the sample: the first suppressed records, each cut to a bound
    sample = raw_bytes(summary).split(b"\n")
    assert sample == [raw[:SAMPLE_RECORD_BYTES] for raw in raws[3 : 3 + SAMPLE_RECORDS]]


def test_no_summary_when_nothing_was_suppressed() -> None:
    letters = CappedDeadLetters(Source.WEBLOG, Stage.PARSE, 2)
    letters.add(Rejection(ErrorType.UNPARSEABLE_LINE, "no", b"x"))
    letters.add(Rejection(ErrorType.UNPARSEABLE_LINE, "no", b"y"))
    result: BatchResult[object] = BatchResult()
    letters.finish(result)
    assert len(result.dead_letters) == 2 and result.suppressed == {}


# --- the IoT edge: per request ---


def test_a_mebibyte_of_junk_lines_is_a_bounded_number_of_letters() -> None:
    # GIVEN the amplification body of issue 13: 1 MiB of "1\n"
    body = b"1\n" * (512 * 1024)
    # WHEN posted with the default cap
    outcome = ingest_iot_request(IotRequest(body=body), now=NOW)
    # THEN 100 letters one by one and one summary, a few tens of KB for Kinesis, all counted
    assert outcome.status == 400 and outcome.accepted == 0
    assert len(outcome.dead_letters) == MAX_DEAD_LETTERS + 1
    assert outcome.rejected == outcome.response_body()["rejected"] == 512 * 1024
    assert sum(len(encode(e)) for e in outcome.envelopes) < 100_000
    summary = summary_of(outcome.dead_letters)
    digest = hashlib.blake2b(body, digest_size=16).hexdigest()
    assert f"schema_violation={512 * 1024 - MAX_DEAD_LETTERS}" in summary.message
    assert f"body blake2b-128 {digest} ({len(body)} bytes)" in summary.message
    assert raw_bytes(summary) == b"\n".join([b"1"] * SAMPLE_RECORDS)


def test_good_readings_among_the_junk_are_all_accepted() -> None:
    # GIVEN 30 good readings spread among 300 bad lines, cap 5
    lines = [GOOD.replace(b"1764158400", str(1764158400 + i).encode()) if i % 11 == 0 else b"{"
             for i in range(330)]  # fmt: skip
    body = b"\n".join(lines)
    # WHEN posted
    outcome = ingest_iot_request(IotRequest(body=body), now=NOW, max_dead_letters=5)
    # THEN every good one is published, the bad are 5 letters and a summary, counted in full
    assert (outcome.status, outcome.accepted, outcome.rejected) == (202, 30, 300)
    assert len(outcome.envelopes) == 30 + 6
    assert outcome.suppressed == {ErrorType.INVALID_JSON: 295}
    # the response lists the first letters and the summary, within its own limit
    assert [e["at"] for e in outcome.errors] == ["line 2", "line 3", "line 4", "line 5", "line 6",
                                                 "body"]  # fmt: skip


_LINES = st.sampled_from(
    [b"1", b"1\r", b"", b" ", b"\t\r", b'"x"', b"true", b"{", b"[", b"[]", b" {", b"-", b"\xff",
     b"2.5e400", b'{"deviceId":"e","ts":1764158400}', GOOD, b"[" + GOOD + b"," + GOOD + b"]",
     b" " + GOOD, GOOD + b"\r", b'{"deviceId":"d2","ts":"9999-12-31T23:59:59Z","t":1}']
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_LINES, min_size=2, max_size=80), cap=st.integers(1, 12))
def test_past_the_cap_the_bulk_count_gives_what_one_by_one_gives(
    lines: list[bytes], cap: int
) -> None:
    # GIVEN an NDJSON body of readings, junk, blank and CRLF lines
    body = b"\n".join(lines) + (b"\n" if len(lines) % 2 else b"")
    # WHEN ingested with a small cap (the rest counted in bulk once the sample is full) and with
    # a cap nothing reaches (every line parsed one by one)
    capped = ingest_iot_request(IotRequest(body=body), now=NOW, max_dead_letters=cap)
    every = ingest_iot_request(IotRequest(body=body), now=NOW, max_dead_letters=100_000)
    # THEN the same readings in the same order, the same rejections by reason, the same blanks
    assert capped.accepted == every.accepted and capped.skipped == every.skipped
    readings = [encode(e) for e in capped.envelopes if e.kind == "record"]
    assert readings == [encode(e) for e in every.envelopes if e.kind == "record"]
    by_reason = Counter(d.error_type for d in capped.dead_letters)
    by_reason.update(capped.suppressed)
    del by_reason[ErrorType.TOO_MANY_ERRORS]
    assert by_reason == Counter(d.error_type for d in every.dead_letters)
    assert capped.rejected == every.rejected and capped.status == every.status


def test_a_gzip_body_inflating_to_5_mib_of_junk_is_cheap_to_count() -> None:
    # GIVEN 5 KB of gzip inflating to 5 MiB (the limit) of "1\n" and one good reading at its end
    junk = (5 * 1024 * 1024 - len(GOOD)) // 2
    body = gzip.compress(b"1\n" * junk + GOOD, 9)
    request = IotRequest(body=body, content_type="application/json", content_encoding="gzip")
    # WHEN ingested
    outcome = ingest_iot_request(request, now=NOW)
    # THEN every line is counted (one by one this took about 5 s of parsing; see the ARCHITECTURE)
    assert (outcome.status, outcome.accepted, outcome.rejected) == (202, 1, junk)
    assert outcome.suppressed == {ErrorType.SCHEMA_VIOLATION: junk - MAX_DEAD_LETTERS}


def test_a_retried_body_yields_the_same_letters_summary_included() -> None:
    body = b"[" + b",".join([b"1"] * 50) + b"]"
    first = ingest_iot_request(IotRequest(body=body), now=NOW, max_dead_letters=4)
    again = ingest_iot_request(IotRequest(body=body), now=NOW, max_dead_letters=4)
    ids = [d.dead_letter_id for d in first.dead_letters]
    assert ids == [d.dead_letter_id for d in again.dead_letters] and len(set(ids)) == 5


# --- batches: parsers and the log edge ---


def test_parse_batches_are_capped_too() -> None:
    iot = parse_iot_batch([b"{"] * 40, now=NOW, max_dead_letters=7)
    assert (len(iot.dead_letters), iot.rejected) == (8, 40)
    web = LogParser().parse_batch([b"junk"] * 40, now=NOW, max_dead_letters=7)
    assert (len(web.dead_letters), web.rejected) == (8, 40)
    spec = FeedSpec(name="f", id_field="id", time_field="t")
    feed = parse_feed_document(spec, orjson.dumps([{"id": "a"}] * 40), max_dead_letters=7)
    assert (len(feed.dead_letters), feed.rejected) == (8, 40)


def test_the_log_edge_caps_each_file() -> None:
    # GIVEN a file of 25 junk lines read in batches of 10, cap 3
    data = b"junk\n" * 25
    batches = list(
        read_log_stream(io.BytesIO(data), "s3://b/k", LogParser(), batch_lines=10, now=NOW,
                        max_dead_letters=3)
    )  # fmt: skip
    # THEN the first batch has the 3 letters, the last one the summary of the 22 others
    assert [len(b.dead_letters) for b in batches] == [3, 0, 1]
    assert [b.rejected for b in batches] == [3, 0, 22]
    assert batches[-1].dead_letters[0].error_type is ErrorType.TOO_MANY_ERRORS
    assert "22 more rejections than the 3" in batches[-1].dead_letters[0].message
    # and the letters of a re-read file are the same letters
    again = list(
        read_log_stream(io.BytesIO(data), "s3://b/k", LogParser(), batch_lines=10, now=NOW,
                        max_dead_letters=3)
    )  # fmt: skip
    assert [d.dead_letter_id for b in batches for d in b.dead_letters] == [
        d.dead_letter_id for b in again for d in b.dead_letters
    ]


def test_equal_bad_log_lines_are_two_letters() -> None:
    # A re-drive deletes letters by id: two equal lines must not share one.
    lines = [LogLine(1, b"junk", 4), LogLine(2, b"junk", 4)]
    result = log_lines_to_envelopes(LogParser(), lines, "s3://b/k", now=NOW)
    assert len({d.dead_letter_id for d in result.dead_letters}) == 2


def test_counters_count_suppressed_rejections_under_their_reasons() -> None:
    outcome = ingest_iot_request(
        IotRequest(body=b"1\n" * 20 + b"\n\n"), now=NOW, max_dead_letters=2
    )
    counts = IngestCounts()
    counts.add(
        outcome.accepted, outcome.dead_letters, suppressed=outcome.suppressed,
        skipped=outcome.skipped,
    )  # fmt: skip
    assert counts.dead_lettered == {"schema_violation": 20, "too_many_errors": 1}
    assert (counts.received, counts.rejected, counts.skipped) == (22, 20, 2)


# --- blank lines ---


@pytest.mark.parametrize(
    ("raw", "blank"),
    [(b"", True), (b" \t\r\n\x0b\x0c", True), ("  ", True), (b"\x00", False), (b"\x1c", False),
     ("\x1c", False), ("\u2003", False), (b"\xa0", False), (b" 1 ", False)],
)  # fmt: skip
def test_blank_means_ascii_whitespace_in_text_and_bytes_alike(
    raw: bytes | str, blank: bool
) -> None:
    assert is_blank(raw) is blank


def test_blank_lines_are_skipped_and_counted_everywhere() -> None:
    # GIVEN the same lines, blank ones among them, to every parser and edge
    blanks = [b"", b"   ", b"\t\r"]
    iot = parse_iot_batch([*blanks, GOOD], now=NOW)
    assert (len(iot.valid), iot.skipped, iot.dead_letters) == (1, 3, [])
    web = LogParser().parse_batch([*blanks, LOG_LINE], now=NOW)
    assert (len(web.valid), web.skipped, web.dead_letters) == (1, 3, [])
    edge = ingest_iot_request(IotRequest(body=b"\n".join([GOOD, *blanks, GOOD])), now=NOW)
    assert (edge.accepted, edge.skipped, edge.dead_letters) == (2, 3, [])
    lines = [LogLine(i, line, len(line)) for i, line in enumerate([*blanks, LOG_LINE], 1)]
    logs = log_lines_to_envelopes(LogParser(), lines, "s3://b/k", now=NOW)
    assert (len(logs.valid), logs.skipped, logs.dead_letters) == (1, 3, [])


def test_a_blank_request_body_is_still_refused() -> None:
    # A request must hold a reading: a blank body is a 400 with a dead letter, not a skipped line.
    outcome = ingest_iot_request(IotRequest(body=b" \n \n"), now=NOW)
    assert outcome.status == 400 and outcome.errors[0]["error_type"] == "invalid_json"


# --- control characters in keys ---


@pytest.mark.parametrize("device", ["\x00", "d\x00", "a\nb", "tab\t", "\x7f", "\x85"])
def test_device_ids_with_control_characters_are_refused(device: str) -> None:
    [letter] = parse_iot_batch([orjson.dumps({"deviceId": device, "ts": 1764158400})]).dead_letters
    assert letter.error_type is ErrorType.SCHEMA_VIOLATION
    index = next(i for i, c in enumerate(device) if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0)
    assert letter.message == (
        f"device_id: control character U+{ord(device[index]):04X} at index {index} is not allowed"
    )


def test_printable_unicode_ids_are_fine() -> None:
    raw = orjson.dumps({"deviceId": "capteur-é-🌡", "ts": 1764158400})
    assert [r.device_id for r in parse_iot_batch([raw]).valid] == ["capteur-é-🌡"]


def test_client_ips_and_feed_item_ids_with_control_characters_are_refused() -> None:
    line = LOG_LINE.replace(b"192.0.2.1", b"192.0.2.1\x00")
    [letter] = LogParser().parse_batch([line], now=NOW).dead_letters
    assert (letter.error_type, letter.message.split(":")[0]) == (
        ErrorType.SCHEMA_VIOLATION,
        "client_ip",
    )
    spec = FeedSpec(name="f", id_field="id", time_field="t")
    doc = orjson.dumps([{"id": "us\x001", "t": "2026-11-30T11:00:00Z"}])
    [letter] = parse_feed_document(spec, doc, now=NOW).dead_letters
    assert (letter.error_type, letter.message.split(":")[0]) == (
        ErrorType.SCHEMA_VIOLATION,
        "item_id",
    )


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (IotReading, {"device_id": "d", "event_time": "2026-11-30T11:00:00Z", "metrics": {"t": "NaN"}}, "metrics"),
        (IotReading, {"device_id": "d", "event_time": "2026-11-30T11:00:00Z", "metrics": {"t": "inf"}}, "metrics"),
        (WebAccessLog, {"client_ip": None, "event_time": "2026-11-30T11:00:00Z", "status": 200,
                        "request_time": float("inf")}, "request_time"),
        (WebAccessLog, {"client_ip": None, "event_time": "2026-11-30T11:00:00Z", "status": 200,
                        "bytes_sent": 2**63}, "bytes_sent"),
        (FeedItem, {"feed": "f", "item_id": "i", "event_time": "2026-11-30T11:00:00Z",
                    "fields": {"x": float("nan")}}, "fields"),
    ],
)  # fmt: skip
def test_contracts_refuse_what_json_or_the_tables_cannot_hold(
    model: type, data: dict[str, object], field: str
) -> None:
    # NaN and infinities would travel as null; a byte count beyond 64 bits overflows the table.
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    assert caught.value.errors()[0]["loc"][0] == field
