"""A fault-injecting HTTP proxy between boto3 and the moto server, for failures on the real wire.

In: requests from any boto3 client whose ``AWS_ENDPOINT_URL`` is the proxy's URL.
Out: moto's responses, unless a fault is armed for Kinesis PutRecords:
- ``throttle``: the whole call fails with HTTP 400 and Kinesis' JSON error body
  (``{"__type": "ProvisionedThroughputExceededException", "message": ...}``);
- ``fail_entries``: chosen entries fail. Only the others are forwarded to moto, and the answer is
  moto's real response with the failed entries spliced in at their positions (``ErrorCode``,
  ``ErrorMessage``) and ``FailedRecordCount`` set, as Kinesis reports partial failures;
- ``server_error``: the whole call fails with HTTP 500 ``InternalFailure``;
- ``delay``: the call is forwarded (so the records land) and the answer held back past the client's
  read timeout, so the client retries records the stream already has.
And, for any S3 request (no ``X-Amz-Target`` header), ``fail_s3``: HTTP 503 with S3's ``SlowDown``
XML error, so a dead-letter destination in S3 is unavailable too.
Every PutRecords call is recorded (partition keys and data of its entries) for assertions.
"""

from __future__ import annotations

import base64
import http.client
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import orjson

PUT_RECORDS_TARGET = "Kinesis_20131202.PutRecords"
_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive", "expect", "host"}

EntrySelector = Callable[[int, dict[str, Any]], bool]
"""(position in the call, request entry) -> whether this entry fails."""


@dataclass
class Fault:
    kind: str  # throttle | fail_entries | server_error | delay
    times: int | None  # None: every matching call
    select: EntrySelector | None = None
    code: str = "ProvisionedThroughputExceededException"
    delay_seconds: float = 0.0


@dataclass
class PutRecordsCall:
    """One PutRecords request as the proxy saw it, and what it did with it."""

    entries: list[dict[str, Any]]
    fault: str | None
    failed_positions: list[int] = field(default_factory=list)

    @property
    def data(self) -> list[bytes]:
        return [base64.b64decode(entry["Data"]) for entry in self.entries]


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self._faults: list[Fault] = []
        self._s3_failures: int | None = 0  # None: every S3 request fails
        self._lock = threading.Lock()
        self.calls: list[PutRecordsCall] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # Arming faults -------------------------------------------------------------------------------

    def throttle(self, times: int | None = 1) -> None:
        self._arm(Fault("throttle", times))

    def server_error(self, times: int | None = 1) -> None:
        self._arm(Fault("server_error", times, code="InternalFailure"))

    def fail_entries(
        self,
        select: EntrySelector,
        *,
        times: int | None = 1,
        code: str = "ProvisionedThroughputExceededException",
    ) -> None:
        self._arm(Fault("fail_entries", times, select=select, code=code))

    def delay(self, seconds: float, times: int | None = 1) -> None:
        self._arm(Fault("delay", times, delay_seconds=seconds))

    def fail_s3(self, times: int | None = 1) -> None:
        """The next ``times`` S3 requests (None: all, until ``clear``) fail with 503 SlowDown."""
        with self._lock:
            self._s3_failures = times

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._s3_failures = 0

    def take_s3_failure(self) -> bool:
        with self._lock:
            if self._s3_failures is None:
                return True
            if self._s3_failures > 0:
                self._s3_failures -= 1
                return True
            return False

    def _arm(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.pop(0)
            return fault

    # Forwarding ----------------------------------------------------------------------------------

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            forwarded = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            forwarded["Content-Length"] = str(len(body))
            connection.request(method, path, body=body, headers=forwarded)
            response = connection.getresponse()
            payload = response.read()
            return response.status, response.getheaders(), payload
        finally:
            connection.close()

    def handle_put_records(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        request = orjson.loads(body)
        entries: list[dict[str, Any]] = request.get("Records", [])
        fault = self._take_fault()
        call = PutRecordsCall(entries=entries, fault=fault.kind if fault else None)
        with self._lock:
            self.calls.append(call)
        if fault is None:
            return self.forward(method, path, headers, body)
        if fault.kind == "throttle":
            return _error(400, "ProvisionedThroughputExceededException",
                          f"Rate exceeded for shard shardId-000000000000 in stream "
                          f"{request.get('StreamName')} under account 123456789012.")  # fmt: skip
        if fault.kind == "server_error":
            return _error(500, "InternalFailure", "Internal service failure.")
        if fault.kind == "delay":
            status, response_headers, payload = self.forward(method, path, headers, body)
            time.sleep(fault.delay_seconds)
            return status, response_headers, payload
        assert fault.select is not None
        failed = [i for i, entry in enumerate(entries) if fault.select(i, entry)]
        call.failed_positions = failed
        kept = [entry for i, entry in enumerate(entries) if i not in set(failed)]
        upstream_results: list[dict[str, Any]] = []
        response_headers = [("Content-Type", "application/x-amz-json-1.1")]
        if kept:
            status, response_headers, payload = self.forward(
                method, path, headers, orjson.dumps({**request, "Records": kept})
            )
            if status != 200:
                return status, response_headers, payload
            upstream_results = orjson.loads(payload)["Records"]
        results = iter(upstream_results)
        spliced = [
            {"ErrorCode": fault.code, "ErrorMessage": _entry_message(fault.code)}
            if i in set(failed)
            else next(results)
            for i in range(len(entries))
        ]
        body_out = orjson.dumps({"FailedRecordCount": len(failed), "Records": spliced})
        return 200, response_headers, body_out


def _entry_message(code: str) -> str:
    if code == "ProvisionedThroughputExceededException":
        return "Rate exceeded for shard shardId-000000000001 in stream under account 123456789012."
    return "Internal service failure."


def _error(status: int, code: str, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [
        ("Content-Type", "application/x-amz-json-1.1"),
        ("x-amzn-RequestId", str(uuid.uuid4())),
    ]
    return status, headers, orjson.dumps({"__type": code, "message": message})


_S3_SLOW_DOWN = (
    503,
    [("Content-Type", "application/xml")],
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>",
)


def _make_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items()}
            target = self.headers.get("X-Amz-Target")
            if target is None and proxy.take_s3_failure():
                status, response_headers, payload = _S3_SLOW_DOWN
            elif target == PUT_RECORDS_TARGET:
                status, response_headers, payload = proxy.handle_put_records(
                    self.command, self.path, headers, body
                )
            else:
                status, response_headers, payload = proxy.forward(
                    self.command, self.path, headers, body
                )
            try:
                self.send_response(status)
                for name, value in response_headers:
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up waiting (the delay fault)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

    return Handler
