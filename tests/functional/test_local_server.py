"""The local edge server over real HTTP (urllib, or raw sockets for what no client library sends),
bound to a free port, invoking the real handlers."""

from __future__ import annotations

import gzip
import logging
import socket
import statistics
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import orjson
import pytest
from kinesis_reader import read_stream

from edge_lambdas.local_server import FifoLock, LocalEdgeServer, create_server, main

StartServer = Callable[..., LocalEdgeServer]


@pytest.fixture
def start_server(iot_handler: ModuleType, log_handler: ModuleType) -> Iterator[StartServer]:
    """Start servers with ``create_server`` options; all are stopped at the end of the test.

    The handler fixtures (re)load both modules from this test's environment first.
    """
    started: list[LocalEdgeServer] = []

    def start(**options: Any) -> LocalEdgeServer:
        edge = create_server(0, **{"quiet": True, **options})
        threading.Thread(
            target=edge.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        started.append(edge)
        return edge

    try:
        yield start
    finally:
        for edge in started:
            edge.shutdown()
            edge.server_close()


@pytest.fixture
def server(start_server: StartServer) -> LocalEdgeServer:
    return start_server()


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


def test_main_refuses_a_read_timeout_that_is_not_a_positive_number(
    edge_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--port", "0", "--quiet", "--read-timeout", "0"]) == 2
    assert "read timeout" in capsys.readouterr().err


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


# --- Hostile and broken clients -------------------------------------------------------------------


def exchange(
    server: LocalEdgeServer, data: bytes, *, shut_write: bool = False, wait: float = 10.0
) -> tuple[bytes, float, bool]:
    """Send raw bytes and read until the server closes: (what came back, seconds, closed by it)."""
    host, port = server.server_address[:2]
    started = time.monotonic()
    with socket.create_connection((str(host), port), timeout=wait) as sock:
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return received, time.monotonic() - started, False
    return received, time.monotonic() - started, True


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0


BODY = orjson.dumps(READING)


def post_head(*headers: str, path: str = "/iot") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: edge\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param(("Content-Length: -1",), 400, id="negative"),
        pytest.param(("Content-Length: 12abc",), 400, id="not-a-number"),
        pytest.param(("Content-Length: +5",), 400, id="signed"),
        pytest.param(("Content-Length: 5", "Content-Length: 6"), 400, id="two-that-differ"),
        pytest.param(("Content-Length: 5, 6",), 400, id="a-list-that-differs"),
        pytest.param(("Content-Length: 99999999999999999999999999",), 413, id="huge"),
        pytest.param(("Content-Length: 10485761",), 413, id="over-the-limit"),
        pytest.param(("Transfer-Encoding: chunked",), 411, id="chunked"),
        pytest.param(
            ("Transfer-Encoding: chunked", "Content-Length: 5"), 400, id="chunked-and-length"
        ),
    ],
)
def test_lengths_the_server_cannot_trust_are_refused_at_once_without_an_invocation(
    start_server: StartServer, kinesis: Any, stream: str, headers: tuple[str, ...], status: int
) -> None:
    # GIVEN a server with a long read timeout, and a client that stays connected after sending
    server = start_server(read_timeout=30)

    # WHEN a request with an untrustworthy length arrives
    response, seconds, closed = exchange(server, post_head(*headers) + BODY)

    # THEN it is refused at once (not when the timeout fires), the connection closed, nothing sent
    assert status_of(response) == status and closed and seconds < 10
    assert read_stream(kinesis, stream).envelopes == []


