"""nginx access-log parser: every accepted line shape, every rejection typed, and properties.

Every log line here is invented for these tests (same shapes as real nginx logs, none copied).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sluice.core.contracts import (
    MAX_FUTURE_SECONDS_LIMIT,
    ErrorType,
    Stage,
    TimeHorizon,
    WebAccessLog,
)
from sluice.core.deadletters import raw_bytes
from sluice.core.errors import LogFormatError, RecordRejected
from sluice.parsing.weblog import (
    FIELD_OF_VARIABLE,
    MAX_LINE_BYTES,
    NAMED_FORMATS,
    LogParser,
    parse_clf_time,
    parse_weblog_batch,
)
from sluice.parsing.weblog import times as weblog

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
T = "[05/Mar/2024:08:15:02 +0000]"
T_UTC = datetime(2024, 3, 5, 8, 15, 2, tzinfo=UTC)
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0"
GET = '"GET /products/42?color=red&size=m HTTP/1.1"'
COMBINED = f'203.0.113.7 - - {T} {GET} 200 5120 "https://shop.example/list" "{UA}"'
TLS = r"\x16\x03\x01\x00\xA5\x01\x00\x00\xA1\x03\x03"
NO_REQUEST: dict[str, Any] = {"method": None, "path": None, "query": None, "protocol": None}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# Generated times reach 2099: a horizon that wide, so these tests are about parsing, not the horizon.
WIDE_HORIZON = TimeHorizon(max_future_seconds=MAX_FUTURE_SECONDS_LIMIT)


def parse_one(spec: str, line: str | bytes) -> WebAccessLog:
    result = LogParser(spec).parse_batch([line], horizon=WIDE_HORIZON)
    assert result.dead_letters == [], result.dead_letters
    [record] = result.valid
    return record


def assert_fields(record: WebAccessLog, expected: dict[str, Any]) -> None:
    got = {key: getattr(record, key) for key in expected}
    assert got == expected


# ---------------------------------------------------------------------------------------------
# Accepted lines: (spec, line, the fields it must give). Unlisted fields are checked elsewhere.
# ---------------------------------------------------------------------------------------------

COMBINED_FIELDS: dict[str, Any] = {
    "client_ip": "203.0.113.7",
    "remote_user": None,
    "event_time": T_UTC,
    "request": "GET /products/42?color=red&size=m HTTP/1.1",
    "method": "GET",
    "path": "/products/42",
    "query": "color=red&size=m",
    "protocol": "HTTP/1.1",
    "status": 200,
    "bytes_sent": 5120,
    "referer": "https://shop.example/list",
    "user_agent": UA,
    "forwarded_for": [],
    "request_time": None,
    "vhost": None,
    "extra": {},
    "flags": [],
    "geo": None,
}

ACCEPTED = [
    # --- nginx combined and main ---
    pytest.param("auto", COMBINED, COMBINED_FIELDS, id="combined-auto"),
    pytest.param("combined", COMBINED, COMBINED_FIELDS, id="combined-named"),
    pytest.param("auto", COMBINED + ' "-"', {**COMBINED_FIELDS, "forwarded_for": []}, id="main-dash-xff"),
    pytest.param("main", COMBINED + ' "-"', {**COMBINED_FIELDS, "forwarded_for": []}, id="main-named-dash-xff"),
    pytest.param("auto", COMBINED + ' "198.51.100.23"', {"client_ip": "203.0.113.7", "forwarded_for": ["198.51.100.23"]}, id="main-single-xff"),
    pytest.param("main", COMBINED + ' "198.51.100.23"', {"client_ip": "203.0.113.7", "forwarded_for": ["198.51.100.23"]}, id="main-named-single-xff"),
    pytest.param("auto", COMBINED + ' "198.51.100.23, 10.1.2.3, 10.0.0.1"', {"forwarded_for": ["198.51.100.23", "10.1.2.3", "10.0.0.1"], "extra": {}}, id="main-xff-list"),
    pytest.param("main", COMBINED + ' "198.51.100.23,10.1.2.3"', {"forwarded_for": ["198.51.100.23", "10.1.2.3"]}, id="main-named-xff-list-no-space"),
    pytest.param("auto", COMBINED + ' "2001:db8::17, [2001:db8::18]:443, 10.0.0.2:8080, unknown"', {"forwarded_for": ["2001:db8::17", "[2001:db8::18]:443", "10.0.0.2:8080", "unknown"]}, id="main-xff-ipv6-ports-unknown"),
    pytest.param("auto", f'192.0.2.10 - - {T} "GET / HTTP/1.1" 200 2326', {"client_ip": "192.0.2.10", "bytes_sent": 2326, "referer": None, "user_agent": None}, id="common-log-no-referer-ua"),
    # --- virtual-host prefix, trailing duration ---
    pytest.param("auto", 'api.example.net:8443 192.0.2.44 k9x2m carol [12/Feb/2024:23:59:59 -0700] "POST /v2/orders?id=9 HTTP/2.0" 201 87 "-" "okhttp/4.12.0" 48211',
                 {"vhost": "api.example.net:8443", "client_ip": "192.0.2.44", "remote_user": "carol", "event_time": utc(2024, 2, 13, 6, 59, 59),
                  "method": "POST", "path": "/v2/orders", "query": "id=9", "protocol": "HTTP/2.0", "status": 201, "bytes_sent": 87,
                  "referer": None, "user_agent": "okhttp/4.12.0", "request_time": None, "extra": {"trailing": "48211"}}, id="vhost-port-duration-us"),
    pytest.param("auto", f'www.example.org 192.0.2.45 - - {T} "GET / HTTP/1.1" 304 0 "-" "-" 0.004',
                 {"vhost": "www.example.org", "client_ip": "192.0.2.45", "status": 304, "bytes_sent": 0, "request_time": 0.004, "extra": {}}, id="vhost-request-time"),
    pytest.param("auto", f'www.example.org 192.0.2.45 - - {T} "GET / HTTP/1.1" 200 10 "-" "-" "-" rt=0.120 uct="0.000"',
                 {"vhost": "www.example.org", "forwarded_for": [], "request_time": None, "extra": {"trailing": 'rt=0.120 uct="0.000"'}}, id="vhost-main-free-trailing"),
    pytest.param("combined", f'- - - {T} "GET / HTTP/1.1" 200 10 "-" "-"', {"client_ip": None, "remote_user": None}, id="dash-client-named"),
    # --- IPv6 clients ---
    pytest.param("auto", f"2001:0db8:0000:0000:0000:ff00:0042:8329 - - {T} {GET} 200 1 \"-\" \"-\"", {"client_ip": "2001:0db8:0000:0000:0000:ff00:0042:8329"}, id="ipv6-full"),
    pytest.param("auto", f"2001:db8::1 - - {T} {GET} 200 1 \"-\" \"-\"", {"client_ip": "2001:db8::1"}, id="ipv6-compressed"),
    pytest.param("combined", f"::1 - - {T} {GET} 200 1 \"-\" \"-\"", {"client_ip": "::1"}, id="ipv6-loopback-named"),
    pytest.param("auto", f"::ffff:192.0.2.128 - - {T} {GET} 200 1 \"-\" \"-\"", {"client_ip": "::ffff:192.0.2.128"}, id="ipv6-mapped-ipv4"),
    pytest.param("auto", f'unix: - - {T} "hello" 400 173 "-" "-"', {"client_ip": "unix:", "request": "hello", **NO_REQUEST, "status": 400}, id="unix-socket-client"),
    # --- client lists in place of $remote_addr: the last address is the client, the rest forwarded_for ---
    pytest.param("auto", f'198.51.100.1, 10.0.0.5, 192.0.2.9 - - {T} {GET} 200 1 "-" "-"', {"client_ip": "192.0.2.9", "forwarded_for": ["198.51.100.1", "10.0.0.5"], "vhost": None}, id="client-list"),
    pytest.param("auto", f'"198.51.100.1, 203.0.113.50" 10.20.30.40 - - {T} {GET} 200 1 "-" "-"', {"client_ip": "10.20.30.40", "forwarded_for": ["198.51.100.1", "203.0.113.50"]}, id="quoted-list-then-client"),
    pytest.param("auto", f'2001:db8:aaaa::1, 10.9.8.7 10.20.30.41 - - {T} {GET} 200 1 "-" "-"', {"client_ip": "10.20.30.41", "forwarded_for": ["2001:db8:aaaa::1", "10.9.8.7"], "vhost": None}, id="list-then-client"),
    pytest.param("auto", f'shop.example:80 198.51.100.1, 192.0.2.9 - - {T} {GET} 200 1 "-" "-"', {"vhost": "shop.example:80", "client_ip": "192.0.2.9", "forwarded_for": ["198.51.100.1"]}, id="vhost-then-client-list"),
    pytest.param("auto", f'shop.example "198.51.100.1, 198.51.100.2" 10.0.0.9 - - {T} {GET} 200 1 "-" "-"', {"vhost": "shop.example", "client_ip": "10.0.0.9", "forwarded_for": ["198.51.100.1", "198.51.100.2"]}, id="vhost-quoted-list-client"),
    pytest.param("auto", f'192.0.2.200 2001:db8::9, 10.0.0.1 10.0.0.2 - - {T} {GET} 200 1 "-" "-"', {"vhost": "192.0.2.200", "client_ip": "10.0.0.2", "forwarded_for": ["2001:db8::9", "10.0.0.1"]}, id="vhost-list-then-client"),
    # --- odd requests: kept as logged, not split ---
    pytest.param("auto", f'192.0.2.77 - - {T} "{TLS}" 400 157 "-" "-"', {"request": TLS, **NO_REQUEST, "status": 400, "bytes_sent": 157, "referer": None, "user_agent": None}, id="tls-handshake-bytes"),
    pytest.param("combined", f'192.0.2.77 - - {T} "{TLS}" 400 157 "-" "-"', {"request": TLS, **NO_REQUEST, "status": 400}, id="tls-handshake-bytes-named"),
    pytest.param("auto", f'192.0.2.78 - - {T} "]&\\xDF\\xBDV<\\x10;\\xA2b}}" 400 150 "" "-"', {"request": "]&\\xDF\\xBDV<\\x10;\\xA2b}", **NO_REQUEST, "status": 400, "referer": None}, id="binary-junk-escaped"),
    pytest.param("auto", f'192.0.2.79 - - {T} "SSH-2.0-Go" 400 157 "-" "-"', {"request": "SSH-2.0-Go", **NO_REQUEST}, id="ssh-banner"),
    pytest.param("auto", f'192.0.2.80 - - {T} "" 400 0 "-" "-"', {"request": "", **NO_REQUEST, "status": 400, "bytes_sent": 0}, id="empty-request"),
    pytest.param("combined", f'192.0.2.80 - - {T} "" 400 0 "" ""', {"request": "", **NO_REQUEST, "referer": None, "user_agent": None}, id="empty-request-referer-ua-named"),
    pytest.param("auto", f'192.0.2.81 - - {T} "-" 400 0 "-" "-"', {"request": "-", **NO_REQUEST, "status": 400}, id="dash-request"),
    pytest.param("auto", f'192.0.2.82 - - {T} "GET  /two-spaces HTTP/1.1" 400 0 "-" "-"', {"request": "GET  /two-spaces HTTP/1.1", **NO_REQUEST}, id="two-spaces-not-split"),
    # --- '-' -> None; values as logged ---
    pytest.param("auto", f'192.0.2.83 - - {T} {GET} 200 - "-" "-"', {"remote_user": None, "bytes_sent": None, "referer": None, "user_agent": None}, id="dashes-are-none"),
    pytest.param("auto", f'192.0.2.84 - dave {T} {GET} 200 0 "" ""', {"remote_user": "dave", "bytes_sent": 0, "referer": None, "user_agent": None}, id="user-and-empty-strings"),
    pytest.param("auto", f'192.0.2.85 - - {T} {GET} 200 1 "-" "curl \\"quoted\\" \\x22nginx\\x22"', {"user_agent": 'curl "quoted" "nginx"', "invalid_utf8": False}, id="escaped-quotes-decoded"),
    pytest.param("auto", f'192.0.2.86 - - {T} "GET /search/%D8%B3%D9%84%D8%A7%D9%85?q=%E2%9C%93&p=2 HTTP/1.1" 200 1 "-" "-"', {"path": "/search/%D8%B3%D9%84%D8%A7%D9%85", "query": "q=%E2%9C%93&p=2"}, id="percent-encoded"),
    pytest.param("auto", f'192.0.2.87 - - {T} "GET /filter/12|7%20cm,12|blue,p3 HTTP/1.1" 200 1 "-" "-"', {"path": "/filter/12|7%20cm,12|blue,p3", "query": None}, id="pipe-path"),
    pytest.param("auto", f'192.0.2.88 - - {T} "GET /a?b=1?c=2 HTTP/1.1" 200 1 "-" "-"', {"path": "/a", "query": "b=1?c=2"}, id="query-with-question-mark"),
    pytest.param("auto", f'192.0.2.89 - - {T} "GET /empty? HTTP/1.1" 200 1 "-" "-"', {"path": "/empty", "query": ""}, id="empty-query"),
    pytest.param("auto", f'192.0.2.90 - - {T} "GET /a\\x22b\\x5C HTTP/1.1" 200 1 "-" "-"', {"path": '/a"b\\', "method": "GET", "request": "GET /a\\x22b\\x5C HTTP/1.1"}, id="nginx-escapes-in-path"),
    pytest.param("auto", f'192.0.2.91 - - {T} "HEAD /old HTTP/1.0" 200 0 "-" "-"', {"method": "HEAD", "protocol": "HTTP/1.0"}, id="http-1.0"),
    pytest.param("auto", f'192.0.2.92 - - {T} "GET /new HTTP/2.0" 200 0 "-" "-"', {"method": "GET", "protocol": "HTTP/2.0"}, id="http-2.0"),
    pytest.param("auto", f'192.0.2.93 - - {T} "GET /legacy" 200 0 "-" "-"', {"method": "GET", "path": "/legacy", "protocol": None}, id="http-0.9-style"),
    pytest.param("auto", f'192.0.2.94 - - {T} "M-SEARCH * HTTP/1.1" 400 0 "-" "-"', {"method": "M-SEARCH", "path": "*", "query": None, "protocol": "HTTP/1.1"}, id="method-with-dash"),
    pytest.param("auto", f'192.0.2.95 - - {T} "CONNECT example.com:443 HTTP/1.1" 405 0 "-" "-"', {"method": "CONNECT", "path": "example.com:443"}, id="connect-authority"),
    pytest.param("auto", f'192.0.2.96 - - {T} "GET http://example.com/x?y=1 HTTP/1.1" 200 0 "-" "-"', {"path": "http://example.com/x", "query": "y=1"}, id="absolute-form-target"),
    # --- time zones to UTC ---
    pytest.param("auto", f'192.0.2.97 - - [22/Jan/2019:03:56:14 +0330] {GET} 200 1 "-" "-"', {"event_time": utc(2019, 1, 22, 0, 26, 14)}, id="tz-plus-0330"),
    pytest.param("auto", f'192.0.2.97 - - [26/Jul/2023:00:01:26 -0700] {GET} 200 1 "-" "-"', {"event_time": utc(2023, 7, 26, 7, 1, 26)}, id="tz-minus-0700"),
    pytest.param("combined", f'192.0.2.97 - - [01/Jan/2024:01:30:00 +0545] {GET} 200 1 "-" "-"', {"event_time": utc(2023, 12, 31, 19, 45, 0)}, id="tz-plus-0545-previous-year"),
    pytest.param("auto", f'192.0.2.97 - - [29/Feb/2024:23:59:59 -1200] {GET} 200 1 "-" "-"', {"event_time": utc(2024, 3, 1, 11, 59, 59)}, id="tz-minus-1200-leap-day"),
    pytest.param("auto", f'192.0.2.97 - - [29/Feb/2024:00:00:00 -0000] {GET} 200 1 "-" "-"', {"event_time": utc(2024, 2, 29, 0, 0, 0)}, id="tz-minus-zero"),
    # --- line endings and blanks around the line ---
    pytest.param("auto", COMBINED + "\r\n", COMBINED_FIELDS, id="crlf"),
    pytest.param("combined", COMBINED + " \n", COMBINED_FIELDS, id="trailing-blank-named"),
    pytest.param("auto", "  " + COMBINED, COMBINED_FIELDS, id="leading-blanks"),
    pytest.param("auto", COMBINED.encode(), COMBINED_FIELDS, id="bytes-input"),
    pytest.param("auto", f'192.0.2.98 - - {T} "GET /caf\u00e9 HTTP/1.1" 200 1 "-" "Agent/\u00e9"'.encode(), {"path": "/caf\u00e9", "user_agent": "Agent/\u00e9"}, id="utf8-bytes"),
    # --- a third quoted field that is no address list is not X-Forwarded-For ---
    pytest.param("auto", COMBINED + ' "2.75"', {"forwarded_for": [], "extra": {"trailing": '"2.75"'}}, id="gzip-ratio-not-xff"),
    pytest.param("auto", COMBINED + ' "2.75" 0.011', {"forwarded_for": [], "request_time": None, "extra": {"trailing": '"2.75" 0.011'}}, id="gzip-ratio-then-more"),
    pytest.param("auto", COMBINED + ' "-" 0.011', {"forwarded_for": [], "request_time": 0.011, "extra": {}}, id="main-then-request-time"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "line", "expected"), ACCEPTED)
def test_accepted_lines(spec: str, line: str | bytes, expected: dict[str, Any]):
    # GIVEN one access-log line of a known shape
    # WHEN it is parsed with the given format
    record = parse_one(spec, line)
    # THEN it becomes one record with exactly these field values
    assert_fields(record, expected)


def test_bytes_and_text_give_the_same_record():
    line = f'shop.example 198.51.100.1, 192.0.2.9 - ann {T} {GET} 200 1 "-" "{UA}" "10.0.0.1" 0.2'
    assert (
        parse_one("auto", line)
        == parse_one("auto", line.encode())
        == parse_one("auto", line + "\n")
    )


# ---------------------------------------------------------------------------------------------
# Custom log_format strings
# ---------------------------------------------------------------------------------------------

TIMED = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
    '"$http_user_agent" rt=$request_time urt="$upstream_response_time" $host'
)
SPLIT = '$time_iso8601 $remote_addr "$request_method $request_uri $server_protocol" $status $bytes_sent "$http_x_forwarded_for"'
UPSTREAMINFO = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
    '"$http_user_agent" $request_length $request_time [$proxy_upstream_name] '
    "[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length "
    "$upstream_response_time $upstream_status $req_id"
)

CUSTOM = [
    pytest.param(TIMED, '192.0.2.5 - bob [10/Oct/2023:13:55:36 +0200] "GET /x?y=1 HTTP/2.0" 201 5 "-" "ua/1" rt=0.012 urt="0.010" example.org',
                 {"client_ip": "192.0.2.5", "remote_user": "bob", "event_time": utc(2023, 10, 10, 11, 55, 36), "method": "GET", "path": "/x", "query": "y=1",
                  "protocol": "HTTP/2.0", "status": 201, "bytes_sent": 5, "referer": None, "user_agent": "ua/1", "request_time": 0.012,
                  "vhost": "example.org", "extra": {}, "upstream_response_time": [0.01]}, id="request-time-upstream-host"),
    pytest.param(TIMED, f'192.0.2.5 - - {T} "GET / HTTP/1.1" 502 0 "-" "-" rt=- urt="-" -',
                 {"request_time": None, "vhost": None, "extra": {}}, id="dashes-dropped-from-extra"),
    pytest.param(SPLIT, '2023-10-10T13:55:36+05:30 2001:db8::5 "POST /api/v1?x=1&y=2 HTTP/1.0" 404 0 "10.0.0.1, 10.0.0.2"',
                 {"client_ip": "2001:db8::5", "event_time": utc(2023, 10, 10, 8, 25, 36), "request": None, "method": "POST", "path": "/api/v1",
                  "query": "x=1&y=2", "protocol": "HTTP/1.0", "status": 404, "bytes_sent": 0, "forwarded_for": ["10.0.0.1", "10.0.0.2"]}, id="iso8601-request-parts-xff"),
    pytest.param(SPLIT, '2023-10-10T13:55:36 192.0.2.6 "GET /naive HTTP/1.1" 200 3 "-"',
                 {"event_time": utc(2023, 10, 10, 13, 55, 36), "forwarded_for": []}, id="iso8601-without-offset-is-utc"),
    pytest.param('$msec $remote_addr $status ${request_uri}', "1696945536.250 192.0.2.7 200 /p?q",
                 {"event_time": datetime(2023, 10, 10, 13, 45, 36, 250000, tzinfo=UTC), "path": "/p", "query": "q", "request": None}, id="msec-braces-request-uri"),
    pytest.param('[$time_local] $status $request_method $uri $args', f"{T} 200 GET /only-path -",
                 {"method": "GET", "path": "/only-path", "query": None, "client_ip": None}, id="uri-args-dash"),
    pytest.param('$host $remote_addr [$time_local] "$request" $status', f'shop.example 192.0.2.8 {T} "PUT /cart HTTP/1.1" 204',
                 {"vhost": "shop.example", "method": "PUT", "path": "/cart", "bytes_sent": None}, id="host-first"),
    pytest.param('$remote_addr [$time_local] "$request" $status "$http_user_agent"', f'192.0.2.9 {T} "{TLS}" 400 "-"',
                 {"request": TLS, **NO_REQUEST, "status": 400}, id="custom-garbage-request"),
    pytest.param('$remote_addr [$time_local] "$request" $status "$request_uri"', f'192.0.2.9 {T} "GET /a?b HTTP/1.1" 200 "/a?b"',
                 {"method": "GET", "path": "/a", "query": "b", "protocol": "HTTP/1.1"}, id="request-and-request-uri"),
    pytest.param(UPSTREAMINFO, f'192.0.2.10 - - {T} "GET /svc HTTP/2.0" 200 12312 "" "ua" 462 0.050 [default-web-80] [] 10.0.50.80:9000 19437 0.049 200 7c9e1f',
                 {"status": 200, "bytes_sent": 12312, "referer": None, "request_time": 0.05,
                  "request_length": 462, "upstream_addr": ["10.0.50.80:9000"], "upstream_response_time": [0.049], "upstream_status": [200],
                  "extra": {"proxy_upstream_name": "default-web-80", "upstream_response_length": "19437", "req_id": "7c9e1f"}},
                 id="ingress-upstreaminfo"),
]  # fmt: skip


@pytest.mark.parametrize(("log_format", "line", "expected"), CUSTOM)
def test_custom_log_formats(log_format: str, line: str, expected: dict[str, Any]):
    # GIVEN an nginx log_format string and a line it wrote
    # WHEN the format is compiled and the line parsed
    record = parse_one(log_format, line)
    # THEN known variables fill their fields, unknown ones land in extra
    assert_fields(record, expected)


def test_iso8601_without_offset_is_utc_whatever_the_host_zone(monkeypatch: pytest.MonkeyPatch):
    # GIVEN a host in another time zone
    monkeypatch.setenv("TZ", "America/Denver")
    time.tzset()
    try:
        # WHEN a $time_iso8601 value without an offset is parsed
        record = parse_one(SPLIT, '2023-10-10T13:55:36 192.0.2.6 "GET / HTTP/1.1" 200 3 "-"')
    finally:
        monkeypatch.undo()
        time.tzset()
    # THEN it is taken as UTC (as the contract does), not as the host's local time
    assert record.event_time == utc(2023, 10, 10, 13, 55, 36)


def test_named_formats_are_nginx_definitions():
    # GIVEN the named formats WHEN compiled as log_format strings THEN they parse like the names
    line = COMBINED + ' "198.51.100.23"'
    assert (
        parse_one(NAMED_FORMATS["main"], line) == parse_one("main", line) == parse_one("auto", line)
    )
    assert parse_one(NAMED_FORMATS["combined"], COMBINED) == parse_one("combined", COMBINED)
    assert FIELD_OF_VARIABLE["remote_addr"] == "client_ip"


@pytest.mark.parametrize(
    ("spec", "line"),
    [
        pytest.param("combined", f'www.example.org 192.0.2.45 - - {T} "GET / HTTP/1.1" 200 0 "-" "-"', id="combined-refuses-vhost"),
        pytest.param("combined", f'198.51.100.1, 192.0.2.9 - - {T} {GET} 200 1 "-" "-"', id="combined-refuses-client-list"),
        pytest.param("combined", COMBINED + ' "-"', id="combined-refuses-main"),
        pytest.param("main", COMBINED, id="main-refuses-combined"),
        pytest.param("combined", f'192.0.2.1 - - {T} {GET} 20 1 "-" "-"', id="combined-status-2-digits"),
        pytest.param("combined", f'192.0.2.1 - - {T} {GET} 200 -5 "-" "-"', id="combined-negative-bytes"),
        pytest.param("combined", f'192.0.2.1 - - {T} {GET} 200 1 "-" "x"y"', id="combined-bare-quote-in-ua"),
        pytest.param(TIMED, COMBINED, id="custom-missing-fields"),
    ],
)  # fmt: skip
def test_strict_formats_refuse_other_shapes(spec: str, line: str):
    # GIVEN a line that is not of the exact format WHEN parsed THEN it is an unparseable_line dead letter
    result = LogParser(spec).parse_batch([line])
    assert result.valid == []
    assert [d.error_type for d in result.dead_letters] == [ErrorType.UNPARSEABLE_LINE]


@pytest.mark.parametrize(
    ("log_format", "message"),
    [
        pytest.param("no variables here", "no $variables", id="no-variables"),
        pytest.param("", "no $variables", id="empty"),
        pytest.param("combinedd", "no $variables", id="misspelt-name"),
        pytest.param("$remote_addr$remote_user [$time_local] $status", "two variables", id="adjacent-variables"),
        pytest.param("[$time_local] $status$body_bytes_sent", "two variables", id="adjacent-at-end"),
        pytest.param("$remote_addr $status", "no time", id="no-time"),
        pytest.param("$remote_addr [$time_local] $body_bytes_sent", "no $status", id="no-status"),
    ],
)  # fmt: skip
def test_unusable_log_formats_raise(log_format: str, message: str):
    # GIVEN a log_format no line could ever be parsed with WHEN compiled THEN LogFormatError says why
    with pytest.raises(LogFormatError, match=message.replace("$", r"\$")):
        LogParser(log_format)


# ---------------------------------------------------------------------------------------------
# Dead letters
# ---------------------------------------------------------------------------------------------

BAD_UTF8 = b'192.0.2.1 - - [05/Mar/2024:08:15:02 +0000] "GET /caf\xe9 HTTP/1.1" 200 1 "-" "-"'

REJECTED = [
    pytest.param("auto", f'192.0.2.1 [05/Mar/2024:08:15:02 +0000] {GET} 404 46210 "-" "-"', ErrorType.UNPARSEABLE_LINE, id="missing-ident-user"),
    pytest.param("auto", "192.0.2.1 - - [05/Mar/2024:08:15", ErrorType.UNPARSEABLE_LINE, id="truncated-in-time"),
    pytest.param("auto", f'192.0.2.1 - - {T} "GET /ind', ErrorType.UNPARSEABLE_LINE, id="truncated-in-request"),
    pytest.param("auto", f'192.0.2.1 - - {T} {GET} 200 12 "-" "Mozilla/5.0 (X11', ErrorType.UNPARSEABLE_LINE, id="truncated-in-user-agent"),
    pytest.param("auto", f'192.0.2.1 - - {T} {GET} 200 12 "-', ErrorType.UNPARSEABLE_LINE, id="truncated-in-referer"),
    pytest.param("auto", f'192.0.2.1 - - {T} {GET} 200 12 "-" "-" "10.0.0.', ErrorType.UNPARSEABLE_LINE, id="truncated-in-xff"),
    pytest.param("combined", f'192.0.2.1 - - {T} {GET} 200 12 "-" "Mozi', ErrorType.UNPARSEABLE_LINE, id="truncated-named"),
    pytest.param("auto", f'192.0.2.1 - - [05/Okt/2024:08:15:02 +0000] {GET} 200 1 "-" "-"', ErrorType.INVALID_TIMESTAMP, id="bad-month"),
    pytest.param("auto", f'192.0.2.1 - - [05/mar/2024:08:15:02 +0000] {GET} 200 1 "-" "-"', ErrorType.INVALID_TIMESTAMP, id="lowercase-month"),
    pytest.param("auto", f'192.0.2.1 - - [31/Apr/2024:08:15:02 +0000] {GET} 200 1 "-" "-"', ErrorType.INVALID_TIMESTAMP, id="bad-day-31-april"),
    pytest.param("combined", f'192.0.2.1 - - [29/Feb/2023:08:15:02 +0000] {GET} 200 1 "-" "-"', ErrorType.INVALID_TIMESTAMP, id="bad-day-29-feb-named"),
    pytest.param("auto", f'192.0.2.1 - - [00/Mar/2024:08:15:02 +0000] {GET} 200 1 "-" "-"', ErrorType.INVALID_TIMESTAMP, id="day-zero"),
    pytest.param("auto", f'192.0.2.1 - - [05/Mar/2024:24:15:02 +0000] {GET} 200 1 "-" "-"', ErrorType.INVALID_TIMESTAMP, id="hour-24"),
    pytest.param("auto", f'192.0.2.1 - - [05/Mar/2024:08:15:60 +0000] {GET} 200 1 "-" "-"', ErrorType.INVALID_TIMESTAMP, id="second-60"),
    pytest.param("auto", f'192.0.2.1 - - [05/Mar/2024:08:15:02 +2400] {GET} 200 1 "-" "-"', ErrorType.INVALID_TIMESTAMP, id="offset-24h"),
    pytest.param("auto", f'192.0.2.1 - - [05/Mar/2024:08:15:02 +0160] {GET} 200 1 "-" "-"', ErrorType.INVALID_TIMESTAMP, id="offset-60min"),
    pytest.param("auto", f'192.0.2.1 - - [01/Jan/0001:00:00:00 +0100] {GET} 200 1 "-" "-"', ErrorType.INVALID_TIMESTAMP, id="before-year-1-utc"),
    pytest.param("auto", f'192.0.2.1 - - [31/Dec/9999:23:59:59 -0100] {GET} 200 1 "-" "-"', ErrorType.INVALID_TIMESTAMP, id="after-year-9999-utc"),
    pytest.param("auto", f'192.0.2.1 - - [05/Mar/2024:08:15:02] {GET} 200 1 "-" "-"', ErrorType.INVALID_TIMESTAMP, id="no-offset"),
    pytest.param("auto", f'192.0.2.1 - - [-] {GET} 200 1 "-" "-"', ErrorType.INVALID_TIMESTAMP, id="dash-time"),
    pytest.param("auto", f'192.0.2.1 - - [\u0660\u0665/Mar/2024:08:15:02 +0000] {GET} 200 1 "-" "-"', ErrorType.INVALID_TIMESTAMP, id="non-ascii-digits"),
    pytest.param("auto", f'192.0.2.1 - - {T} {GET} 20 1 "-" "-"', ErrorType.UNPARSEABLE_LINE, id="status-2-digits"),
    pytest.param("auto", f'192.0.2.1 - - {T} {GET} 2000 1 "-" "-"', ErrorType.UNPARSEABLE_LINE, id="status-4-digits"),
    pytest.param("auto", f'192.0.2.1 - - {T} {GET} OK 1 "-" "-"', ErrorType.UNPARSEABLE_LINE, id="status-word"),
    pytest.param("auto", f'192.0.2.1 - - {T} {GET} - 1 "-" "-"', ErrorType.UNPARSEABLE_LINE, id="status-dash"),
    pytest.param("auto", f'192.0.2.1 - - {T} {GET} 200 12a "-" "-"', ErrorType.UNPARSEABLE_LINE, id="bytes-not-a-number"),
    pytest.param("auto", f'192.0.2.1 - - {T} {GET} 200 {"9" * 5000} "-" "-"', ErrorType.SCHEMA_VIOLATION, id="bytes-too-many-digits"),
    pytest.param("auto", f'a b c 192.0.2.1 - - {T} {GET} 200 1 "-" "-"', ErrorType.UNPARSEABLE_LINE, id="too-much-before-client"),
    pytest.param("auto", f'"198.51.100.1 192.0.2.1 - - {T} {GET} 200 1 "-" "-"', ErrorType.UNPARSEABLE_LINE, id="unclosed-quoted-list"),
    pytest.param("auto", "not an access log line at all", ErrorType.UNPARSEABLE_LINE, id="prose"),
    pytest.param("auto", '2024/03/05 08:15:02 [error] 31#31: *1 open() "/x" failed, client: 192.0.2.1', ErrorType.UNPARSEABLE_LINE, id="nginx-error-log"),
    pytest.param("auto", BAD_UTF8, ErrorType.INVALID_ENCODING, id="invalid-utf8"),
    pytest.param("combined", b"\xff\xfe\x00garbage", ErrorType.INVALID_ENCODING, id="invalid-utf8-named"),
    pytest.param("auto", COMBINED.replace("/products", "/\ud800"), ErrorType.INVALID_ENCODING, id="lone-surrogate-text"),
    pytest.param("auto", b"x" * (MAX_LINE_BYTES + 1), ErrorType.TOO_LARGE, id="over-long-bytes"),
    pytest.param("auto", COMBINED + " " + "y" * MAX_LINE_BYTES, ErrorType.TOO_LARGE, id="over-long-text"),
    pytest.param("auto", "\u00e9" * (MAX_LINE_BYTES // 2 + 1), ErrorType.TOO_LARGE, id="over-long-in-utf8-bytes-only"),
    pytest.param(SPLIT, '2023-13-10T13:55:36+00:00 192.0.2.6 "GET / HTTP/1.1" 200 3 "-"', ErrorType.INVALID_TIMESTAMP, id="custom-iso-month-13"),
    pytest.param('$msec $remote_addr $status', "nan 192.0.2.7 200", ErrorType.INVALID_TIMESTAMP, id="custom-msec-nan"),
    pytest.param('$msec $remote_addr $status', "1e400 192.0.2.7 200", ErrorType.INVALID_TIMESTAMP, id="custom-msec-overflow"),
    pytest.param('$msec $remote_addr $status', "1696945536.250 192.0.2.7 20", ErrorType.UNPARSEABLE_LINE, id="custom-status-2-digits"),
    pytest.param('$msec $remote_addr $status $request_time', "1696945536.250 192.0.2.7 200 -1.5", ErrorType.SCHEMA_VIOLATION, id="custom-negative-request-time"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "line", "error_type"), REJECTED)
def test_rejected_lines_become_typed_dead_letters(
    spec: str, line: str | bytes, error_type: ErrorType
):
    # GIVEN a line that cannot be a record
    # WHEN it is parsed in a batch
    result = LogParser(spec).parse_batch([line])
    # THEN nothing valid comes out and one dead letter of the expected type keeps the line
    assert result.valid == []
    [letter] = result.dead_letters
    assert letter.error_type is error_type, letter.message
    assert letter.source == "weblog" and letter.stage == "parse"
    data = line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")
    assert letter.raw_size == len(data)
    if letter.raw_truncated:
        assert error_type is ErrorType.TOO_LARGE
    else:
        assert raw_bytes(letter) == data


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("a - - [" * 9000, id="many-line-starts"),
        pytest.param(f'192.0.2.1 - - {T} "GET / HTTP/1.1" 200 1 "-" "-" ' + '"" ' * 20000 + '"', id="many-trailing-quotes"),
        pytest.param(f'192.0.2.1 - - {T} "' + "a\\" * 30000, id="unclosed-escapes"),
        pytest.param("1, " * 20000 + f"- - {T}", id="long-client-list"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("spec", ["auto", "combined", TIMED])
def test_hostile_long_lines_are_rejected_in_linear_time(spec: str, line: str):
    # GIVEN a line of ~60 KB built to make a backtracking regex go quadratic
    started = time.perf_counter()
    result = LogParser(spec).parse_batch([line])
    # THEN it is refused quickly (the 'auto' regex once took seconds on the first one)
    assert time.perf_counter() - started < 1.0
    assert result.valid == [] and len(result.dead_letters) == 1


def test_invalid_utf8_is_kept_as_base64():
    [letter] = LogParser().parse_batch([BAD_UTF8]).dead_letters
    assert letter.raw_encoding == "base64" and raw_bytes(letter) == BAD_UTF8


def test_parse_line_raises_the_typed_rejection():
    with pytest.raises(RecordRejected) as caught:
        LogParser().parse_line("nothing to see")
    assert caught.value.error_type is ErrorType.UNPARSEABLE_LINE
    assert LogParser().parse_line(COMBINED) == parse_one("auto", COMBINED)


@pytest.mark.parametrize("spec", ["auto", "combined", "main", TIMED])
def test_blank_lines_are_skipped(spec: str):
    # GIVEN blank lines between two good ones WHEN parsed THEN they are neither valid nor dead letters
    blanks: list[str | bytes] = ["", " ", "\n", "\r\n", "\t  \n", b"", b"   \r\n"]
    good = COMBINED + ' "-"' if spec == "main" else COMBINED
    if spec == TIMED:
        good = f'192.0.2.5 - - {T} "GET / HTTP/1.1" 200 0 "-" "-" rt=0.001 urt="-" -'
    result = parse_weblog_batch([good, *blanks, good.encode()], spec)
    assert len(result.valid) == 2 and result.dead_letters == []


def test_a_batch_keeps_going_after_bad_lines():
    lines: list[str | bytes] = [COMBINED, "garbage", BAD_UTF8, "", COMBINED + ' "10.0.0.1"']
    result = parse_weblog_batch(lines)
    assert [r.forwarded_for for r in result.valid] == [[], ["10.0.0.1"]]
    assert [d.error_type for d in result.dead_letters] == [
        ErrorType.UNPARSEABLE_LINE,
        ErrorType.INVALID_ENCODING,
    ]


def test_the_callers_stage_is_recorded():
    [letter] = parse_weblog_batch(["x"], stage=Stage.EDGE_LOGS).dead_letters
    assert letter.stage is Stage.EDGE_LOGS


def test_a_stage_outside_the_enum_is_refused():
    with pytest.raises(ValidationError):
        parse_weblog_batch(["x"], stage="replay")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------------------------

SPECS = ["auto", "combined", "main", TIMED, UPSTREAMINFO]


def _near_valid_lines() -> st.SearchStrategy[str]:
    """Valid lines cut, spliced or with a character replaced: the inputs most likely to trip a parser."""
    base = st.sampled_from(
        [
            COMBINED,
            COMBINED + ' "198.51.100.23, 10.1.2.3"',
            f'api.example.net:8443 192.0.2.44 k9x2m carol {T} {GET} 201 87 "-" "-" 48211',
            f'"198.51.100.1, 203.0.113.50" 10.20.30.40 - - {T} "{TLS}" 400 0 "" ""',
        ]
    )
    return st.tuples(base, st.integers(0, 400), st.integers(0, 400), st.text(max_size=5)).map(
        lambda t: t[0][: t[1]] + t[3] + t[0][t[1] + t[2] % 7 :]
    )


ANY_LINE = st.one_of(
    st.binary(max_size=200),
    # any code point, lone surrogates included
    st.text(st.characters() | st.characters(categories=["Cs"]), max_size=200),
    st.text(alphabet=' -[]"\\/:,.0123456789abcGETHP', max_size=120),
    _near_valid_lines(),
)


def _is_blank(line: str | bytes) -> bool:
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            return False
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not line.strip(" \t\n\r\x0b\x0c")  # ASCII whitespace only, in text as in bytes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.sampled_from(SPECS), lines=st.lists(ANY_LINE, max_size=8))
def test_property_any_input_never_raises_and_every_line_is_accounted_for(
    spec: str, lines: list[str | bytes]
):
    # GIVEN arbitrary text and bytes WHEN parsed THEN no exception, and each line is exactly one of
    # valid, dead-lettered or blank
    result = LogParser(spec).parse_batch(lines)
    blank = sum(1 for line in lines if _is_blank(line))
    assert result.skipped == blank
    assert len(result.valid) + len(result.dead_letters) + blank == len(lines)
    for record in result.valid:
        assert record.event_time.utcoffset() == timedelta(0)
        assert 0 <= record.status <= 999


# --- round trip of generated field values through a combined line ---

OCTET = st.integers(0, 255)
IPV4 = st.tuples(OCTET, OCTET, OCTET, OCTET).map(lambda t: ".".join(map(str, t)))
IPV6 = st.ip_addresses(v=6).flatmap(lambda a: st.sampled_from([str(a), a.exploded]))
USER = st.one_of(st.just("-"), st.from_regex(r"[A-Za-z0-9._@+-]{1,16}", fullmatch=True))
METHOD = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "PROPFIND"]),
    st.from_regex(r"[A-Z][A-Z_-]{0,9}", fullmatch=True),
)
SAFE = "A-Za-z0-9._~!$&'()*+,;=:@%|/-"
PATH = st.one_of(
    st.from_regex(rf"/[{SAFE}]{{0,40}}", fullmatch=True),
    st.lists(st.sampled_from(["/a", "/%D8%B3", "/x|y", r"/\x22", "/b,c"]), min_size=1).map("".join),
)
QUERY = st.one_of(st.none(), st.from_regex(rf"[{SAFE}?]{{0,30}}", fullmatch=True))
PROTOCOL = st.sampled_from(["HTTP/1.0", "HTTP/1.1", "HTTP/2.0"])
QUOTED_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'),
    max_size=60,
)
REFERER = st.one_of(
    st.just("-"),
    st.just(""),
    st.from_regex(rf"https?://[a-z.]{{1,12}}/[{SAFE}]{{0,20}}", fullmatch=True),
)
AGENT = st.one_of(
    st.just("-"), st.just(""), QUOTED_TEXT, QUOTED_TEXT.map(lambda s: s + r"\x22 \x5C")
)
OFFSET_MINUTES = st.integers(-(23 * 60 + 59), 23 * 60 + 59)
WHEN = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31)).map(
    lambda d: d.replace(microsecond=0, tzinfo=UTC)
)


def unescaped(text: str) -> str:
    """What nginx received for a value it logged with its \\xNN escapes (ASCII ones here)."""
    return text.replace(r"\x22", '"').replace(r"\x5C", "\\")


def clf(moment: datetime, offset_minutes: int) -> str:
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return (
        f"{local.day:02d}/{MONTHS[local.month - 1]}/{local.year:04d}:"
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d} {sign}{hours:02d}{minutes:02d}"
    )


@settings(max_examples=300, deadline=None)
@given(
    client=st.one_of(IPV4, IPV6),
    user=USER,
    moment=WHEN,
    offset=OFFSET_MINUTES,
    method=METHOD,
    path=PATH,
    query=QUERY,
    protocol=PROTOCOL,
    status=st.integers(100, 999),
    sent=st.one_of(st.just("-"), st.integers(0, 10**12)),
    referer=REFERER,
    agent=AGENT,
    spec=st.sampled_from(["auto", "combined"]),
    as_bytes=st.booleans(),
)
def test_property_combined_round_trip(
    client,
    user,
    moment,
    offset,
    method,
    path,
    query,
    protocol,
    status,
    sent,
    referer,
    agent,
    spec,
    as_bytes,
):
    # GIVEN valid field values written as an nginx combined line
    target = path if query is None else f"{path}?{query}"
    request = f"{method} {target} {protocol}"
    line = (
        f'{client} - {user} [{clf(moment, offset)}] "{request}" {status} {sent} '
        f'"{referer}" "{agent}"'
    )
    # WHEN parsed
    record = parse_one(spec, line.encode() if as_bytes else line)
    # THEN every value comes back (a '-' or empty value as None, the time in UTC)
    expected = {
        "client_ip": client,
        "remote_user": None if user == "-" else user,
        "event_time": moment,
        "request": request,
        "method": method,
        "path": unescaped(path),
        "query": query,
        "protocol": protocol,
        "status": status,
        "bytes_sent": None if sent == "-" else sent,
        "referer": None if referer in ("-", "") else referer,
        "user_agent": None if agent in ("-", "") else unescaped(agent),
        "forwarded_for": [],
        "vhost": None,
        "extra": {},
    }
    assert_fields(record, expected)


@settings(max_examples=200, deadline=None)
@given(
    line=st.one_of(
        st.text(max_size=300).filter(lambda s: s.strip() != ""),
        _near_valid_lines(),
    ),
    spec=st.sampled_from(SPECS),
)
def test_property_dead_letter_keeps_the_raw_line(line: str, spec: str):
    # GIVEN a (short) line the format refuses
    result = LogParser(spec).parse_batch([line])
    assume(result.dead_letters)
    # THEN its dead letter holds the whole line, unchanged
    [letter] = result.dead_letters
    assert letter.raw == line and letter.raw_encoding == "utf-8" and not letter.raw_truncated
    assert letter.raw_size == len(line.encode("utf-8"))


@settings(max_examples=200, deadline=None)
@given(line=st.binary(min_size=1, max_size=300))
def test_property_undecodable_bytes_keep_their_bytes(line: bytes):
    result = LogParser().parse_batch([line])
    for letter in result.dead_letters:
        assert raw_bytes(letter) == line


# --- the time parser and its caches agree with a plain strptime ---


def reference_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z").astimezone(UTC)
    except (ValueError, OverflowError):
        return None


TIME_PART = st.integers(0, 99).map(lambda n: f"{n:02d}")
TIME_TEXT = st.builds(
    lambda day, month, year, hh, mm, ss, sign, oh, om: (
        f"{day}/{month}/{year}:{hh}:{mm}:{ss} {sign}{oh}{om}"
    ),
    TIME_PART.filter(lambda d: d != "00") | st.sampled_from(["00", "29", "30", "31"]),
    st.sampled_from([*MONTHS, "Foo"]),
    st.sampled_from(["0001", "1999", "2000", "2023", "2024", "9999"]),
    st.integers(0, 25).map(lambda n: f"{n:02d}"),
    st.integers(0, 61).map(lambda n: f"{n:02d}"),
    st.integers(0, 61).map(lambda n: f"{n:02d}") | st.sampled_from(["6x", "-1"]),
    st.sampled_from("+-"),
    st.integers(0, 23).map(lambda n: f"{n:02d}"),
    st.integers(0, 59).map(lambda n: f"{n:02d}"),
)


@settings(max_examples=400, deadline=None)
@given(texts=st.lists(TIME_TEXT, min_size=1, max_size=6))
def test_property_clf_time_matches_strptime(texts: list[str]):
    # GIVEN time strings sharing minutes (so both caches are used), valid or not
    weblog._CLF_CACHE.clear()
    weblog._MINUTE_CACHE.clear()
    for text in texts + [t[:18] + "07" + t[20:] for t in texts]:
        expected = reference_time(text)
        # WHEN parsed THEN the result is strptime's, or a typed rejection where strptime fails
        if expected is None:
            with pytest.raises(RecordRejected) as caught:
                parse_clf_time(text)
            assert caught.value.error_type is ErrorType.INVALID_TIMESTAMP
        else:
            assert parse_clf_time(text) == expected


def test_clf_time_cache_is_bounded():
    for second in range(weblog._CLF_CACHE_SIZE + 10):
        parse_clf_time(clf(T_UTC + timedelta(seconds=second), 0))
    assert len(weblog._CLF_CACHE) <= weblog._CLF_CACHE_SIZE
    assert len(weblog._MINUTE_CACHE) <= weblog._CLF_CACHE_SIZE
