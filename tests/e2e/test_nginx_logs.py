"""A real nginx writes the same requests in five log formats; every format's parse agrees with its JSON log.

GIVEN Debian's nginx (installed by ``make nginx``, part of ``make test``) running as a foreground
process of this test on free loopback ports, with its own prefix, pid, error log and temp folders in a
tmp dir, logging every request in ``combined``, ``main``, an upstream-timings format (a ``proxy_pass``
to a second local server block, with a dead first upstream and an ``error_page`` redirect to another
one, so the ``$upstream_*`` lists hold ``, `` and `` : ``), an ISO-time format with vhost and port,
and ``escape=json``;
WHEN raw sockets send requests with quotes, backslashes, UTF-8 and invalid bytes in the path and the
headers, HTTP/1.0, HEAD, POST, an absolute-form target, X-Forwarded-For, cookies and arguments, a TLS
handshake and garbage (400s), and an IPv6 client on ``[::1]``;
THEN the JSON log parsed with our parser equals what ``json.loads`` reads in it (the oracle: nginx's
own values), every other format's parse agrees with the JSON record field by field, and ``request``
is byte for byte what nginx wrote in its combined log.

Skips (with the reason) only when no nginx binary is installed. About two seconds.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sluice.core.contracts import WebAccessLog
from sluice.parsing.weblog import NAMED_FORMATS, LogParser

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="no nginx binary (make nginx installs Debian's nginx; it could not here)"
)

UPSTREAM_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
    '"$http_user_agent" rt=$request_time uct="$upstream_connect_time" uht="$upstream_header_time" '
    'urt="$upstream_response_time" ua="$upstream_addr" us="$upstream_status"'
)
ISO_VHOST_FORMAT = (
    '$host:$server_port $remote_addr [$time_iso8601] $msec "$request" $status $bytes_sent '
    '$request_length $ssl_protocol sid=$cookie_sid q=$arg_q "$http_user_agent" "$http_x_forwarded_for"'
)
JSON_VARIABLES = (
    "remote_addr", "remote_user", "time_local", "msec", "request", "status", "body_bytes_sent",
    "bytes_sent", "request_length", "http_referer", "http_user_agent", "http_x_forwarded_for",
    "host", "server_port", "request_time", "upstream_addr", "upstream_status",
    "upstream_response_time", "upstream_connect_time", "upstream_header_time", "ssl_protocol",
    "cookie_sid", "arg_q",
)  # fmt: skip
JSON_FORMAT = "{" + ", ".join(f'"{name}": "${name}"' for name in JSON_VARIABLES) + "}"
FORMATS = {
    "combined": "combined",
    "main": NAMED_FORMATS["main"],
    "upstream": UPSTREAM_FORMAT,
    "iso_vhost": ISO_VHOST_FORMAT,
    "json": f"escape=json {JSON_FORMAT}",
}
"""Log name -> the log_format's arguments, exactly as nginx.conf and ``LogParser`` both take them."""

