"""A local HTTP server that invokes the edge Lambdas the way AWS does, for demos and end-to-end tests.

In (HTTP/1.1 on loopback or any address):
- ``POST /iot``: any body and headers, as a device sends them. It becomes an API Gateway HTTP API
  (payload 2.0) event for ``edge_lambdas.iot_ingest.handler.lambda_handler``, whose response is
  returned as is: ``curl -X POST localhost:8080/iot -d @reading.json`` answers as in AWS.
- ``POST /logs[?group=...&stream=...]``: a body of access-log lines (plain, or ``Content-Encoding:
  gzip``). It becomes CloudWatch Logs subscription events (base64 gzip ``awslogs.data``, at most
  10,000 log events each, as a subscription would deliver them) for
  ``edge_lambdas.log_ingest.handler.lambda_handler``; the answer is 200 with the summed summaries.
- ``GET /health``: 200 once both handlers have loaded.
Out: the handlers' responses; a handler that raises gets 500 ``{"message": "Internal Server
Error"}``, as API Gateway gives.
Refused without an invocation (the connection is then closed): a ``Content-Length`` that is not a
decimal number, or several that differ (400); ``Transfer-Encoding`` with a ``Content-Length`` (400)
or without one (411: only bodies with a length are supported); a body over 10 MiB (413, as API
Gateway does), or a ``/logs`` body inflating past 64 MiB (413); an HTTP/0.9 request line (400).
A request whose line, headers and body have not all arrived within the read timeout (default
``DEFAULT_READ_TIMEOUT_SECONDS``, ``--read-timeout``; counted from the connection's opening or the
previous answer) is dropped: 408 when the client is still there, nothing published. A body that
ends before its ``Content-Length`` (an aborted upload) is dropped the same way, never processed.
Configuration: the handlers' ``SLUICE_*`` variables and ``AWS_ENDPOINT_URL`` (e.g. a moto server).

Concurrency: every connection has its own thread (reading requests, building events, writing
answers run in parallel), and invocations run one at a time in arrival order, as in one Lambda
execution environment. They cannot run in parallel in one process: Powertools keeps one metric set
per process (``Metrics._metrics`` is a class attribute, shared by both handlers), which each
invocation's ``log_metrics`` flushes and clears, and ``inject_lambda_context`` sets the request's
keys on a shared logger; a plain lock is not fair (under load a request could wait for ever), so
invocations queue in ``FifoLock``. The listen backlog is ``LISTEN_BACKLOG`` (the kernel may cap it at
``net.core.somaxconn``).
The access log (stderr, unless ``--quiet``) shows paths without their query strings, which may carry
keys.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socket import socket
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from edge_lambdas.shared.events import LocalContext, apigw_v2_event, cloudwatch_logs_event
from sluice.core.errors import ConfigError
from sluice.core.inputs import gunzip_bounded

__all__ = ["DEFAULT_READ_TIMEOUT_SECONDS", "FifoLock", "LocalEdgeServer", "create_server", "main"]

Handler = Callable[[dict[str, Any], Any], Any]

MAX_REQUEST_BYTES = 10 * 1024 * 1024
"""API Gateway's payload limit."""
MAX_LOG_BODY_BYTES = 64 * 1024 * 1024
"""Largest decompressed ``/logs`` body."""
LOG_EVENTS_PER_DELIVERY = 10_000
"""CloudWatch Logs delivers at most 10,000 log events per subscription invocation."""
DEFAULT_READ_TIMEOUT_SECONDS = 30.0
"""Time a client has to send each whole request (line, headers, body); also the write timeout."""
LISTEN_BACKLOG = 1024
"""Connections the kernel queues before the server accepts them."""

ROUTES = ("/iot", "/logs")
_MAX_DRAIN_BYTES = 64 * 1024 * 1024
_DRAIN_PAUSE_SECONDS = 1.0
_DIGITS = re.compile(r"[0-9]+")
_QUERY = re.compile(r"\?[^\s\"']*")
_log = logging.getLogger(__name__)


