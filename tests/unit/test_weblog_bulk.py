"""The bulk path (``LogParser.parse_many``) gives exactly what the per-line path (``parse_raw``) gives.

GIVEN generated batches of access-log lines (valid, malformed, and the edges: ``-`` fields, odd
requests, IPv6, quotes and escapes, huge values, bytes that are not UTF-8, blank lines, times out
of the horizon) in every kind of format, WHEN one parser reads them in bulk and line by line, THEN
the outcomes are the same in the same order: records equal field by field (types, ``__dict__``
order and fields set included) and rejections with the same error type, reason and raw input.
Every line here is generated for these tests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.core.contracts import TimeHorizon, WebAccessLog
from sluice.core.deadletters import Rejection
from sluice.parsing.weblog import LogParser
from sluice.parsing.weblog.bulk import CHUNK_LINES
from sluice.parsing.weblog.columns import ANALYTIC_FIELDS, parse_weblog_columns

NOW = datetime(2026, 11, 26, 12, 30, tzinfo=UTC)
HORIZON = TimeHorizon(max_future_seconds=3600, min_event_time=datetime(2020, 1, 1, tzinfo=UTC))
CONTEXT = HORIZON.context(NOW)

UPSTREAM_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" rt=$request_time ua="$upstream_addr" us="$upstream_status" '
    'urt="$upstream_response_time" host=$host:$server_port len=$request_length id=$request_id'
)
ISO_FORMAT = '$remote_addr [$time_iso8601] $host "$request" $status $bytes_sent $body_bytes_sent'
MSEC_FORMAT = '$remote_addr $msec "$request" $status $body_bytes_sent $http_x_trace'
URI_FORMAT = '$remote_addr [$time_local] "$request_method $request_uri" $status'
JSON_FORMAT = (
    'escape=json {"ip":"$remote_addr","t":"$time_iso8601","r":"$request","s":$status,'
    '"b":$body_bytes_sent}'
)
FORMATS = ["auto", "combined", "main", UPSTREAM_FORMAT, ISO_FORMAT, MSEC_FORMAT, URI_FORMAT,
           JSON_FORMAT, "escape=none " + ISO_FORMAT]  # fmt: skip
PARSERS = {spec: LogParser(spec) for spec in FORMATS}

# --- pieces of lines: mostly values a record takes, the rest each piece's edge cases ---------------


def mostly(good: st.SearchStrategy[str], edge: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(good, good, good, edge)


ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
client = mostly(ipv4, st.sampled_from(
    ["2001:db8::1", "::1", "[2001:db8::7]", "-", "", "vhost.example 203.0.113.9",
     "10.0.0.1, 203.0.113.9", '"1.2.3.4" 5.6.7.8', "a, b client", "203.0.113.1\t", "1.2.3.4\x00"]))  # fmt: skip
user = mostly(st.just("-"), st.sampled_from(["alice", "b%20ob", '"q"', ""]))
clf_time = mostly(
    st.builds(lambda d, hh, mm, ss, off: f"{d:02d}/Nov/2026:{hh:02d}:{mm:02d}:{ss:02d} {off}",
              st.integers(1, 26), st.integers(0, 12), st.integers(0, 59), st.integers(0, 59),
              st.sampled_from(["+0000", "+0330", "-0800"])),
    st.builds(lambda d, m, y, hh, mm, ss, off: f"{d:02d}/{m}/{y}:{hh:02d}:{mm:02d}:{ss:02d} {off}",
              st.sampled_from([0, 29, 30, 31]), st.sampled_from(["Feb", "Nov", "Dec", "Foo"]),
              st.sampled_from([2019, 2026, 9999]), st.sampled_from([12, 13, 24]),
              st.integers(0, 61), st.integers(0, 61),
              st.sampled_from(["+0000", "-1300", "+2400", "+0099"]))
    | st.sampled_from(["", "garbage", "26/Nov/2026:12:00 +0000", "26/Nov/2026:13:29:59 +0000",
                       "26/Nov/2026:13:30:00 +0000", "26/Nov/2026:13:30:01 +0000",
                       "01/Jan/2020:00:00:00 +0000", "31/Dec/2019:23:59:59 +0000"]),
)  # fmt: skip
iso_time = mostly(
    st.sampled_from(["2026-11-26T12:00:00+00:00", "2026-11-26T12:00:01Z", "2026-11-26T12:00:00"]),
    st.sampled_from(["2026-11-26T14:29:00+01:00", "2026-11-27T12:00:00+00:00",
                     "2026-13-01T00:00:00+00:00", "-", "2019-01-01T00:00:00Z"]),
)  # fmt: skip
msec = mostly(st.sampled_from(["1795700000.123", "1795700400.000", "1795700000"]),
              st.sampled_from(["1795708000.5", "-", "abc", "1e30", "nan"]))  # fmt: skip
word = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\'),
               min_size=0, max_size=12)  # fmt: skip
request = mostly(
    st.builds(lambda m, p, q, v: f"{m} {p}{q} {v}",
              st.sampled_from(["GET", "POST", "M-SEARCH", "get"]),
              st.sampled_from(["/", "/a/b", "/p%20q", "*", ""]),
              st.sampled_from(["", "?", "?a=1&b=2", "??"]),
              st.sampled_from(["HTTP/1.1", "HTTP/2.0", "HTTP/", "HTTP/1.1?"])),
    st.sampled_from(["-", "", "GET /", "GET / HTTP/1.1 extra", "1NV / HTTP/1.1",
                     r"\x16\x03\x01\x00", "GET /\x22q", "GET /caf\xe9 HTTP/1.1",
                     r"GET /\x22q\x22 HTTP/1.1", r"GET /a\"b HTTP/1.0", "GET  /double HTTP/1.1",
                     "GET /a\tb HTTP/1.1", "GET /?x HTTP/1.1"]),
)  # fmt: skip
status = mostly(st.sampled_from(["200", "304", "404", "500", "099"]),
                st.sampled_from(["2000", "20", "-"]))  # fmt: skip
number = mostly(st.integers(0, 10**6).map(str), st.sampled_from(
    ["-", "0", "007", "9223372036854775807", "9223372036854775808", "999999999999999999",
     "1" * 25, "65535", "65536", "1" * 5000]))  # fmt: skip
quoted = mostly(st.sampled_from(["-", "", "https://ex.example/?q=1", "curl/8.5.0"]) | word,
                st.sampled_from(['a"b', r"a\x22b", r"caf\xC3\xA9", r"bad\xFF", "tab\there",
                                 "\u00e9t\u00e9", "a\x7fb"]))  # fmt: skip
forwarded = mostly(st.just("-"), st.sampled_from(["", "203.0.113.4", "10.0.0.1, 198.51.100.2",
                                                  "1.5", "unknown", "junk value"]))  # fmt: skip
seconds = mostly(st.sampled_from(["0.012", "1", "-", "12.50", "007.5"]),
                 st.sampled_from(["1e3", "inf", "0." + "0" * 50 + "1", "9" * 400 + ".0", "",
                                  "1_0", " 1"]))  # fmt: skip
upstream = mostly(st.sampled_from(["-", "502, 200", "200", "0.010, 0.002 : 0.004", "-, 0.1"]),
                  st.sampled_from(["10.0.0.1:80", "10.0.0.1:80, 10.0.0.2:80 : 10.0.0.3:80",
                                   "x", "1" * 30, "1e5"]))  # fmt: skip
trailing = mostly(st.just(""), st.sampled_from([" 0.123", " rt=0.1", ' "-"', " 12", ' uct="0.0"',
                                                "   ", " 99999." + "9" * 400]))  # fmt: skip
odd_line = st.sampled_from(["", "   ", "\t", "garbage", "1", '-"', "\xff\xfe"])


def _line(draw: Any, spec: str) -> str:
    t = draw(clf_time)
    if spec in ("auto", "combined", "main"):
        head = (
            f'{draw(client)} - {draw(user)} [{t}] "{draw(request)}" {draw(status)} {draw(number)}'
        )
        if spec == "auto":
            shape = draw(st.integers(0, 3))
            referer = f' "{draw(quoted)}" "{draw(quoted)}"' if shape else ""
            xff = f' "{draw(forwarded)}"' if shape >= 2 else ""
            return head + referer + xff + draw(trailing)
        line = head + f' "{draw(quoted)}" "{draw(quoted)}"'
        return line + (f' "{draw(forwarded)}"' if spec == "main" else "")
    if spec == UPSTREAM_FORMAT:
        return (
            f'{draw(client)} - {draw(user)} [{t}] "{draw(request)}" {draw(status)} {draw(number)} '
            f'"{draw(quoted)}" "{draw(quoted)}" rt={draw(seconds)} ua="{draw(upstream)}" '
            f'us="{draw(upstream)}" urt="{draw(upstream)}" host={draw(word)}:{draw(number)} '
            f"len={draw(number)} id={draw(word)}"
        )
    if spec.endswith(ISO_FORMAT):
        return (
            f'{draw(client)} [{draw(iso_time)}] {draw(word)} "{draw(request)}" {draw(status)} '
            f"{draw(number)} {draw(number)}"
        )
    if spec == MSEC_FORMAT:
        return (
            f'{draw(client)} {draw(msec)} "{draw(request)}" {draw(status)} {draw(number)} '
            f"{draw(word)}"
        )
    if spec == URI_FORMAT:
        return f'{draw(client)} [{t}] "{draw(request)}" {draw(status)}'
    return (
        f'{{"ip":"{draw(client)}","t":"{draw(iso_time)}","r":"{draw(request)}",'
        f'"s":{draw(status)},"b":{draw(number)}}}'
    )


@st.composite
def batches(draw: Any) -> tuple[str, list[bytes | str]]:
    spec = draw(st.sampled_from(FORMATS))
    size = draw(st.integers(0, 12))
    lines: list[bytes | str] = []
    for _ in range(size):
        kind = draw(st.integers(0, 19))
        text = draw(odd_line) if kind == 0 else _line(draw, spec)
        if kind == 1:  # bytes that are not UTF-8 inside an otherwise good line
            raw = text.encode("utf-8", "surrogateescape")
            cut = draw(st.integers(0, len(raw)))
            lines.append(raw[:cut] + b"\xff\xc3" + raw[cut:])
        elif kind == 2:
            lines.append(text)  # text, not bytes
        elif kind == 3:
            lines.append(text[: draw(st.integers(0, len(text)))].encode())  # cut short
        else:
            lines.append(text.encode("utf-8", "surrogateescape"))
    if draw(st.booleans()) and lines:  # one batch of bytes and text mixed, or all one kind
        lines = [line.encode() if isinstance(line, str) else line for line in lines]
    return spec, lines


def _same(bulk: WebAccessLog | Rejection | None, one: WebAccessLog | Rejection | None) -> None:
    assert type(bulk) is type(one), (bulk, one)
    if isinstance(one, WebAccessLog):
        assert isinstance(bulk, WebAccessLog)
        assert repr(bulk) == repr(one)  # values, their types, and the __dict__ order
        assert bulk == one
        assert bulk.__pydantic_fields_set__ == one.__pydantic_fields_set__
        assert bulk.model_dump_json() == one.model_dump_json()
        for name, value in one.__dict__.items():
            assert type(bulk.__dict__[name]) is type(value), name
    else:
        assert bulk == one


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_bulk_outcomes_equal_line_by_line(case: tuple[str, list[bytes | str]]) -> None:
    spec, lines = case
    parser = PARSERS[spec]
    bulk = parser.parse_many(lines, CONTEXT)
    one_by_one = [parser.parse_raw(line, CONTEXT) for line in lines]
    assert len(bulk) == len(one_by_one)
    for got, expected in zip(bulk, one_by_one, strict=True):
        _same(got, expected)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_the_plain_regex_reads_a_plain_line_as_the_format_regex_does(
    case: tuple[str, list[bytes | str]],
) -> None:
    """The bulk path's regex (escape loops compiled out) on a line without a backslash: the same
    match or no match, and the same groups, as the format's own regex."""
    spec, lines = case
    parser = PARSERS[spec]
    if parser._bulk is None:
        return
    assert parser._bulk.regex.pattern != parser._regex.pattern  # the plain form is in use
    for raw in lines:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if "\\" in text:
            continue
        plain, full = parser._bulk.regex.match(text), parser._regex.match(text)
        assert (plain is None) == (full is None), text
        if plain is not None and full is not None:
            assert plain.groups() == full.groups(), text