def test_a_request_whose_body_stops_short_is_answered_408_after_the_timeout_and_not_published(
    start_server: StartServer, kinesis: Any, stream: str
) -> None:
    # GIVEN a client that sends half of the NDJSON body it announced and then waits
    server = start_server(read_timeout=1)
    body = b"\n".join(orjson.dumps({**READING, "temp": t}) for t in range(6))
    head = post_head(f"Content-Length: {len(body)}", "Content-Type: application/x-ndjson")

    # WHEN the read timeout passes
    response, seconds, closed = exchange(server, head + body[: len(body) // 2])

    # THEN 408, the connection closed, and none of the complete readings it did send published
    assert status_of(response) == 408 and closed and 0.9 < seconds < 8
    assert read_stream(kinesis, stream).envelopes == []


def test_an_aborted_upload_is_dropped_and_its_retry_lands_once(
    server: LocalEdgeServer, kinesis: Any, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN an NDJSON upload of 6 readings whose client gives up half way (closes its side)
    body = b"\n".join(orjson.dumps({**READING, "temp": t}) for t in range(6))
    head = post_head(f"Content-Length: {len(body)}", "Content-Type: application/x-ndjson")
    with caplog.at_level(logging.WARNING, logger="edge_lambdas.local_server"):
        _, _, closed = exchange(server, head + body[: len(body) // 2], shut_write=True)

    # WHEN the client retries the whole upload
    status, _, answer = request(
        server, "POST", "/iot", body, {"Content-Type": "application/x-ndjson"}
    )

    # THEN the aborted copy published nothing and the retry everything, once
    assert closed and (status, answer["accepted"]) == (202, 6)
    assert sorted(e.payload["metrics"]["temp"] for e in read_stream(kinesis, stream).records()) == [
        float(t) for t in range(6)
    ]
    assert "dropped an incomplete request to /iot" in caplog.text


def test_a_slow_client_cannot_hold_a_connection_by_sending_a_byte_at_a_time(
    start_server: StartServer,
) -> None:
    # GIVEN a 1 s read timeout and a client that drips its headers (each byte well within it)
    server = start_server(read_timeout=1)
    host, port = server.server_address[:2]
    started = time.monotonic()
    with socket.create_connection((str(host), port), timeout=10) as sock:
        sock.sendall(b"POST /iot HTTP/1.1\r\n")
        # WHEN it keeps dripping for up to 8 s
        try:
            for _ in range(40):
                sock.sendall(b"X")
                time.sleep(0.2)
            closed_after = None
        except (BrokenPipeError, ConnectionResetError):
            closed_after = time.monotonic() - started
    # THEN the server closed the connection once the request's time was up, not the drip's
    assert closed_after is not None and closed_after < 6


def test_an_http_09_request_line_is_answered_at_once(start_server: StartServer) -> None:
    server = start_server(read_timeout=30)
    response, seconds, closed = exchange(server, b"GET /health\r\n")
    assert status_of(response) == 400 and b"HTTP/0.9" in response
    assert closed and seconds < 10


def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(
    start_server: StartServer,
) -> None:
    server = start_server(read_timeout=1)
    head = b"GET /health HTTP/1.1\r\nHost: edge\r\n\r\n"
    response, seconds, closed = exchange(server, head)
    assert status_of(response) == 200 and closed and 0.9 < seconds < 8


def test_a_gzip_bomb_on_logs_is_too_large_like_on_iot(
    server: LocalEdgeServer, kinesis: Any, stream: str
) -> None:
    # GIVEN 100 KB of gzip inflating to 100 MiB (over the 64 MiB /logs limit)
    bomb = gzip.compress(b"\n" * (100 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 200_000

    status, _, answer = request(server, "POST", "/logs", bomb, {"Content-Encoding": "gzip"})

    assert status == 413 and "exceeds" in answer["message"]
    assert read_stream(kinesis, stream).envelopes == []


def test_the_access_log_shows_paths_without_query_strings(
    start_server: StartServer, capfd: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a server with its access log on, and requests whose query strings hold a key
    server = start_server(quiet=False)
    status, _, _ = request(server, "POST", "/logs?group=/web&stream=w1&api_key=SECRET-1", b"x")
    assert status == 200
    assert request(server, "GET", "/health?token=SECRET-2")[0] == 200
    exchange(server, b"GET /x?key=SECRET-3 HTTP/1.1 extra\r\n\r\n")

    # THEN the log names the paths and never the keys
    log = capfd.readouterr().err
    assert '"POST /logs HTTP/1.1" 200' in log and '"GET /health HTTP/1.1" 200' in log
    assert "SECRET" not in log


def test_a_client_that_left_after_its_request_was_published_is_logged_as_such(
    start_server: StartServer,
    iot_handler: ModuleType,
    kinesis: Any,
    stream: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a handler that, once it has published, waits until the client has reset its connection
    client_gone = threading.Event()

    def publish_then_wait(event: dict[str, Any], context: Any) -> Any:
        response = iot_handler.lambda_handler(event, context)
        client_gone.wait(10)
        return response

    server = start_server(iot_handler=publish_then_wait)
    host, port = server.server_address[:2]
    with caplog.at_level(logging.WARNING, logger="edge_lambdas.local_server"):
        sock = socket.create_connection((str(host), port), timeout=10)
        sock.sendall(post_head(f"Content-Length: {len(BODY)}") + BODY)
        # WHEN the client gives up and resets the connection before the answer
        while not read_stream(kinesis, stream).envelopes:
            time.sleep(0.05)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        client_gone.set()
        deadline = time.monotonic() + 10
        while "client left" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)

    # THEN the log says the client left after its request was processed, not that the handler failed
    assert "client left before the 202 answer to POST /iot was sent" in caplog.text
    assert "handler failed" not in caplog.text
    assert len(read_stream(kinesis, stream).records()) == 1


def test_a_burst_of_connections_waits_in_the_listen_backlog(
    iot_handler: ModuleType, log_handler: ModuleType
) -> None:
    # GIVEN a server that listens but has not accepted anything yet (as when all its threads are
    # busy being started)
    server = create_server(0, quiet=True)
    host, port = server.server_address[:2]
    sockets: list[socket.socket] = []
    try:
        # WHEN 300 clients connect at once
        started = time.monotonic()
        for _ in range(300):
            sockets.append(socket.create_connection((str(host), port), timeout=5))
        # THEN every connect completes at once (past a backlog of 5, connects wait for SYN retries)
        assert time.monotonic() - started < 3
    finally:
        for sock in sockets:
            sock.close()
        server.server_close()


def test_fifty_parallel_clients_are_all_answered_and_published_once(
    server: LocalEdgeServer, kinesis: Any, stream: str
) -> None:
    # GIVEN 50 clients posting 4 readings each, all at once
    def client(i: int) -> list[tuple[int, float]]:
        results = []
        for n in range(4):
            body = orjson.dumps({**READING, "deviceId": f"d-{i}", "temp": n})
            started = time.monotonic()
            status = request(server, "POST", "/iot", body, {"Content-Type": "application/json"})[0]
            results.append((status, time.monotonic() - started))
        return results

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = [r for batch in pool.map(client, range(50)) for r in batch]

    # THEN every request is answered 202 and every reading is on the stream exactly once
    assert [status for status, _ in results] == [202] * 200
    assert len(read_stream(kinesis, stream).event_ids) == 200
    latencies = sorted(seconds for _, seconds in results)
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * len(latencies)) - 1]
    print(f"50 clients x 4 requests: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    assert p99 < 30  # generous: the queue is FIFO, so nobody waits for much more than everyone


def test_invocations_take_turns_in_arrival_order() -> None:
    # GIVEN a FIFO lock held by the test, and 20 threads queuing for it one after another
    lock, order = FifoLock(), []
    hold = threading.Event()

    def holder() -> None:
        with lock.turn():
            hold.wait(10)

    def waiter(n: int) -> None:
        with lock.turn():
            order.append(n)

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    while lock.waiting == 0 and not lock.held:
        time.sleep(0.001)
    for n in range(20):
        thread = threading.Thread(target=waiter, args=(n,))
        thread.start()
        threads.append(thread)
        while lock.waiting < n + 1:  # queued before the next one starts
            time.sleep(0.001)

    # WHEN the holder lets go
    hold.set()
    for thread in threads:
        thread.join(10)

    # THEN they ran in the order they arrived
    assert order == list(range(20))