class FifoLock:
    """A lock granted in arrival order: each waiter gets the lock handed over by the one before it."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    @property
    def waiting(self) -> int:
        """Threads queued for their turn."""
        return len(self._waiters)

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._mutex:
            if self._held:
                waiter = threading.Lock()
                waiter.acquire()
                self._waiters.append(waiter)
            else:
                self._held, waiter = True, None
        if waiter is not None:
            waiter.acquire()  # released by the holder before us: the lock is ours, never contended
        try:
            yield
        finally:
            with self._mutex:
                if self._waiters:
                    self._waiters.popleft().release()
                else:
                    self._held = False


class LocalEdgeServer(ThreadingHTTPServer):
    """A threaded HTTP server holding the two handlers and the queue their invocations share."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        iot_handler: Handler,
        log_handler: Handler,
        quiet: bool,
        *,
        read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
    ) -> None:
        if not (math.isfinite(read_timeout) and read_timeout > 0):
            raise ConfigError(
                f"the read timeout must be a number of seconds > 0, got {read_timeout}"
            )
        super().__init__(address, _RequestHandler)
        self.iot_handler, self.log_handler, self.quiet = iot_handler, log_handler, quiet
        self.read_timeout = read_timeout
        self.invocations = FifoLock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _DeadlineReader(io.RawIOBase):
    """The connection's reads, each given only what is left of the current request's time."""

    def __init__(self, connection: socket) -> None:
        self._connection = connection
        self.deadline = math.inf
        self.received = 0

    def start(self, seconds: float) -> None:
        self.deadline, self.received = time.monotonic() + seconds, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("read timeout")
        self._connection.settimeout(left)
        count = self._connection.recv_into(buffer)
        self.received += count
        return count


@dataclass(slots=True)
class _Answer:
    status: int
    payload: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    invoked: bool = True
    """Whether a handler ran (and may have published) for it."""


def _json_answer(status: int, body: dict[str, Any], invoked: bool = False) -> _Answer:
    return _Answer(status, orjson.dumps(body), invoked=invoked)