@pytest.mark.parametrize("spec", ["auto", "combined", UPSTREAM_FORMAT])
def test_a_realistic_batch_takes_the_bulk_path_and_matches(spec: str) -> None:
    """GIVEN plain lines of a bulk format, THEN they are records equal to the per-line ones, and
    records of one batch get new lists and dicts of their own (as validation gives them)."""
    line = '203.0.113.7 - - [26/Nov/2026:12:00:00 +0000] "GET /a?b=1 HTTP/1.1" 200 512 "-" "curl/8"'
    if spec == UPSTREAM_FORMAT:
        line += ' rt=0.010 ua="10.0.0.1:80, 10.0.0.2:80" us="502, 200" urt="0.001, 0.009" '
        line += "host=shop.example:443 len=310 id=abc"
    parser = PARSERS[spec]
    bulk = parser.parse_many([line.encode()] * 3, CONTEXT)
    for record in bulk:
        _same(record, parser.parse_raw(line.encode(), CONTEXT))
    first, second = bulk[0], bulk[1]
    assert isinstance(first, WebAccessLog) and isinstance(second, WebAccessLog)
    assert first.flags is not second.flags and first.extra is not second.extra
    assert first.forwarded_for is not second.forwarded_for


def test_parse_batch_goes_through_the_bulk_path_with_the_same_dead_letters() -> None:
    """GIVEN a batch with good lines, a bad time, a huge number and junk, THEN ``parse_batch`` gives
    the records and dead letters (types, reasons, raw input, order) of the per-line path."""
    good = b'198.51.100.2 - - [26/Nov/2026:12:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "x"'
    lines = [good, good.replace(b"26/Nov", b"31/Nov"), good.replace(b" 5 ", b" " + b"9" * 30 + b" "),
             b"junk", b"", good.replace(b"12:00:00", b"23:59:59")]  # fmt: skip
    parser = PARSERS["combined"]
    result = parser.parse_batch(lines, horizon=HORIZON, now=NOW)
    expected = [parser.parse_raw(line, CONTEXT) for line in lines]
    assert result.valid == [e for e in expected if isinstance(e, WebAccessLog)]
    letters = [(d.error_type, d.message, d.raw) for d in result.dead_letters]
    assert letters == [
        (e.error_type, e.message, e.raw.decode()) for e in expected if isinstance(e, Rejection)
    ]
    assert [t for t, _, _ in letters] == [
        "invalid_timestamp", "schema_violation", "unparseable_line", "invalid_timestamp"
    ]  # fmt: skip
    assert result.skipped == 1


