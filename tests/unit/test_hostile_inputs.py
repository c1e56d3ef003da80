"""Hostile input: no parser or edge body function raises, and every input is accounted for.

GIVEN arbitrary bytes and text (lone surrogates, NUL and other control characters), JSON nested up to
and past orjson's limits, extreme numbers (``1e400``, ``-0``, 400-digit integers, ``NaN``) and dates at
the edges of the calendar, in records that are otherwise close to valid,
WHEN ``parse_iot_batch``, ``LogParser.parse_batch``, ``parse_feed_document``, ``decode_envelopes``,
``ingest_iot_request``, ``log_lines_to_envelopes`` or ``read_log_stream`` gets them,
THEN it returns, and valid + rejected + skipped blank records = inputs, with at most the cap of dead
letters one by one plus one ``too_many_errors`` summary; whatever is valid lies within the time
horizon, holds no control characters in its keys and no non-finite number, and survives the wire.
"""

from __future__ import annotations

import gzip
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sluice.core.contracts import (
    MAX_FUTURE_SECONDS,
    MIN_EVENT_TIME,
    DeadLetter,
    ErrorType,
    FeedItem,
    IotReading,
    Source,
    WebAccessLog,
)
from sluice.core.deadletters import BatchResult
from sluice.core.inputs import MAX_RECORD_BYTES
from sluice.edges.ingest import (
    IotRequest,
    LogLine,
    ingest_iot_request,
    log_lines_to_envelopes,
    read_log_stream,
)
from sluice.parsing.feeds import USGS_EARTHQUAKES, parse_feed_document
from sluice.parsing.iot import parse_iot_batch
from sluice.parsing.weblog import MAX_LINE_BYTES, LogParser
from sluice.stream.envelopes import decode_envelopes, encode, wrap_reading

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
LATEST = NOW + timedelta(seconds=MAX_FUTURE_SECONDS)
ASCII_WHITESPACE = b" \t\n\r\x0b\x0c"
CONTROL = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))}
HOSTILE = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- building blocks, as JSON text (so they can be what no encoder writes: 1e400, NaN) ---

EXTREME_NUMBERS = st.one_of(
    st.sampled_from(
        [
            "0",
            "-0",
            "-0.0",
            "1e400",
            "-1e400",
            "1e-400",
            "1e308",
            "-1e308",
            "9" * 400,
            "-" + "9" * 30,
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775808",
            "253402300799",
            "253402300800",
            "999999999999",
            "1000000000000",
            "999999999999999",
            "1e21",
            "1e20",
            "1.7e18",
            "NaN",
            "Infinity",
            "-Infinity",
            "1764158400",
            "1764158400000",
            "0.5",
            "-1",
        ]
    ),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)


def iso(moment: datetime, offset_minutes: int) -> str:
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{moment.isoformat(timespec='seconds')}{sign}{hours:02d}:{minutes:02d}"


EXTREME_DATES = st.one_of(
    st.sampled_from(
        [
            "0001-01-01T00:00:00+14:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59-14:00",
            "9999-12-31T23:59:59Z",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00+24:00",
            "",
            " ",
            "NaN",
            "Infinity",
            "253402300799",
            "2026-11-30T12:00:00Z",
            "2026-12-01T12:00:00Z",
            "2026-12-01T12:00:01Z",
        ]
    ),
    st.builds(
        iso,
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
        st.integers(-(23 * 60 + 59), 23 * 60 + 59),
    ),
).map(lambda text: orjson.dumps(text).decode())

NASTY_STRINGS = st.one_of(
    st.sampled_from(
        [
            '"\\u0000"',
            '"x\\u0000y"',
            '"\\ud800"',
            '"\\udc00"',
            '"\\ud83d\\ude00"',
            '"a\\nb"',
            '"\\u007f"',
            '"\\u0085"',
            '""',
            '" "',
            '"\\t"',
        ]
    ),
    st.text(max_size=20).map(lambda text: orjson.dumps(text).decode()),
)
DEPTHS = st.sampled_from([0, 1, 8, 9, 253, 254, 255, 256, 1023, 1024, 1025]) | st.integers(0, 1100)


@st.composite
def nested(draw: st.DrawFn) -> str:
    depth = draw(DEPTHS)
    inner = draw(
        st.sampled_from(["1", "null", '"x"', "[]", "{}", '{"deviceId":"d","ts":1764158400}'])
    )
    if draw(st.booleans()):
        return "[" * depth + inner + "]" * depth
    return '{"a":' * depth + inner + "}" * depth