UA_QUOTES = b'Agent with "quotes" and \\back\\slash\\'
REQUESTS: list[tuple[str, bytes]] = [
    ("plain", b"GET /index.html?q=1 HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: " + UA_QUOTES
     + b"\r\nReferer: http://ref.test/a\"b\r\nCookie: sid=s3ss10n\r\n\r\n"),
    ("utf8", "GET /été/ü?q=ü HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: Agent/é ✓\r\n\r\n".encode()),
    ("invalid-bytes", b"GET /bad\xff\xfe/x HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: raw \xff\xc3 byte\r\n\r\n"),
    ("backslash-quote", b'GET /a\\b/q"uote HTTP/1.1\r\nHost: shop.test\r\n\r\n'),
    ("http-1.0", b"GET /old HTTP/1.0\r\n\r\n"),
    ("head", b"HEAD /head HTTP/1.1\r\nHost: shop.test\r\n\r\n"),
    ("post", b"POST /form HTTP/1.1\r\nHost: shop.test\r\nContent-Type: application/x-www-form-urlencoded"
     b"\r\nContent-Length: 12\r\n\r\na=1&b=%22x%5"),
    ("absolute-form", b"GET http://Other.Test:8080/abs?x=1 HTTP/1.1\r\nHost: shop.test\r\n\r\n"),
    ("forwarded-for", b"GET /xff HTTP/1.1\r\nHost: shop.test\r\nX-Forwarded-For: 198.51.100.7, 203.0.113.9\r\n\r\n"),
    ("upstream-retry", b"GET /up/item?q=7 HTTP/1.1\r\nHost: shop.test\r\n\r\n"),
    ("upstream-redirect", b"GET /redir/x HTTP/1.1\r\nHost: shop.test\r\n\r\n"),
    ("tls-handshake", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"),
    ("garbage", b"\x00\x01garbage \" \\ line\r\n\r\n"),
]  # fmt: skip


def free_port(family: socket.AddressFamily = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        free_port(socket.AF_INET6, "::1")
    except OSError:
        return False
    return True


def nginx_conf(root: Path, port: int, upstream_port: int, dead_port: int, ipv6: bool) -> str:
    logs = "\n".join(
        f"        access_log {root}/{name}.log {'combined' if name == 'combined' else name};"
        for name in FORMATS
    )
    formats = "\n".join(
        f"    log_format {name} {spec.split(' ', 1)[0]} '{spec.split(' ', 1)[1]}';"
        if spec.startswith("escape=")
        else f"    log_format {name} '{spec}';"
        for name, spec in FORMATS.items()
        if name != "combined"
    )
    listen6 = f"        listen [::1]:{port};" if ipv6 else ""
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
{formats}
    upstream retried {{ server 127.0.0.1:{dead_port}; server 127.0.0.1:{upstream_port}; }}
    server {{
        listen 127.0.0.1:{port};
{listen6}
        server_name shop.test;
{logs}
        location / {{ return 200 "ok\\n"; }}
        location /up/ {{ proxy_pass http://retried/; proxy_next_upstream error; }}
        location /redir/ {{
            proxy_pass http://127.0.0.1:{upstream_port}/missing;
            proxy_intercept_errors on;
            error_page 404 = @fallback;
        }}
        location @fallback {{ proxy_pass http://127.0.0.1:{upstream_port}; }}
    }}
    server {{
        listen 127.0.0.1:{upstream_port};
        access_log off;
        location /missing {{ return 404; }}
        location / {{ return 200 "upstream\\n"; }}
    }}
}}
"""


def send(host: str, port: int, payload: bytes) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect((host, port))
        conn.sendall(payload)
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and not payload.startswith(b"POST"):
                # one response is enough: nginx keeps an HTTP/1.1 connection open otherwise
                break
    return b"".join(chunks)


@dataclass
class Logged:
    """What nginx wrote for each request, by log name (lines in request order)."""

    lines: dict[str, list[bytes]]
    names: list[str]
    port: int
    ipv6: bool


def wait_for(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    root = tmp_path_factory.mktemp("nginx")
    (root / "tmp").mkdir()
    ipv6 = has_ipv6_loopback()
    port, upstream_port, dead_port = free_port(), free_port(), free_port()
    (root / "nginx.conf").write_text(nginx_conf(root, port, upstream_port, dead_port, ipv6))
    assert NGINX is not None
    process = subprocess.Popen(
        [NGINX, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def listening() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"nginx exited: {process.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            except OSError:
                return False
            return True

        wait_for(listening, "nginx to listen")
        requests = list(REQUESTS)
        if ipv6:
            requests.append(("ipv6", f"GET /v6 HTTP/1.1\r\nHost: [::1]:{port}\r\n\r\n".encode()))
        for name, payload in requests:
            host = "::1" if name == "ipv6" else "127.0.0.1"
            send(host, port, payload.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
                 if payload.startswith((b"GET", b"HEAD", b"POST")) else payload)  # fmt: skip

        def all_logged() -> bool:
            return all(
                (root / f"{name}.log").exists()
                and (root / f"{name}.log").read_bytes().count(b"\n") >= len(requests)
                for name in FORMATS
            )

        wait_for(all_logged, "every request in every log")
        lines = {name: (root / f"{name}.log").read_bytes().splitlines() for name in FORMATS}
        yield Logged(lines, [name for name, _ in requests], port, ipv6)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - nginx ignores SIGTERM
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------------------------
# The oracle: nginx's JSON log read with json.loads, nothing of ours
# ---------------------------------------------------------------------------------------------


def oracle(raw: bytes) -> dict[str, str | None]:
    """Each variable of a JSON log line as text (bytes that are not UTF-8 as U+FFFD; '-' -> None)."""
    values = json.loads(raw.decode("utf-8", "surrogateescape"))
    return {
        k: None
        if v in ("-", "")
        else v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        for k, v in values.items()
    }


def has_raw_bytes(raw: bytes, *names: str) -> bool:
    values = json.loads(raw.decode("utf-8", "surrogateescape"))
    return any(re.search("[\udc80-\udcff]", values[n]) for n in names)


def entries(text: str | None, kind: type) -> list[Any]:
    if text is None:
        return []
    return [None if p == "-" else kind(p) for p in re.split(r", | : ", text)]


def combined_request(raw: bytes) -> str:
    """The quoted request of a combined line, exactly as nginx escaped it."""
    found = re.search(rb'\] "((?:[^"\\]|\\.)*)" \d{3} ', raw)
    assert found is not None, raw
    return found.group(1).decode("ascii")


def parse(log: str, raw: bytes) -> WebAccessLog:
    outcome = LogParser(FORMATS[log]).parse_raw(raw)
    assert isinstance(outcome, WebAccessLog), (log, raw, outcome)
    return outcome


def test_the_json_log_parses_to_what_nginx_logged(logged: Logged) -> None:
    for index, name in enumerate(logged.names):
        raw = logged.lines["json"][index]
        record, want = parse("json", raw), oracle(raw)
        expected = {
            "client_ip": want["remote_addr"],
            "remote_user": want["remote_user"],
            "event_time": datetime.fromtimestamp(float(want["msec"] or 0), UTC),
            "status": int(want["status"] or 0),
            "bytes_sent": int(want["body_bytes_sent"] or 0),
            "response_bytes": int(want["bytes_sent"] or 0),
            "request_length": int(want["request_length"] or 0),
            "referer": want["http_referer"],
            "user_agent": want["http_user_agent"],
            "forwarded_for": [
                a.strip() for a in (want["http_x_forwarded_for"] or "").split(",") if a
            ],
            "vhost": want["host"],
            "server_port": int(want["server_port"] or 0),
            "request_time": float(want["request_time"] or 0),
            "ssl_protocol": want["ssl_protocol"],
            "upstream_addr": entries(want["upstream_addr"], str),
            "upstream_status": entries(want["upstream_status"], int),
            "upstream_response_time": entries(want["upstream_response_time"], float),
            "upstream_connect_time": entries(want["upstream_connect_time"], float),
            "upstream_header_time": entries(want["upstream_header_time"], float),
            "extra": {k: v for k in ("cookie_sid", "arg_q") if (v := want[k]) is not None},
            "invalid_utf8": has_raw_bytes(raw, *JSON_VARIABLES),
            "request": combined_request(logged.lines["combined"][index]),
        }
        assert {k: getattr(record, k) for k in expected} == expected, name


# Which fields each text format logs, so its record must equal the JSON record on them.
COMMON = ("client_ip", "remote_user", "request", "method", "path", "query", "protocol", "status")
FIELDS_OF_LOG = {
    "combined": (*COMMON, "bytes_sent", "referer", "user_agent"),
    "main": (*COMMON, "bytes_sent", "referer", "user_agent", "forwarded_for"),
    "upstream": (
        *COMMON, "bytes_sent", "referer", "user_agent", "request_time", "upstream_addr",
        "upstream_status", "upstream_response_time", "upstream_connect_time", "upstream_header_time",
    ),
    "iso_vhost": (
        *COMMON, "event_time", "vhost", "server_port", "response_bytes", "request_length",
        "ssl_protocol", "extra", "user_agent", "forwarded_for",
    ),
}  # fmt: skip


@pytest.mark.parametrize("log", list(FIELDS_OF_LOG))
def test_every_format_agrees_with_the_json_log(logged: Logged, log: str) -> None:
    assert len(logged.lines[log]) == len(logged.lines["json"]) == len(logged.names)
    for index, name in enumerate(logged.names):
        reference = parse("json", logged.lines["json"][index])
        record = parse(log, logged.lines[log][index])
        fields = FIELDS_OF_LOG[log]
        got = {k: getattr(record, k) for k in fields}
        assert got == {k: getattr(reference, k) for k in fields}, (name, log)
        # every format logs the request line and the user agent, where the raw bytes were sent
        assert record.invalid_utf8 == reference.invalid_utf8, (name, log)
        # $time_local has whole seconds, $msec milliseconds
        assert record.event_time == reference.event_time.replace(
            microsecond=record.event_time.microsecond
        )


def by_name(logged: Logged, log: str, name: str) -> WebAccessLog:
    return parse(log, logged.lines[log][logged.names.index(name)])


def test_values_are_what_the_client_sent(logged: Logged) -> None:
    for log in ("combined", "json"):
        plain = by_name(logged, log, "plain")
        assert plain.user_agent == UA_QUOTES.decode()
        assert plain.referer == 'http://ref.test/a"b'
        assert by_name(logged, log, "utf8").path == "/été/ü"
        assert by_name(logged, log, "utf8").user_agent == "Agent/é ✓"
        invalid = by_name(logged, log, "invalid-bytes")
        assert invalid.invalid_utf8 and invalid.path == "/bad\ufffd\ufffd/x"
        assert invalid.request == r"GET /bad\xFF\xFE/x HTTP/1.1"
        assert by_name(logged, log, "backslash-quote").path == '/a\\b/q"uote'
        assert by_name(logged, log, "head").method == "HEAD"
        assert by_name(logged, log, "http-1.0").protocol == "HTTP/1.0"
        for garbage in ("tls-handshake", "garbage"):
            record = by_name(logged, log, garbage)
            assert record.status == 400 and record.method is None, (log, garbage)
    assert by_name(logged, "iso_vhost", "utf8").extra["arg_q"] == "ü"
    assert by_name(logged, "iso_vhost", "plain").extra == {"cookie_sid": "s3ss10n", "arg_q": "1"}
    assert by_name(logged, "iso_vhost", "absolute-form").vhost == "other.test"
    post = by_name(logged, "iso_vhost", "post")
    assert post.method == "POST" and post.request_length is not None and post.request_length > 12
    assert by_name(logged, "main", "forwarded-for").forwarded_for == ["198.51.100.7", "203.0.113.9"]
    retry = by_name(logged, "upstream", "upstream-retry")
    assert len(retry.upstream_addr) == 2 and retry.upstream_status[-1] == 200
    redirect = by_name(logged, "upstream", "upstream-redirect")
    assert redirect.upstream_status == [404, 200]


def test_ipv6_client_and_host_with_port(logged: Logged) -> None:
    if not logged.ipv6:
        pytest.skip("this machine has no IPv6 loopback (::1)")
    record = by_name(logged, "iso_vhost", "ipv6")
    # "$host:$server_port" is "[::1]:PORT": split at the colon after the bracket
    assert (record.client_ip, record.vhost, record.server_port) == ("::1", "[::1]", logged.port)
    assert by_name(logged, "combined", "ipv6").client_ip == "::1"