GOOD_TAIL = '[26/Nov/2026:12:00:00 +0000] "GET /a?b HTTP/1.1" 200 5 "-" "curl/8"'
UPSTREAM_HEAD = '203.0.113.7 - - [26/Nov/2026:12:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-" '
EDGE_LINES = [
    ("auto", f" - - {GOOD_TAIL}"),  # an empty client stays "" in auto, "-" alone is None
    ("auto", f"- - - {GOOD_TAIL}"),
    ("combined", f" - - {GOOD_TAIL}"),
    ("auto", f"203.0.113.7 - - {GOOD_TAIL} 0.250"),
    ("auto", f"203.0.113.7 - - {GOOD_TAIL} 0.250 extra"),
    ("auto", f'203.0.113.7 - - {GOOD_TAIL} "-" 1.5'),
    ("auto", f'203.0.113.7 - - {GOOD_TAIL} "1.5"'),
    ("auto", '203.0.113.7 - - [26/Nov/2026:12:00:00 +0000] "GET / HTTP/1.1" 200 -'),
    ("auto", '2001:db8::1 - - [26/Nov/2026:12:00:00 +0000] "-" 400 0 "" ""'),
    ("combined", '203.0.113.7 - - [26/Nov/2026:12:00:00 +0000] "GET /" 200 5 "-" "-"'),
    ("combined", '203.0.113.7 - - [26/Nov/2026:12:00:00 +0000] "" 400 0 "-" "-"'),
    ("combined", f"203.0.113.7 - - {GOOD_TAIL}   "),
    *((UPSTREAM_FORMAT, UPSTREAM_HEAD + tail) for tail in (
        'rt=0.1 ua="-" us="-" urt="-" host=a:65535 len=1 id=-',
        'rt=0.1 ua="-" us="-" urt="-" host=a:65536 len=1 id=-',
        'rt=- ua="x:1 : y:2" us="502, 200" urt="0.1, -" host=[::1]:8080:80 len=- id=',
        'rt=1e3 ua="-" us="-" urt="-" host=a:1 len=1 id=x',
        'rt=1 ua="-" us="2x" urt="-" host=a:1 len=1 id=x',
        'rt=1 ua="-" us="-" urt="0.1x" host=a:1 len=1 id=x',
    )),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "line"), EDGE_LINES)