class _RequestHandler(BaseHTTPRequestHandler):
    server: LocalEdgeServer
    protocol_version = "HTTP/1.1"
    # Error answers to a malformed request line get a status line (the default, HTTP/0.9, has none).
    default_request_version = "HTTP/1.0"
    raw_requestline: bytes
    _reader: _DeadlineReader

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by one whose reads keep to the request's deadline
        self._reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader, 64 * 1024)

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            # Paths only: query strings may carry API keys.
            super().log_message("%s", _QUERY.sub("", format % args))

    def handle_one_request(self) -> None:
        self._reader.start(self.server.read_timeout)
        try:
            super().handle_one_request()
        except ConnectionError:  # reset or broken pipe: the client is gone, nothing to answer
            self.close_connection = True

    def log_error(self, format: str, *args: Any) -> None:
        if format.startswith("Request timed out") and not self._reader.received:
            return  # an idle keep-alive connection closed: not an error
        if format.startswith("Request timed out"):
            _log.warning(
                "dropped a request whose line or headers did not arrive within %gs",
                self.server.read_timeout,
            )
            return
        self.log_message(format, *args)

    def parse_request(self) -> bool:
        if len(self.raw_requestline.split()) == 2:
            # HTTP/0.9 ("GET /path", no version, no headers): the standard library would wait for
            # headers that never come. Refuse it at once, with an HTTP/1.0 status line.
            self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
            self.command, self.request_version = None, self.default_request_version  # type: ignore[assignment]
            self.close_connection = True
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not supported")
            return False
        return super().parse_request()

    def handle_expect_100(self) -> bool:
        # Refuse a body we would refuse anyway before the client sends it.
        if self.command == "POST" and urlsplit(self.path).path in ROUTES:
            _, refusal = self._body_length()
            if refusal is not None:
                self._send_closing(refusal)
                return False
        return super().handle_expect_100()

    def do_GET(self) -> None:
        has_body = self.headers.get("content-length", "0").strip() != "0"
        if has_body or "transfer-encoding" in self.headers:
            self.close_connection = True  # a body left unread would be taken for the next request
        route = urlsplit(self.path).path
        if route == "/health":
            self._send(_json_answer(HTTPStatus.OK, {"status": "ok"}))
        elif route in ROUTES:
            answer = _json_answer(HTTPStatus.METHOD_NOT_ALLOWED, {"message": "use POST"})
            answer.headers["allow"] = "POST"
            self._send(answer)
        else:
            self._send(_json_answer(HTTPStatus.NOT_FOUND, {"message": "Not Found"}))

    def do_POST(self) -> None:
        route = urlsplit(self.path).path
        if route not in ROUTES:
            self._send_closing(_json_answer(HTTPStatus.NOT_FOUND, {"message": "Not Found"}))
            return
        body = self._read_body()
        if body is None:
            return
        try:
            answer = self._invoke_iot(body) if route == "/iot" else self._invoke_logs(body)
        except Exception:  # noqa: BLE001 - a failed invocation: API Gateway answers 500, so do we
            _log.exception("handler failed for POST %s", route)
            answer = _json_answer(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"message": "Internal Server Error"}
            )
        if not self._send(answer) and answer.invoked:
            _log.warning(
                "client left before the %d answer to POST %s was sent; the request was processed",
                answer.status,
                route,
            )

    def _body_length(self) -> tuple[int, _Answer | None]:
        """The declared body length (0 without one) and, when the request is refused, the answer."""
        lengths = self.headers.get_all("content-length")
        if self.headers.get("transfer-encoding") is not None:
            # Both at once is how requests are smuggled past proxies; chunked alone is unsupported.
            if lengths:
                return 0, _json_answer(
                    HTTPStatus.BAD_REQUEST,
                    {"message": "Transfer-Encoding and Content-Length together"},
                )
            return 0, _json_answer(
                HTTPStatus.LENGTH_REQUIRED,
                {"message": "Transfer-Encoding is not supported: send a Content-Length"},
            )
        if not lengths:
            return 0, None
        values = {value.strip() for line in lengths for value in line.split(",")}
        if len(values) > 1:
            return 0, _json_answer(
                HTTPStatus.BAD_REQUEST, {"message": "conflicting Content-Length"}
            )
        (value,) = values
        if not _DIGITS.fullmatch(value):  # "-1", "+5", "0x10", "", non-ASCII digits
            return 0, _json_answer(HTTPStatus.BAD_REQUEST, {"message": "invalid Content-Length"})
        size = int(value) if len(value) <= 18 else _MAX_DRAIN_BYTES + 1
        if size > MAX_REQUEST_BYTES:
            too_large = {"message": "Request Entity Too Large"}
            return size, _json_answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, too_large)
        return size, None

    def _read_body(self) -> bytes | None:
        """The whole body, or ``None`` once the request has been refused or dropped."""
        size, refusal = self._body_length()
        if refusal is not None:
            self._send_closing(refusal)
            if refusal.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
                self._drain(size)
            return None
        body = bytearray()
        try:
            while len(body) < size:
                chunk = self.rfile.read1(min(size - len(body), 1 << 16))
                if not chunk:
                    break
                body += chunk
        except TimeoutError:
            self._drop_incomplete(len(body), size, timed_out=True)
            return None
        if len(body) < size:
            self._drop_incomplete(len(body), size, timed_out=False)
            return None
        return bytes(body)

    def _drop_incomplete(self, received: int, size: int, *, timed_out: bool) -> None:
        why = f"within {self.server.read_timeout:g}s" if timed_out else "before the client closed"
        _log.warning(
            "dropped an incomplete request to %s: %d of %d body bytes %s; nothing was published",
            urlsplit(self.path).path, received, size, why,
        )  # fmt: skip
        if timed_out:
            self._send_closing(
                _json_answer(HTTPStatus.REQUEST_TIMEOUT, {"message": "Request Timeout"})
            )
        self.close_connection = True

    def _drain(self, size: int) -> None:
        """Read (and drop) a moderately oversized body so that the client, still sending, gets the
        answer rather than a reset; beyond that, past the deadline or once the client pauses for
        ``_DRAIN_PAUSE_SECONDS``, just close."""
        left, deadline = (size if size <= _MAX_DRAIN_BYTES else 0), self._reader.deadline
        try:
            while left > 0:
                self._reader.deadline = min(deadline, time.monotonic() + _DRAIN_PAUSE_SECONDS)
                chunk = self.rfile.read1(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        except (TimeoutError, ConnectionError):
            pass

    def _invoke_iot(self, body: bytes) -> _Answer:
        target = urlsplit(self.path)
        event = apigw_v2_event(
            "POST",
            target.path,
            body,
            _combined_headers(self.headers.items()),
            source_ip=self.client_address[0],
            query=target.query,
        )
        with self.server.invocations.turn():
            response = self.server.iot_handler(event, LocalContext(function_name="iot_ingest"))
        headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
        raw = response.get("body") or ""
        payload = raw.encode() if isinstance(raw, str) else bytes(raw)
        return _Answer(int(response.get("statusCode", 200)), payload, headers)

    def _invoke_logs(self, body: bytes) -> _Answer:
        if self.headers.get("content-encoding", "").lower() in ("gzip", "x-gzip"):
            try:
                body = gunzip_bounded(body, MAX_LOG_BODY_BYTES)
            except OverflowError as err:  # a gzip bomb: too large, as on /iot
                return _json_answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"message": str(err)})
            except ValueError as err:
                return _json_answer(HTTPStatus.BAD_REQUEST, {"message": str(err)})
        query = parse_qs(urlsplit(self.path).query)
        group = query.get("group", ["/local/nginx/access"])[0]
        stream = query.get("stream", ["local"])[0]
        # CloudWatch Logs only carries UTF-8 text; undecodable bytes arrive replaced there too.
        messages = [
            line.rstrip("\r")
            for line in body.decode("utf-8", "replace").split("\n")
            if line.strip()
        ]
        totals: dict[str, Any] = {}
        for start in range(0, max(len(messages), 1), LOG_EVENTS_PER_DELIVERY):
            event = cloudwatch_logs_event(
                messages[start : start + LOG_EVENTS_PER_DELIVERY],
                log_group=group,
                log_stream=stream,
            )
            with self.server.invocations.turn():
                summary = self.server.log_handler(event, LocalContext(function_name="log_ingest"))
            _add_summary(totals, summary)
        return _json_answer(HTTPStatus.OK, totals, invoked=True)

    def _send_closing(self, answer: _Answer) -> None:
        self.close_connection = True
        self._send(answer)

    def _send(self, answer: _Answer) -> bool:
        """Write the answer; ``False`` when the client is no longer there to read it."""
        self.connection.settimeout(self.server.read_timeout)
        try:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(answer.payload)))
            if self.close_connection:
                self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(answer.payload)
        except OSError:  # reset, broken pipe, or a client not reading for the whole timeout
            self.close_connection = True
            return False
        return True


