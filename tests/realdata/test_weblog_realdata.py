"""Optional: the nginx access-log parser over ../shared/realdata (skipped when that folder is absent).

The files are read in place, never copied into the project. Expected values come from third parties:
Vector's VRL unit tests (``vrl_parse_log_vectors.jsonl``) and Filebeat's expected output
(``test.log-expected.json``). Where Sluice's contract deliberately differs from theirs, the test maps
their value to ours and says why, next to the mapping.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sluice.core.contracts import ErrorType, WebAccessLog
from sluice.parsing.weblog import NAMED_FORMATS, LogParser

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
if not REALDATA.is_dir():
    pytest.skip(f"no real data at {REALDATA}", allow_module_level=True)

pytestmark = pytest.mark.realdata

ACCESS_LOGS = REALDATA / "nginx_access_logs"
VRL_VECTORS = REALDATA / "nginx_parser_test_vectors" / "vector_vrl" / "vrl_parse_log_vectors.jsonl"
BEATS = REALDATA / "nginx_parser_test_vectors" / "elastic_beats_filebeat_nginx"
MALFORMED = "lnav_bad_access_log_malformed.log"

# ingress-nginx's documented ``upstreaminfo`` log_format (kubernetes.github.io/ingress-nginx,
# "Log format"), written as the log_format string it is.
UPSTREAMINFO = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
    '"$http_user_agent" $request_length $request_time [$proxy_upstream_name] '
    "[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length "
    "$upstream_response_time $upstream_status $req_id"
)
# VRL's ``combined`` accepts an optional trailing ``"$gzip_ratio"`` (its ``compression`` field); our
# named ``combined`` is nginx's exact definition and refuses extra fields, so such lines are checked
# with this log_format.
COMBINED_GZIP = NAMED_FORMATS["combined"] + ' "$gzip_ratio"'


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def target(record: WebAccessLog) -> str | None:
    """The request target as logged, put back together from path and query."""
    if record.path is None:
        return None
    return record.path if record.query is None else f"{record.path}?{record.query}"


def clf_to_utc(text: str) -> datetime:
    return datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z").astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# (a) every lnav access log parses with the auto format
# ---------------------------------------------------------------------------------------------

ACCESS_LOG_FILES = (
    sorted(p.name for p in ACCESS_LOGS.iterdir() if p.name != "SOURCE.txt")
    if ACCESS_LOGS.is_dir()
    else []
)


@pytest.mark.parametrize("name", ACCESS_LOG_FILES)
def test_every_access_log_line_parses_except_the_malformed_one(name: str):
    # GIVEN a real access log
    lines = lines_of(ACCESS_LOGS / name)
    # WHEN parsed with the auto format
    result = LogParser("auto").parse_batch(lines)
    # THEN every line is a record, except the malformed middle line of the 'bad' log
    if name == MALFORMED:
        assert len(lines) == 3
        [letter] = result.dead_letters
        assert letter.error_type is ErrorType.UNPARSEABLE_LINE
        assert letter.raw == lines[1].decode()
        assert len(result.valid) == 2
    else:
        assert result.dead_letters == []
        assert len(result.valid) == len(lines)
    # AND each record keeps the request line as logged; where split, the parts rebuild it
    for record in result.valid:
        assert record.event_time.utcoffset() is not None
        if record.method is not None:
            rebuilt = f"{record.method} {target(record)}"
            if record.protocol is not None:
                rebuilt += f" {record.protocol}"
            assert rebuilt == record.request


def test_zanbil_shop_log_fields_follow_the_raw_lines():
    # GIVEN 1,000 real lines: combined + a trailing "$http_x_forwarded_for", +0330 times
    lines = lines_of(ACCESS_LOGS / "lnav_zanbil_shop_access_log_1000.log")
    result = LogParser("auto").parse_batch(lines)
    assert len(result.valid) == 1000
    # WHEN compared with the raw text, field by field
    for raw, record in zip(lines, result.valid, strict=True):
        text = raw.decode()
        client, rest = text.split(" - - [", 1)
        when, rest = rest.split("] ", 1)
        # THEN the client, the time (converted to UTC) and the target are the logged ones
        assert record.client_ip == client
        assert record.event_time == clf_to_utc(when)
        assert f'"{record.request}" {record.status} ' in rest
        # AND the last quoted field is X-Forwarded-For ('-' when the header was absent)
        header = text.rsplit(' "', 1)[1].removesuffix('"')
        assert record.forwarded_for == ([] if header == "-" else header.split(", "))
        assert record.vhost is None and record.extra == {}
    # AND the same lines parse identically with the named 'main' format
    assert LogParser("main").parse_batch(lines).valid == result.valid


def test_vhost_log_with_duration():
    # GIVEN "vhost:port client ident user [time] ... duration" lines (HTTP/2.0, non-dash ident/user)
    lines = lines_of(ACCESS_LOGS / "lnav_vhost_access_log_with_duration.log")
    result = LogParser("auto").parse_batch(lines)
    assert result.dead_letters == [] and len(result.valid) == len(lines) == 2
    for raw, record in zip(lines, result.valid, strict=True):
        vhost, client, _, user, _ = raw.decode().split(" ", 4)
        # THEN the vhost, the client and the user are read; the integer duration (microseconds,
        # Apache's %D) is no nginx $request_time (seconds), so it stays in extra as logged
        assert (record.vhost, record.client_ip, record.remote_user) == (vhost, client, user)
        assert ":" in vhost
        assert record.protocol == "HTTP/2.0" and record.query
        assert record.request_time is None
        assert raw.decode().endswith(" " + record.extra["trailing"])
        assert record.extra["trailing"].isdigit()
    # AND the named 'combined' format refuses these vhost lines
    strict = LogParser("combined").parse_batch(lines)
    assert strict.valid == [] and {d.error_type for d in strict.dead_letters} == {
        ErrorType.UNPARSEABLE_LINE
    }


def test_dash_request_line():
    [record] = (
        LogParser("auto")
        .parse_batch(lines_of(ACCESS_LOGS / "lnav_access_log.1_dash_request.log"))
        .valid
    )
    assert (record.request, record.method, record.path, record.status, record.bytes_sent) == (
        "-",
        None,
        None,
        400,
        0,
    )
    assert record.referer is None and record.user_agent is None


# ---------------------------------------------------------------------------------------------
# (b) Vector's VRL parse_nginx_log vectors
# ---------------------------------------------------------------------------------------------


def load_vrl_cases() -> list[dict[str, Any]]:
    if not VRL_VECTORS.is_file():
        return []
    cases = [json.loads(line) for line in VRL_VECTORS.read_text().splitlines() if line.strip()]
    return [c for c in cases if c["function"] == "parse_nginx_log"]


VRL_CASES = load_vrl_cases()
ACCESS_FORMATS = {"combined", "main", "ingress_upstreaminfo"}


def test_vrl_nginx_formats_are_the_known_ones():
    # The error-log format is no access log: its cases are checked separately below.
    assert {c["args"]["format"] for c in VRL_CASES} == ACCESS_FORMATS | {"error"}


def vrl_time(value: dict[str, str]) -> datetime:
    return datetime.fromisoformat(value["$timestamp"].replace("Z", "+00:00"))


def none_if_dash(value: Any) -> Any:
    """VRL keeps '-' and '' for referer and agent (combined); the contract says '-' becomes None,
    and an empty header is no header either."""
    return None if value in ("-", "") else value


def expected_from_vrl(case: dict[str, Any]) -> dict[str, Any]:
    """VRL's expected output, mapped to WebAccessLog fields."""
    want = case["want_ok"]
    if case["args"]["format"] == "combined":
        expected = {
            "client_ip": want["client"],
            # VRL omits a '-' user; ours is None.
            "remote_user": want.get("user"),
            "referer": none_if_dash(want.get("referer")),
            "user_agent": none_if_dash(want.get("agent")),
            "bytes_sent": want["size"],
        }
    else:  # main and ingress_upstreaminfo name fields after nginx variables
        expected = {
            "client_ip": want["remote_addr"],
            "remote_user": want.get("remote_user"),
            "referer": none_if_dash(want.get("http_referer")),
            "user_agent": none_if_dash(want.get("http_user_agent")),
            "bytes_sent": want["body_bytes_size"],
        }
    expected["event_time"] = vrl_time(want["timestamp"])
    expected["request"] = want["request"]
    expected["status"] = want["status"]
    if case["args"]["format"] == "main":
        # VRL keeps the header as one string; ours is the list of its addresses.
        header = want.get("http_x_forwarded_for", "")
        expected["forwarded_for"] = [a.strip() for a in header.split(",") if a.strip()]
    return expected