def test_edge_lines_equal_line_by_line(spec: str, line: str) -> None:
    parser = PARSERS[spec]
    for raw in (line, line.encode()):
        [bulk] = parser.parse_many([raw], CONTEXT)
        _same(bulk, parser.parse_raw(raw, CONTEXT))


def test_a_batch_longer_than_a_slice_matches_line_by_line() -> None:
    """GIVEN a batch of several slices (``bulk.CHUNK_LINES``) with bad lines, times repeated across
    slices and lines that go line by line, THEN every outcome is the per-line one, in order."""
    good = '203.0.113.{i} - - [26/Nov/2026:12:{m:02d}:00 +0000] "GET /{i} HTTP/1.1" 200 {i} "-" "x"'
    lines: list[bytes | str] = []
    for i in range(3 * CHUNK_LINES + 5):
        line = good.format(i=i % 250, m=(i // 100) % 60)
        if i % 7 == 3:
            line = line.replace("12:", "25:")  # not a time
        elif i % 11 == 5:
            line = line.replace('"x"', r'"\x41"')  # an escape: line by line
        elif i % 13 == 0:
            line = ""
        lines.append(line.encode())
    parser = PARSERS["combined"]
    bulk = parser.parse_many(lines, CONTEXT)
    for got, expected in zip(
        bulk, [parser.parse_raw(line, CONTEXT) for line in lines], strict=True
    ):
        _same(got, expected)
    assert sum(isinstance(outcome, WebAccessLog) for outcome in bulk) > 2 * CHUNK_LINES


# --- the columnar parse (parse_weblog_columns): the values of parse_batch's records, its letters --


def _letters(letters: Any) -> list[dict[str, Any]]:
    return [letter.model_dump(exclude={"first_seen"}) for letter in letters]


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.sampled_from([1000, 3]))
def test_columns_hold_the_values_of_the_batch_records(
    case: tuple[str, list[bytes | str]], cap: int
) -> None:
    """GIVEN any generated batch (and a dead-letter cap it may pass), WHEN it is parsed into
    columns and into records, THEN each column holds its field of the valid records, in order,
    with the same types, and the dead letters, skips and suppressed counts are the same."""
    spec, lines = case
    parser = PARSERS[spec]
    columns = parse_weblog_columns(parser, lines, horizon=HORIZON, now=NOW, max_dead_letters=cap)
    records = parser.parse_batch(lines, horizon=HORIZON, now=NOW, max_dead_letters=cap)
    assert len(columns.columns) == len(records.valid)
    for name in ANALYTIC_FIELDS:
        expected = [record.__dict__[name] for record in records.valid]
        got = getattr(columns.columns, name)
        assert list(got) == expected, name
        assert [type(v) for v in got] == [type(v) for v in expected], name
    assert _letters(columns.dead_letters) == _letters(records.dead_letters)
    assert (columns.skipped, columns.suppressed, columns.rejected) == (
        records.skipped, records.suppressed, records.rejected)  # fmt: skip


def test_columns_of_a_batch_with_lines_of_every_path_in_order() -> None:
    """GIVEN a batch of several slices mixing plain lines, lines with escapes (the per-line path),
    non-ASCII text, junk and blanks, THEN the columns are the records' values in input order."""
    good = '203.0.113.{i} - - [26/Nov/2026:12:{m:02d}:00 +0000] "GET /{i} HTTP/1.1" 200 {i} "-" "x"'
    lines: list[bytes | str] = []
    for i in range(2 * CHUNK_LINES + 9):
        line = good.format(i=i % 250, m=(i // 100) % 60)
        if i % 7 == 3:
            line = line.replace('"x"', r'"\x41"')
        elif i % 11 == 5:
            line = line.replace('"x"', '"caf\u00e9"')
        elif i % 13 == 0:
            line = "junk" if i % 2 else ""
        lines.append(line if i % 5 == 0 else line.encode())
    parser = PARSERS["combined"]
    columns = parse_weblog_columns(parser, lines, horizon=HORIZON, now=NOW)
    records = parser.parse_batch(lines, horizon=HORIZON, now=NOW)
    assert len(records.valid) > 2 * CHUNK_LINES - 50
    for name in ANALYTIC_FIELDS:
        assert list(getattr(columns.columns, name)) == [r.__dict__[name] for r in records.valid]
    assert _letters(columns.dead_letters) == _letters(records.dead_letters)
    assert columns.skipped == records.skipped
