"""A local HTTP server that invokes the edge Lambdas the way AWS does, for demos and end-to-end tests.

In (HTTP):
- ``POST /iot``: any body and headers, as a device sends them. It becomes an API Gateway HTTP API
  (payload 2.0) event for ``edge_lambdas.iot_ingest.handler.lambda_handler``, whose response is
  returned as is: ``curl -X POST localhost:8080/iot -d @reading.json`` answers as in AWS.
- ``POST /logs[?group=...&stream=...]``: a body of access-log lines (plain, or ``Content-Encoding:
  gzip``). It becomes CloudWatch Logs subscription events (base64 gzip ``awslogs.data``, at most
  10,000 log events each, as a subscription would deliver them) for
  ``edge_lambdas.log_ingest.handler.lambda_handler``; the answer is 200 with the summed summaries.
- ``GET /health``: 200 once both handlers have loaded.
Out: the handlers' responses. Requests over 10 MiB get 413 without an invocation, as API Gateway
does; a handler that raises gets 500 ``{"message": "Internal Server Error"}``, as API Gateway gives.
Configuration: the handlers' ``SLUICE_*`` variables and ``AWS_ENDPOINT_URL`` (e.g. a moto server).
Invocations run one at a time per handler, as in one Lambda execution environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from edge_lambdas.shared.events import LocalContext, apigw_v2_event, cloudwatch_logs_event
from sluice.core.errors import ConfigError
from sluice.core.inputs import gunzip_bounded

__all__ = ["LocalEdgeServer", "create_server", "main"]

Handler = Callable[[dict[str, Any], Any], Any]

MAX_REQUEST_BYTES = 10 * 1024 * 1024
"""API Gateway's payload limit."""
MAX_LOG_BODY_BYTES = 64 * 1024 * 1024
"""Largest decompressed ``/logs`` body."""
LOG_EVENTS_PER_DELIVERY = 10_000
"""CloudWatch Logs delivers at most 10,000 log events per subscription invocation."""

_MAX_DRAIN_BYTES = 64 * 1024 * 1024
_log = logging.getLogger(__name__)


class LocalEdgeServer(ThreadingHTTPServer):
    """A threaded HTTP server holding the two handlers and one lock per handler."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], iot_handler: Handler, log_handler: Handler, quiet: bool
    ) -> None:
        super().__init__(address, _RequestHandler)
        self.iot_handler, self.log_handler, self.quiet = iot_handler, log_handler, quiet
        self.iot_lock, self.log_lock = threading.Lock(), threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _RequestHandler(BaseHTTPRequestHandler):
    server: LocalEdgeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/health":
            self._send(HTTPStatus.OK, {"status": "ok"})
        elif urlsplit(self.path).path in ("/iot", "/logs"):
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"message": "use POST"}, {"allow": "POST"})
        else:
            self._send(HTTPStatus.NOT_FOUND, {"message": "Not Found"})

    def do_POST(self) -> None:
        route = urlsplit(self.path).path
        if route not in ("/iot", "/logs"):
            self._send(HTTPStatus.NOT_FOUND, {"message": "Not Found"})
            return
        body = self._read_body()
        if body is None:
            return
        try:
            if route == "/iot":
                self._invoke_iot(body)
            else:
                self._invoke_logs(body)
        except Exception:  # noqa: BLE001 - a failed invocation: API Gateway answers 500, so do we
            _log.exception("handler failed for %s", route)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"message": "Internal Server Error"})

    def _read_body(self) -> bytes | None:
        length = self.headers.get("content-length")
        if length is None:
            if self.headers.get("transfer-encoding"):
                self._send(HTTPStatus.LENGTH_REQUIRED, {"message": "Content-Length required"})
                return None
            return b""
        try:
            size = int(length)
        except ValueError:
            self._send(HTTPStatus.BAD_REQUEST, {"message": "invalid Content-Length"})
            return None
        if size > MAX_REQUEST_BYTES:
            # Read (and drop) a moderately oversized body so that the client, still sending, gets
            # the answer rather than a broken pipe; beyond that, just close the connection.
            left = min(size, _MAX_DRAIN_BYTES)
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
            self.close_connection = True
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"message": "Request Entity Too Large"})
            return None
        return self.rfile.read(size)

    def _invoke_iot(self, body: bytes) -> None:
        target = urlsplit(self.path)
        event = apigw_v2_event(
            "POST",
            target.path,
            body,
            _combined_headers(self.headers.items()),
            source_ip=self.client_address[0],
            query=target.query,
        )
        with self.server.iot_lock:
            response = self.server.iot_handler(event, LocalContext(function_name="iot_ingest"))
        headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
        raw = response.get("body") or ""
        payload = raw.encode() if isinstance(raw, str) else bytes(raw)
        self._send_raw(int(response.get("statusCode", 200)), payload, headers)

    def _invoke_logs(self, body: bytes) -> None:
        if self.headers.get("content-encoding", "").lower() in ("gzip", "x-gzip"):
            try:
                body = gunzip_bounded(body, MAX_LOG_BODY_BYTES)
            except (ValueError, OverflowError) as err:
                self._send(HTTPStatus.BAD_REQUEST, {"message": str(err)})
                return
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
            with self.server.log_lock:
                summary = self.server.log_handler(event, LocalContext(function_name="log_ingest"))
            _add_summary(totals, summary)
        self._send(HTTPStatus.OK, totals)

    def _send(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self._send_raw(
            status, orjson.dumps(body), {"content-type": "application/json", **(headers or {})}
        )

    def _send_raw(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


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
) -> LocalEdgeServer:
    """A bound, not yet serving, server (port 0 picks a free port: see ``server.url``).

    The handlers default to the real Lambda entry points; a ``ConfigError`` says which setting is
    missing or invalid.
    """
    if iot_handler is None or log_handler is None:
        default_iot, default_log = _load_handlers()
        iot_handler, log_handler = iot_handler or default_iot, log_handler or default_log
    return LocalEdgeServer((host, port), iot_handler, log_handler, quiet)


def serve(
    port: int,
    host: str = "127.0.0.1",
    *,
    iot_handler: Handler | None = None,
    log_handler: Handler | None = None,
    quiet: bool = False,
) -> None:
    """Run the server until interrupted."""
    server = create_server(
        port, host, iot_handler=iot_handler, log_handler=log_handler, quiet=quiet
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
        serve(args.port, args.host, quiet=args.quiet)
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