def check(record: WebAccessLog, expected: dict[str, Any]) -> None:
    assert {key: getattr(record, key) for key in expected} == expected


def parse_one(spec: str, line: str) -> WebAccessLog:
    result = LogParser(spec).parse_batch([line])
    assert result.dead_letters == [], (spec, result.dead_letters)
    [record] = result.valid
    return record


OK_CASES = [c for c in VRL_CASES if "want_ok" in c and c["args"]["format"] in ACCESS_FORMATS]
ERR_CASES = [c for c in VRL_CASES if "want_err" in c]
ERROR_LOG_CASES = [c for c in VRL_CASES if c["args"]["format"] == "error"]


@pytest.mark.parametrize(
    "case", OK_CASES, ids=[f"{c['args']['format']}-{c['case']}" for c in OK_CASES]
)
def test_vrl_access_vectors(case: dict[str, Any]):
    # GIVEN a line and the fields VRL's parse_nginx_log returns for it
    line, fmt, want = case["args"]["value"], case["args"]["format"], case["want_ok"]
    expected = expected_from_vrl(case)
    # WHEN parsed with the auto format THEN the common fields agree
    auto = parse_one("auto", line)
    check(auto, expected)
    # AND WHEN parsed with the matching explicit format THEN they agree as well
    if fmt == "main":
        check(parse_one("main", line), expected)
    elif fmt == "combined":
        strict = LogParser("combined").parse_batch([line])
        if strict.valid:
            check(strict.valid[0], expected)
        else:
            # a trailing "$gzip_ratio": nginx's own combined has none, so ours refuses the line...
            assert [d.error_type for d in strict.dead_letters] == [ErrorType.UNPARSEABLE_LINE]
            # ...and the log_format that has it gives VRL's 'compression' (a '-' ratio is omitted by
            # VRL and dropped from extra by us)
            gzip = parse_one(COMBINED_GZIP, line)
            check(gzip, expected)
            ratio = want.get("compression")
            assert gzip.extra == ({"gzip_ratio": ratio} if ratio else {})
            # auto cannot know the name of a non-address third field: it keeps it, as logged
            if ratio:
                assert auto.extra == {"trailing": f'"{ratio}"'} and auto.forwarded_for == []
    else:  # ingress_upstreaminfo, as its documented log_format string
        record = parse_one(UPSTREAMINFO, line)
        check(record, expected)
        assert record.request_time == want["request_time"]
        # Variables with a column of their own fill it (the upstream ones as one entry per upstream
        # tried); VRL keeps a '-' upstream_addr, ours has no entry (an absent value).
        for key in ("request_length", "upstream_addr", "upstream_response_time", "upstream_status"):
            value = getattr(record, key)
            if key not in want or want[key] == "-":
                assert value in (None, [])
            else:
                assert value == (want[key] if key == "request_length" else [want[key]])
        # VRL types the other upstream values; ours keeps strings in extra and drops '-', like
        # every other unmapped variable.
        extra_keys = set(want) - {
            "remote_addr", "remote_user", "timestamp", "request", "status", "body_bytes_size",
            "http_referer", "http_user_agent", "request_time", "request_length", "upstream_addr",
            "upstream_response_time", "upstream_status",
        }  # fmt: skip
        for key in extra_keys:
            if want[key] == "-":
                assert key not in record.extra
            elif isinstance(want[key], int | float):
                assert float(record.extra[key]) == want[key]
            else:
                assert record.extra[key] == want[key]
        assert set(record.extra) <= extra_keys
        # auto reads the combined part and keeps the upstream fields as one trailing text
        assert auto.extra["trailing"].startswith(f"{want['request_length']} ")


