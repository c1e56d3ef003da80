"""nginx fidelity: escapes decoded, invalid UTF-8 replaced and flagged, JSON and escape=none formats,
typed columns for nginx variables, IPv6 hosts; and the new fields stay off the wire while unset."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.core.contracts import WebAccessLog
from sluice.core.errors import LogFormatError
from sluice.parsing.weblog import LogParser
from sluice.parsing.weblog.values import canonical_request, unescape, upstream_list
from sluice.stream.envelopes import wrap_access_log

T = "[05/Mar/2024:08:15:02 +0000]"
ISO = "2024-03-05T08:15:02+00:00"
JSON_FORMAT = (
    '{"t":"$time_iso8601","ip":"$remote_addr","req":"$request","s":$status,'
    '"ua":"$http_user_agent","rl":$request_length,"h":"$host","p":"$server_port"}'
)


def one(spec: str, line: str | bytes) -> WebAccessLog:
    outcome = LogParser(spec).parse_raw(line)
    assert isinstance(outcome, WebAccessLog), outcome
    return outcome


def check(record: WebAccessLog, expected: dict[str, Any]) -> None:
    assert {k: getattr(record, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("spec", "line", "expected"),
    [
        # --- escape=default: \xNN back to bytes, read as UTF-8, in every field but request ---
        pytest.param("combined", f'1.2.3.4 - - {T} "GET /\\xC3\\xA9t\\xC3\\xA9 HTTP/1.1" 200 1 "http://r/\\x22" "A \\x22q\\x22 \\x5C"',
                     {"path": "/été", "referer": 'http://r/"', "user_agent": 'A "q" \\', "invalid_utf8": False,
                      "request": "GET /\\xC3\\xA9t\\xC3\\xA9 HTTP/1.1"}, id="utf8-and-quotes"),
        pytest.param("auto", f'1.2.3.4 - - {T} "GET /a\\xFF HTTP/1.1" 200 1 "-" "x\\xC3"',
                     {"path": "/a\ufffd", "user_agent": "x\ufffd", "invalid_utf8": True, "request": "GET /a\\xFF HTTP/1.1"}, id="invalid-utf8-flagged"),
        pytest.param("auto", f'1.2.3.4 - - {T} "\\x16\\x03\\x01\\xA5" 400 1 "-" "-"',
                     {"method": None, "invalid_utf8": True, "request": "\\x16\\x03\\x01\\xA5"}, id="tls-bytes-in-request-flagged"),
        pytest.param("auto", f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 1 "-" "Apache \\"q\\" \\\\ \\n"',
                     {"user_agent": 'Apache "q" \\ \\n'}, id="apache-escapes"),
        pytest.param('$remote_addr [$time_local] "$request" $status sid=$cookie_sid a=$arg_a', f'1.2.3.4 {T} "GET /?a=\\xC3\\xBC HTTP/1.1" 200 sid=x\\x22y a=\\xC3\\xBC',
                     {"extra": {"cookie_sid": 'x"y', "arg_a": "ü"}, "query": "a=ü"}, id="extra-decoded"),
        # --- typed columns ---
        pytest.param('$host:$server_port $remote_addr [$time_local] "$request" $status $bytes_sent $request_length $ssl_protocol',
                     f'[::1]:18431 ::1 {T} "GET / HTTP/1.1" 200 312 77 TLSv1.3',
                     {"vhost": "[::1]", "server_port": 18431, "client_ip": "::1", "response_bytes": 312, "bytes_sent": 312,
                      "request_length": 77, "ssl_protocol": "TLSv1.3"}, id="ipv6-host-port-bytes"),
        pytest.param('$host:$server_port [$time_local] $status', f"shop.example:8080 {T} 200",
                     {"vhost": "shop.example", "server_port": 8080}, id="host-port"),
        pytest.param('[$time_local] $status $body_bytes_sent $bytes_sent', f"{T} 200 5 180",
                     {"bytes_sent": 5, "response_bytes": 180}, id="body-and-total-bytes"),
        pytest.param('[$time_local] $status ua=$upstream_addr us=$upstream_status urt=$upstream_response_time uct=$upstream_connect_time end',
                     f"{T} 502 ua=10.0.0.1:80, 10.0.0.2:80 : unix:/tmp/s us=502, 504 : 200 urt=0.010, 0.002 : 0.004 uct=-, 0.001 : 0.000 end",
                     {"upstream_addr": ["10.0.0.1:80", "10.0.0.2:80", "unix:/tmp/s"], "upstream_status": [502, 504, 200],
                      "upstream_response_time": [0.01, 0.002, 0.004], "upstream_connect_time": [None, 0.001, 0.0]}, id="upstream-lists-unquoted"),
        pytest.param('[$time_local] $status "$upstream_response_time"', f'{T} 200 "-"', {"upstream_response_time": []}, id="no-upstream"),
        pytest.param('$time_local $status $http_user_agent', "05/Mar/2024:08:15:02 +0000 200 curl/8.0 (x)",
                     {"user_agent": "curl/8.0 (x)"}, id="unbracketed-time-local"),
        # --- JSON formats ---
        pytest.param(f"escape=json {JSON_FORMAT}", f'{{"t":"{ISO}","ip":"::1","req":"GET /\\"a\\\\ HTTP/1.1","s":200,"ua":"é","rl":42,"h":"[::1]","p":"8443"}}',
                     {"client_ip": "::1", "status": 200, "request": "GET /\\x22a\\x5C HTTP/1.1", "path": '/"a\\', "user_agent": "é",
                      "request_length": 42, "vhost": "[::1]", "server_port": 8443, "invalid_utf8": False}, id="escape-json"),
        pytest.param(f"escape=json {JSON_FORMAT}", f'{{"t":"{ISO}","ip":"1.2.3.4","req":"GET /\xff HTTP/1.1","s":400,"ua":"a\xc3","rl":0,"h":"","p":""}}'.encode("latin-1"),
                     {"path": "/\ufffd", "user_agent": "a\ufffd", "invalid_utf8": True, "request": "GET /\\xFF HTTP/1.1", "vhost": None}, id="escape-json-raw-high-bytes"),
        pytest.param(JSON_FORMAT, f'{{"t":"{ISO}","ip":"1.2.3.4","req":"GET /\\xC3\\xA9\\x22 HTTP/1.1","s":200,"ua":"\\x5C","rl":1,"h":"h","p":"80"}}',
                     {"path": '/é"', "user_agent": "\\", "request": "GET /\\xC3\\xA9\\x22 HTTP/1.1"}, id="json-shaped-default-escape"),
        pytest.param('escape=json {"r": "$request_method $request_uri", "time": $msec, "status": "$status"}', '{"time": 1709626502.5, "status": "404", "r": "PUT /x?y=1"}',
                     {"method": "PUT", "path": "/x", "query": "y=1", "status": 404}, id="json-any-key-order-and-compound-value"),
        # --- escape=none: nothing is escaped, raw bytes tolerated ---
        pytest.param('escape=none $remote_addr [$time_local] "$request" $status "$http_user_agent"', f'1.2.3.4 {T} "GET /a"b HTTP/1.1" 200 "ua \\x22 "x""'.encode(),
                     {"path": '/a"b', "user_agent": 'ua \\x22 "x"', "request": "GET /a\\x22b HTTP/1.1"}, id="escape-none"),
        pytest.param('escape=none $remote_addr [$time_local] "$request" $status', f'1.2.3.4 {T} "GET /\xff HTTP/1.1" 200'.encode("latin-1"),
                     {"path": "/\ufffd", "invalid_utf8": True}, id="escape-none-raw-bytes"),
    ],
)  # fmt: skip
def test_fidelity(spec: str, line: str | bytes, expected: dict[str, Any]) -> None:
    check(one(spec, line), expected)


@pytest.mark.parametrize(
    ("spec", "line", "error_type", "message"),
    [
        pytest.param(f"escape=json {JSON_FORMAT}", '{"t": "x"}', "unparseable_line", "no value at 'ip'", id="json-missing-key"),
        pytest.param(f"escape=json {JSON_FORMAT}", "not json", "unparseable_line", "does not match", id="not-json"),
        pytest.param("combined", b'1.2.3.4 - - ' + T.encode() + b' "GET /\xff HTTP/1.1" 200 1 "-" "-"', "invalid_encoding", "not UTF-8", id="raw-bytes-in-default-escape"),
    ],
)  # fmt: skip
def test_fidelity_rejections(spec: str, line: str | bytes, error_type: str, message: str) -> None:
    result = LogParser(spec).parse_batch([line])
    [letter] = result.dead_letters
    assert letter.error_type == error_type and message in letter.message


def test_bad_escape_option_is_a_format_error() -> None:
    with pytest.raises(LogFormatError, match="escape='xml'"):
        LogParser("escape=xml $status $msec")


def test_new_fields_stay_off_the_wire_while_unset() -> None:
    plain = one("combined", f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 1 "-" "-"')
    payload = wrap_access_log(plain, "f", 1).payload
    assert "invalid_utf8" not in payload and "upstream_addr" not in payload
    assert WebAccessLog.model_validate(payload) == plain
    flagged = one("auto", f'1.2.3.4 - - {T} "GET /\\xFF HTTP/1.1" 200 1 "-" "-"')
    payload = wrap_access_log(flagged, "f", 2).payload
    assert payload["invalid_utf8"] is True
    assert WebAccessLog.model_validate(payload) == flagged


@settings(deadline=None)
@given(st.binary(max_size=60))
def test_property_escaped_bytes_decode_back(data: bytes) -> None:
    # GIVEN any bytes, escaped as nginx does WHEN unescaped THEN they are the bytes read as UTF-8
    escaped = canonical_request(data.decode("utf-8", "surrogateescape"))
    text, replaced = unescape(escaped)
    assert text == data.decode("utf-8", "replace")
    assert replaced == (text != data.decode("utf-8", "surrogateescape"))


@settings(deadline=None)
@given(
    st.lists(
        st.sampled_from(["0.010", "0.002", "-", "10.0.0.1:80", "unix:/tmp/s"]),
        min_size=1,
        max_size=6,
    ),
    st.data(),
)
def test_property_upstream_lists(entries: list[str], data: st.DataObject) -> None:
    separators = [data.draw(st.sampled_from([", ", " : "])) for _ in entries[1:]]
    text = entries[0] + "".join(s + e for s, e in zip(separators, entries[1:], strict=True))
    expected = [None if e == "-" else e for e in entries]
    assert upstream_list(text) == ([] if text == "-" else expected)


SPECS = [
    "auto",
    "combined",
    f"escape=json {JSON_FORMAT}",
    JSON_FORMAT,
    'escape=none $remote_addr [$time_local] "$request" $status "$http_user_agent"',
]


@settings(deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)), st.sampled_from(SPECS))
def test_property_any_input_is_a_record_a_letter_or_skipped(data: bytes | str, spec: str) -> None:
    result = LogParser(spec).parse_batch([data])
    assert len(result.valid) + result.rejected + result.skipped == 1
    for record in result.valid:
        record.model_dump_json()  # every decoded value is UTF-8 text


@settings(deadline=None)
@given(st.binary(max_size=80))
def test_property_user_agent_bytes_come_back_in_every_format(agent: bytes) -> None:
    # GIVEN any User-Agent bytes, logged as nginx logs them in a default and in a JSON format
    text = agent.decode("utf-8", "surrogateescape")
    escaped = canonical_request(text)
    default_line = f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 1 "-" "{escaped}"'
    json_value = text.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8", "surrogateescape")
    json_line = (
        b'{"t":"' + ISO.encode() + b'","ip":"1.2.3.4","req":"GET / HTTP/1.1","s":200,"ua":"'
        + json_value + b'","rl":1,"h":"h","p":"80"}'
    )  # fmt: skip
    decoded = agent.decode("utf-8", "replace")
    # WHEN parsed THEN both give the bytes read as UTF-8, flagged exactly when they were not UTF-8
    for spec, line in (
        ("combined", default_line.encode()),
        (f"escape=json {JSON_FORMAT}", json_line),
    ):
        result = LogParser(spec).parse_batch([line])
        if any(c < 0x20 or c == 0x7F for c in agent) and spec != "combined":
            continue  # raw control characters are not what escape=json writes
        (record,) = result.valid
        assert record.user_agent == (decoded or None) or decoded.strip() == "-"
        assert record.invalid_utf8 == (decoded != agent.decode("utf-8", "surrogateescape"))