JSON_VALUES = st.one_of(EXTREME_NUMBERS, EXTREME_DATES, NASTY_STRINGS, nested(),
                        st.sampled_from(["true", "false", "null", "[]", "{}"]))  # fmt: skip
KEYS = st.sampled_from(
    ['"t"', '"metrics"', '"attributes"', '"location"', '"lat"', '"lon"', '"msgid"', '"topic"',
     '"payload"', '"flags"', '"\\u0000"', '"\\ud800"', '"a.b"', '""']
)  # fmt: skip


BENIGN_DEVICES = st.sampled_from(['"d1"', '"sensor/7"', "17", '"é-3"'])
BENIGN_TIMES = st.sampled_from(
    ["1764158400", "1764158400.5", "1764158400000", "1764158400000000", "1764158400000000000",
     '"2026-11-30T11:00:00Z"', '"2026-11-30T13:00:00+01:00"', '"2026-11-30T11:00:00"']
)  # fmt: skip
BENIGN_VALUES = st.sampled_from(
    ["21.5", "-0", "0", '"C"', "true", '{"rssi":-60}', "[1,2]", "1e308"]
)


@st.composite
def hostile_reading(draw: st.DrawFn) -> bytes:
    """A device message close to valid: an id, a time and fields, each benign or hostile."""
    device = draw(BENIGN_DEVICES | st.sampled_from(["1e400", "null", "[1]", '{"a":1}'])
                  | NASTY_STRINGS | JSON_VALUES)  # fmt: skip
    when = draw(BENIGN_TIMES | EXTREME_DATES | EXTREME_NUMBERS | JSON_VALUES)
    fields = draw(st.lists(st.tuples(KEYS, BENIGN_VALUES | JSON_VALUES), max_size=3))
    parts = [f'"deviceId":{device}', f'"ts":{when}', *(f"{k}:{v}" for k, v in fields)]
    parts = draw(st.permutations(parts))
    text = "{" + ",".join(parts) + "}"
    wrap = draw(st.integers(0, 2))
    return ("[" * wrap + text + "]" * wrap).encode()


IOT_RECORDS = st.one_of(
    st.binary(max_size=300),
    st.text(st.characters() | st.characters(categories=["Cs"]), max_size=100),
    hostile_reading(),
    JSON_VALUES.map(str.encode),
    st.sampled_from([b"", b" ", b"\t\r\n", b"\x0b\x0c", b"\x00", b"\x1c", b"\xa0", "\u2028"]),
)