@pytest.mark.parametrize("case", ERR_CASES, ids=[c["case"] for c in ERR_CASES])
def test_vrl_invalid_lines_become_dead_letters(case: dict[str, Any]):
    line = case["args"]["value"]
    for spec in ("auto", case["args"]["format"]):
        result = LogParser(spec).parse_batch([line])
        assert result.valid == []
        assert [d.error_type for d in result.dead_letters] == [ErrorType.UNPARSEABLE_LINE]
        assert result.dead_letters[0].raw == line


def test_vrl_error_log_lines_are_not_access_records():
    # nginx error-log lines are another source; the access-log parser dead-letters them
    assert ERROR_LOG_CASES
    result = LogParser("auto").parse_batch([c["args"]["value"] for c in ERROR_LOG_CASES])
    assert result.valid == []
    assert len(result.dead_letters) == len(ERROR_LOG_CASES)


# ---------------------------------------------------------------------------------------------
# (c) Filebeat's nginx module: test.log and its expected output
# ---------------------------------------------------------------------------------------------


def first_global(addresses: list[str]) -> str:
    """Filebeat's choice of source.ip: the first public address of the list, else the first."""
    for address in addresses:
        if ipaddress.ip_address(address).is_global:
            return address
    return addresses[0]


def test_filebeat_expected_output():
    # GIVEN Filebeat's test log and the documents it expects from it
    lines = lines_of(BEATS / "test.log")
    expected_docs = json.loads((BEATS / "test.log-expected.json").read_text())
    assert len(lines) == len(expected_docs) == 7
    # WHEN the log is parsed
    result = LogParser("auto").parse_batch(lines)
    assert result.dead_letters == []
    for record, doc in zip(result.valid, expected_docs, strict=True):
        # THEN time, status, size, method, URL, version and user agent agree
        assert record.event_time == datetime.fromisoformat(doc["@timestamp"].replace("Z", "+00:00"))
        assert record.status == doc["http.response.status_code"]
        assert record.bytes_sent == doc["http.response.body.bytes"]
        assert record.method == doc.get("http.request.method")
        assert target(record) == doc.get("url.original")
        version = doc.get("http.version")
        assert record.protocol == (f"HTTP/{version}" if version else None)
        # Filebeat keeps '-' for an absent user agent, referrer and user; the contract has None.
        assert record.user_agent == none_if_dash(doc["user_agent.original"])
        assert record.referer == none_if_dash(doc["http.request.referrer"])
        assert record.remote_user == none_if_dash(doc["user.name"])
        # AND the addresses: Filebeat lists every address of the line and picks the first public one
        # as source.ip. Sluice's client_ip is the peer nginx logged last (the $remote_addr position),
        # and forwarded_for holds the addresses before it. Same addresses, same order:
        assert [*record.forwarded_for, record.client_ip] == doc["nginx.access.remote_ip_list"]
        # and Filebeat's source choice can be made from them (GeoIP does it downstream)
        assert first_global([*record.forwarded_for, record.client_ip]) == doc["source.ip"]
        assert doc["source.address"] == doc["source.ip"]


def test_filebeat_logs_without_expected_output_parse():
    # GIVEN access.log (real dev traffic plus one vhost-prefixed line) and test-with-host.log (a
    # host[:port] prefix on every line, a unix: client, a hostname client, odd requests)
    access_lines = lines_of(BEATS / "access.log")
    access = LogParser("auto").parse_batch(access_lines)
    # THEN every line is a record
    assert access.dead_letters == [] and len(access.valid) == len(access_lines)
    [hosted] = [(raw, r) for raw, r in zip(access_lines, access.valid, strict=True) if r.vhost]
    assert hosted[1].vhost == hosted[0].decode().split(" ", 1)[0]
    host_lines = lines_of(BEATS / "test-with-host.log")
    hosts = LogParser("auto").parse_batch(host_lines)
    assert hosts.dead_letters == [] and len(hosts.valid) == len(host_lines) == 10
    for raw, record in zip(host_lines, hosts.valid, strict=True):
        text = raw.decode()
        # AND the first token is the vhost, the client and forwarded addresses come from the line
        assert record.vhost == text.split(" ", 1)[0]
        assert record.client_ip is not None and record.client_ip in text
        assert all(address in text for address in record.forwarded_for)
        if " " not in (record.request or ""):
            assert record.method is None
