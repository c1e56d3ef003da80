"""The local edge server over real HTTP (urllib), bound to a free port, invoking the real handlers."""

from __future__ import annotations

import gzip
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import orjson
import pytest
from kinesis_reader import read_stream

from edge_lambdas.local_server import LocalEdgeServer, create_server, main


@pytest.fixture
def server(iot_handler: ModuleType, log_handler: ModuleType) -> Iterator[LocalEdgeServer]:
    """The handler fixtures (re)load both modules from this test's environment first."""
    edge = create_server(0, quiet=True)
    thread = threading.Thread(
        target=edge.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield edge
    finally:
        edge.shutdown()
        edge.server_close()


def request(
    server: LocalEdgeServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(server.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), orjson.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), orjson.loads(err.read())


READING = {"deviceId": "thermo-7", "timestamp": "2026-11-26T12:00:00Z", "temp": 21.5}


def test_posting_a_reading_answers_like_api_gateway_and_publishes_it(
    server: LocalEdgeServer, kinesis: Any, stream: str
) -> None:
    # GIVEN a reading posted as curl -d does (form content type, JSON body)
    body = orjson.dumps(READING)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}

    # WHEN posted to /iot
    status, response_headers, answer = request(server, "POST", "/iot", body, headers)

    # THEN the handler's answer comes back and the reading is on the stream
    assert (status, answer) == (202, {"accepted": 1, "rejected": 0, "errors": []})
    assert response_headers["content-type"] == "application/json"
    (envelope,) = read_stream(kinesis, stream).records()
    assert envelope.partition_key == "thermo-7"


def test_gzip_bodies_reach_the_handler_as_api_gateway_passes_them(
    server: LocalEdgeServer, kinesis: Any, stream: str
) -> None:
    body = gzip.compress(b"\n".join(orjson.dumps({**READING, "temp": t}) for t in range(5)))
    headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    status, _, answer = request(server, "POST", "/iot", body, headers)
    assert (status, answer["accepted"]) == (202, 5)
    assert len(read_stream(kinesis, stream).records()) == 5


def test_bad_requests_get_the_handlers_error_answer(server: LocalEdgeServer) -> None:
    status, _, answer = request(
        server, "POST", "/iot", b'{"temp": 1}', {"Content-Type": "application/json"}
    )
    assert status == 400 and answer["errors"][0]["error_type"] == "missing_field"


def test_routes_methods_and_health(server: LocalEdgeServer) -> None:
    assert request(server, "GET", "/health")[0] == 200
    assert request(server, "GET", "/iot")[0] == 405
    assert request(server, "POST", "/nowhere", b"{}")[0] == 404


def test_a_request_over_the_api_gateway_limit_is_refused_before_any_invocation(
    server: LocalEdgeServer, kinesis: Any, stream: str
) -> None:
    status, _, answer = request(server, "POST", "/iot", b" " * (10 * 1024 * 1024 + 1))
    assert status == 413 and answer == {"message": "Request Entity Too Large"}
    assert read_stream(kinesis, stream).envelopes == []


def test_posting_log_lines_feeds_the_log_pipeline_as_a_cloudwatch_subscription(
    server: LocalEdgeServer, kinesis: Any, stream: str
) -> None:
    # GIVEN three access-log lines and a broken one, gzip-compressed
    lines = [
        f'203.0.113.9 - - [26/Nov/2026:12:00:0{i} +0000] "GET /p/{i} HTTP/1.1" 200 12 "-" "curl/8"'
        for i in range(3)
    ]
    body = gzip.compress("\n".join([*lines, "garbage"]).encode())

    # WHEN posted to /logs
    status, _, summary = request(
        server, "POST", "/logs?group=/web&stream=w1", body, {"Content-Encoding": "gzip"}
    )

    # THEN the handler's summary comes back and the records and dead letter are on the stream
    assert status == 200
    assert (summary["emitted"], summary["dead_lettered"]) == (3, {"unparseable_line": 1})
    contents = read_stream(kinesis, stream)
    assert len(contents.records()) == 3 and len(contents.dead_letters()) == 1


def test_concurrent_requests_are_all_served(
    server: LocalEdgeServer, kinesis: Any, stream: str
) -> None:
    body = orjson.dumps(READING)

    def post(i: int) -> int:
        payload = body.replace(b"thermo-7", f"thermo-{i}".encode())
        return request(server, "POST", "/iot", payload, {"Content-Type": "application/json"})[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(post, range(16))) == [202] * 16
    assert len(read_stream(kinesis, stream).records()) == 16


def test_main_reports_a_configuration_problem_and_exits_2(
    edge_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN no stream configured and handler modules not loaded yet (a fresh process)
    monkeypatch.delenv("SLUICE_STREAM_NAME")
    for module in ("edge_lambdas.iot_ingest.handler", "edge_lambdas.log_ingest.handler"):
        monkeypatch.delitem(sys.modules, module, raising=False)

    # WHEN the server is started THEN it refuses, naming the variable
    assert main(["--port", "0", "--quiet"]) == 2
    assert "SLUICE_STREAM_NAME" in capsys.readouterr().err