def _combined_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Repeated headers joined with commas, as API Gateway's payload 2.0 does."""
    headers: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return headers


def _add_summary(totals: dict[str, Any], summary: dict[str, Any]) -> None:
    for key, value in summary.items():
        if isinstance(value, dict):
            inner = totals.setdefault(key, {})
            for name, count in value.items():
                inner[name] = inner.get(name, 0) + count
        elif isinstance(value, int | float):
            totals[key] = totals.get(key, 0) + value


def _load_handlers() -> tuple[Handler, Handler]:
    # Imported here, not at module level: importing a handler reads and validates its settings,
    # which must come from the environment the caller has prepared.
    from edge_lambdas.iot_ingest.handler import lambda_handler as iot_handler
    from edge_lambdas.log_ingest.handler import lambda_handler as log_handler

    return iot_handler, log_handler


def create_server(
    port: int,
    host: str = "127.0.0.1",
    *,
    iot_handler: Handler | None = None,
    log_handler: Handler | None = None,
    quiet: bool = False,
    read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
) -> LocalEdgeServer:
    """A bound, not yet serving, server (port 0 picks a free port: see ``server.url``).

    The handlers default to the real Lambda entry points; a ``ConfigError`` says which setting is
    missing or invalid.
    """
    if iot_handler is None or log_handler is None:
        default_iot, default_log = _load_handlers()
        iot_handler, log_handler = iot_handler or default_iot, log_handler or default_log
    return LocalEdgeServer((host, port), iot_handler, log_handler, quiet, read_timeout=read_timeout)


def serve(
    port: int,
    host: str = "127.0.0.1",
    *,
    iot_handler: Handler | None = None,
    log_handler: Handler | None = None,
    quiet: bool = False,
    read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
) -> None:
    """Run the server until interrupted."""
    server = create_server(
        port,
        host,
        iot_handler=iot_handler,
        log_handler=log_handler,
        quiet=quiet,
        read_timeout=read_timeout,
    )
    print(f"Sluice edges on {server.url}: POST /iot, POST /logs, GET /health", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: Sequence[str] | None = None) -> int:
    """``sluice edge serve``: options set the matching ``SLUICE_*`` variables for this process."""
    parser = argparse.ArgumentParser(
        prog="sluice edge serve",
        description="Serve the IoT and log edge Lambdas over local HTTP (POST /iot, POST /logs).",
    )
    parser.add_argument("--port", type=int, default=8080, help="TCP port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--stream", help="Kinesis stream (SLUICE_STREAM_NAME)")
    parser.add_argument("--dead-letter-bucket", help="S3 bucket (SLUICE_DEAD_LETTER_BUCKET)")
    parser.add_argument("--dead-letter-queue-url", help="SQS URL (SLUICE_DEAD_LETTER_QUEUE_URL)")
    parser.add_argument("--log-format", help="nginx log_format or 'auto' (SLUICE_LOG_FORMAT)")
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=DEFAULT_READ_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="time a client has to send each whole request, and to read its answer; slower "
        f"requests are dropped unprocessed (default {DEFAULT_READ_TIMEOUT_SECONDS:g})",
    )
    parser.add_argument("--quiet", action="store_true", help="no access log on stderr")
    args = parser.parse_args(argv)
    for option, variable in (
        ("stream", "SLUICE_STREAM_NAME"),
        ("dead_letter_bucket", "SLUICE_DEAD_LETTER_BUCKET"),
        ("dead_letter_queue_url", "SLUICE_DEAD_LETTER_QUEUE_URL"),
        ("log_format", "SLUICE_LOG_FORMAT"),
    ):
        if getattr(args, option) is not None:
            os.environ[variable] = getattr(args, option)
    # Lambda always has a region; a laptop may not, and boto3 refuses to build clients without one.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    try:
        serve(args.port, args.host, quiet=args.quiet, read_timeout=args.read_timeout)
    except ConfigError as err:
        print(f"sluice edge serve: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(
            f"sluice edge serve: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