def leaves(value: Any) -> int:
    """Readings a decoded record holds: arrays (nested too) are containers. Iterative: 1024 deep."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        else:
            count += 1
    return count


def blank(raw: bytes | str, limit: int) -> bool:
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    return len(raw) <= limit and not data.strip(ASCII_WHITESPACE)


def expected_iot(raw: bytes | str) -> tuple[int, int]:
    """(outcomes, skipped) one raw record must give."""
    if blank(raw, MAX_RECORD_BYTES):
        return 0, 1
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return 1, 0
    return (1, 0) if len(raw) > MAX_RECORD_BYTES else (max(1, leaves(decoded)), 0)


def assert_capped(result: BatchResult[Any], cap: int) -> None:
    summaries = [d for d in result.dead_letters if d.error_type is ErrorType.TOO_MANY_ERRORS]
    assert len(summaries) == (1 if result.suppressed else 0)
    assert len(result.dead_letters) <= cap + 1
    if result.suppressed:
        assert len(result.dead_letters) == cap + 1
        assert f"={sum(result.suppressed.values())}" in summaries[0].message or (
            len(result.suppressed) > 1
        )


def assert_sound(record: IotReading | WebAccessLog | FeedItem) -> None:
    """What is valid is within the horizon and has no control character in its keys."""
    assert MIN_EVENT_TIME <= record.event_time <= LATEST
    if isinstance(record, IotReading):
        assert not CONTROL & set(record.device_id)
    elif isinstance(record, WebAccessLog):
        assert not CONTROL & set(record.client_ip or "")
    else:
        assert not CONTROL & set(record.item_id)


# --- the parsers ---


@HOSTILE
@given(records=st.lists(IOT_RECORDS, max_size=10), cap=st.integers(1, 4))
@example(records=[b'{"deviceId":"x","ts":"0001-01-01T00:00:00+14:00","t":1}'], cap=1)
@example(records=[b'{"deviceId":"x","ts":1,"a":' + b"[" * 300 + b"]" * 300 + b"}"], cap=1)
@example(records=["\ud800", b"", b"  "], cap=1)
def test_iot_parser_never_raises_and_accounts_for_every_reading(
    records: list[bytes | str], cap: int
) -> None:
    result = parse_iot_batch(records, now=NOW, max_dead_letters=cap)
    outcomes = [expected_iot(raw) for raw in records]
    assert result.skipped == sum(skipped for _, skipped in outcomes)
    assert len(result.valid) + result.rejected == sum(n for n, _ in outcomes)
    assert_capped(result, cap)
    for reading in result.valid:
        assert_sound(reading)
        # what an edge accepts, the job accepts: the reading survives its own wire form
        [back] = parse_iot_batch([reading.model_dump_json()], now=NOW).valid
        assert back == reading


ANY_LINE = st.one_of(
    st.binary(max_size=200),
    st.text(st.characters() | st.characters(categories=["Cs"]), max_size=200),
    st.sampled_from([b"", b" \t", b"\x0b", b"\x1c", b"\x00", "\u2003"]),
)
CLF_TIMES = st.one_of(
    st.sampled_from(
        [
            "31/Dec/9999:23:59:59 +0000",
            "31/Dec/9999:23:59:59 -1400",
            "01/Jan/0001:00:00:00 +1400",
            "01/Jan/1970:00:00:00 +0000",
            "31/Dec/1969:23:59:59 +0000",
            "30/Nov/2026:12:00:00 +0000",
            "01/Dec/2026:12:00:01 +0000",
            "29/Feb/2023:00:00:00 +0000",
            "00/Jan/2020:00:00:00 +0000",
        ]
    ),
    st.builds(
        lambda d, m, y, off: f"{d:02d}/{m}/{y:04d}:12:00:00 {off}",
        st.integers(0, 32),
        st.sampled_from(["Jan", "Feb", "Dec", "Foo"]),
        st.integers(0, 9999),
        st.sampled_from(["+0000", "-1400", "+2359", "+9999"]),
    ),
)
CLIENTS = st.sampled_from(
    ["1.2.3.4", "::1", "-", "1.2.3.4\x00", "\x00", "a\tb", "1.2.3.4, 5.6.7.8", "\x85", "é"]
)
BIG = st.sampled_from(["0", "-", "9223372036854775807", "9223372036854775808", "9" * 400])
REQUEST_TIMES = st.sampled_from(["", " 0.123", " " + "9" * 400 + ".0", " 1e400"])


@st.composite
def hostile_log_line(draw: st.DrawFn) -> tuple[str, str]:
    """(log format, line): close to a valid line of that format, any field hostile."""
    client, sent = draw(CLIENTS), draw(BIG)
    kind = draw(st.sampled_from(["auto", "iso", "msec"]))
    if kind == "auto":
        trailing = draw(REQUEST_TIMES)
        line = f'{client} - - [{draw(CLF_TIMES)}] "GET / HTTP/1.1" 200 {sent} "-" "-"{trailing}'
        return "auto", line
    if kind == "iso":
        when = orjson.loads(draw(EXTREME_DATES))
        line = f'{client} [{when}] "GET /a HTTP/1.1" 200 {sent}{draw(REQUEST_TIMES)}'
        return (
            '$remote_addr [$time_iso8601] "$request" $status $body_bytes_sent $request_time',
            line,
        )
    number = draw(EXTREME_NUMBERS)
    return "[$msec] $status $remote_addr", f"[{number}] 200 {client}"


@HOSTILE
@given(
    data=st.lists(hostile_log_line() | ANY_LINE.map(lambda line: ("auto", line)), max_size=8),
    cap=st.integers(1, 4),
)
def test_log_parser_never_raises_and_accounts_for_every_line(
    data: list[tuple[str, bytes | str]], cap: int
) -> None:
    for spec in {spec for spec, _ in data} or {"auto"}:
        lines = [line for s, line in data if s == spec]
        result = LogParser(spec).parse_batch(lines, now=NOW, max_dead_letters=cap)
        assert result.skipped == sum(1 for line in lines if _blank_line(line))
        assert len(result.valid) + result.rejected + result.skipped == len(lines)
        assert_capped(result, cap)
        for record in result.valid:
            assert_sound(record)
            assert record.bytes_sent is None or record.bytes_sent < 2**63
            WebAccessLog.model_validate_json(record.model_dump_json(), context=None)


def _blank_line(line: bytes | str) -> bool:
    if isinstance(line, str):
        try:
            line = line.encode("utf-8")
        except UnicodeEncodeError:
            return False  # lone surrogates: not text, rejected
    return blank(line, MAX_LINE_BYTES)


@st.composite
def hostile_feed_document(draw: st.DrawFn) -> bytes:
    items = []
    for _ in range(draw(st.integers(0, 4))):
        item_id = draw(st.sampled_from(['"us1"', "7", '"\\u0000"', "[1]", "null"]) | JSON_VALUES)
        when = draw(EXTREME_NUMBERS | JSON_VALUES)
        extra = draw(JSON_VALUES)
        items.append(
            f'{{"id":{item_id},"properties":{{"time":{when},"updated":{draw(EXTREME_NUMBERS)},'
            f'"mag":{extra}}},"geometry":{{"coordinates":[{draw(EXTREME_NUMBERS)},1,{extra}]}}}}'
        )
    return ('{"features":[' + ",".join(items) + "]}").encode()


@HOSTILE
@given(
    document=st.one_of(st.binary(max_size=300), hostile_feed_document(), nested().map(str.encode)),
    decoded_first=st.booleans(),
    cap=st.integers(1, 3),
)
def test_feed_parser_never_raises_and_accounts_for_every_item(
    document: bytes, decoded_first: bool, cap: int
) -> None:
    try:
        decoded = orjson.loads(document)
    except orjson.JSONDecodeError:
        decoded = None
    items = decoded.get("features") if isinstance(decoded, dict) else None
    # the poller hands over the decoded document, the CLI the bytes
    given_document = decoded if decoded_first and decoded is not None else document
    result = parse_feed_document(USGS_EARTHQUAKES, given_document, now=NOW, max_dead_letters=cap)
    if isinstance(items, list):
        assert len(result.valid) + result.rejected == len(items)
    else:
        assert (result.valid, result.rejected) == ([], 1)
    assert_capped(result, cap)
    for item in result.valid:
        assert_sound(item)


@HOSTILE
@given(
    records=st.lists(
        st.one_of(
            st.binary(max_size=200),
            JSON_VALUES.map(str.encode),
            hostile_reading(),
            st.builds(
                lambda payload: (
                    b'{"source":"iot","event_id":"e","ingest_time":"2026-11-30T12:00:00Z",'
                    b'"partition_key":"k","payload":' + payload + b"}"
                ),
                hostile_reading() | nested().map(str.encode),
            ),
        ),
        max_size=8,
    )
)
def test_envelope_decoding_never_raises_and_accounts_for_every_record(records: list[bytes]) -> None:
    result = decode_envelopes(records)
    assert len(result.valid) + len(result.dead_letters) == len(records)


# --- the edge body functions ---


def body_lines(body: bytes) -> list[bytes]:
    """The lines of an NDJSON body, as the edge splits it (a final newline ends the last line)."""
    pieces = body.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    return [piece[:-1] if piece.endswith(b"\r") else piece for piece in pieces]


def is_ndjson(body: bytes) -> bool:
    try:
        orjson.loads(body)
        return False
    except orjson.JSONDecodeError:
        pass
    lines = [line for line in body_lines(body) if line.strip(ASCII_WHITESPACE)]
    return len(lines) > 1 and any(_is_json(line) for line in lines)


def _is_json(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


BODIES = st.one_of(
    st.lists(IOT_RECORDS.filter(lambda r: isinstance(r, bytes)), min_size=2, max_size=8).map(
        lambda records: b"\n".join(records) + b"\n"
    ),
    st.lists(hostile_reading() | JSON_VALUES.map(str.encode), max_size=6).map(
        lambda items: b"[" + b",".join(items) + b"]"
    ),
    st.binary(max_size=400),
    hostile_reading(),
    nested().map(str.encode),
)


@HOSTILE
@given(body=BODIES, compress=st.booleans(), cap=st.integers(1, 4))
@example(body=b"[" * 300 + b"1" + b"]" * 300, compress=False, cap=1)
@example(body=b"1\n" * 50, compress=True, cap=3)
def test_iot_edge_never_raises_and_accounts_for_every_reading(
    body: bytes, compress: bool, cap: int
) -> None:
    request = IotRequest(
        body=gzip.compress(body) if compress else body,
        content_encoding="gzip" if compress else None,
    )
    outcome = ingest_iot_request(request, now=NOW, max_dead_letters=cap)
    assert outcome.status in (202, 400, 413, 415)
    assert (outcome.status == 202) == (outcome.accepted > 0)
    assert len(outcome.envelopes) == outcome.accepted + len(outcome.dead_letters)
    assert outcome.accepted + outcome.rejected >= (0 if outcome.skipped else 1)
    assert outcome.response_body()["rejected"] == outcome.rejected
    assert len(outcome.dead_letters) <= cap + 1
    for envelope in outcome.envelopes:
        assert len(encode(envelope)) < 200_000
    if is_ndjson(body):
        # blank lines and every other line are judged exactly as the parser judges them
        lines = body_lines(body)
        parsed = parse_iot_batch(lines, now=NOW, max_dead_letters=cap)
        assert (outcome.accepted, outcome.rejected, outcome.skipped) == (
            len(parsed.valid),
            parsed.rejected,
            parsed.skipped,
        )
        assert [e.event_id for e in outcome.envelopes[: outcome.accepted]] == [
            wrap_reading(r).event_id for r in parsed.valid
        ]


@HOSTILE
@given(lines=st.lists(ANY_LINE | hostile_log_line().map(lambda d: d[1]), max_size=10),
       cap=st.integers(1, 4))  # fmt: skip
def test_log_edge_never_raises_and_judges_lines_as_the_parser_does(
    lines: list[bytes | str], cap: int
) -> None:
    parser = LogParser("auto")
    log_lines = [LogLine(i, line, len(line)) for i, line in enumerate(lines, 1)]
    result = log_lines_to_envelopes(parser, log_lines, "test:origin", now=NOW, max_dead_letters=cap)
    parsed = parser.parse_batch(lines, now=NOW, max_dead_letters=cap)
    assert (len(result.valid), result.rejected, result.skipped) == (
        len(parsed.valid),
        parsed.rejected,
        parsed.skipped,
    )
    assert_capped(result, cap)
    # equal bad lines are distinct letters (their identity is their position)
    kept = [d for d in result.dead_letters if d.error_type is not ErrorType.TOO_MANY_ERRORS]
    assert len({d.dead_letter_id for d in kept}) == len(kept)


@HOSTILE
@given(
    data=st.binary(max_size=2000),
    framing=st.sampled_from(["plain", "gzip", "truncated-gzip"]),
    batch_lines=st.integers(1, 5),
)
def test_log_stream_never_raises_and_accounts_for_every_line(
    data: bytes, framing: str, batch_lines: int
) -> None:
    if framing == "plain":
        stream: io.IOBase = io.BytesIO(data)
    else:
        packed = gzip.compress(data)
        if framing == "truncated-gzip":
            packed = packed[: len(packed) // 2]
        stream = gzip.GzipFile(fileobj=io.BytesIO(packed))
    batches = list(
        read_log_stream(stream, "s3://b/k", LogParser(), batch_lines=batch_lines, now=NOW)  # type: ignore[arg-type]
    )
    inputs = sum(len(b.valid) + b.rejected + b.skipped for b in batches)
    broken = [d for b in batches for d in b.dead_letters if "compressed data broken" in d.message]
    if framing == "truncated-gzip":
        assert len(broken) == 1  # one letter for the break, not counted as a line
        inputs -= 1
    else:
        assert inputs == len(body_lines(data)) and not broken


def test_dead_letters_of_hostile_input_are_valid_contract_values() -> None:
    # GIVEN the inputs that used to raise WHEN dead-lettered THEN each letter survives its wire form
    raws = [
        b'{"deviceId":"x","ts":"0001-01-01T00:00:00+14:00","t":1}',
        b'{"deviceId":"x","ts":1764158400,"a":' + b"[" * 300 + b"]" * 300 + b"}",
        b"[" + b"[" * 300 + b'{"deviceId":"x"}' + b"]" * 300 + b"]",
        "\ud800",
        b'{"deviceId":' + b"[" * 1000 + b"]" * 1000 + b',"ts":1}',
    ]
    result = parse_iot_batch(raws, now=NOW)
    assert result.rejected == len(raws) and not result.valid
    for letter in result.dead_letters:
        assert letter.source is Source.IOT
        assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter
