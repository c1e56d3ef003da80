"""A real local HTTP server serving generated feed responses, for the feed poller's functional tests.

Routes are plain callables from a request to a reply: a ``Document`` (one JSON document with ETag and
Last-Modified, answering 304 to a matching conditional GET, like the USGS feeds) and three paginated
APIs generated from the same measurement items: ``PageApi`` (OpenAQ-style ``page``/``limit`` with
``meta.found``), ``CursorApi`` (``meta.next_cursor``) and ``NextLinkApi`` (relative ``links.next``).
Faults are queued per path and served to the next requests in order: an error status (with headers
such as ``Retry-After``), a body that is not JSON, or a delay (with no status: the normal reply,
late, so a client with a shorter timeout gives up first). Every request is logged with the status
it got, for assertions.
"""

from __future__ import annotations

import email.utils
import hashlib
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from sluice.parsing.feeds import FeedSpec, PaginationSpec

START = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@dataclass
class SeenRequest:
    """A request as the server saw it; logged on arrival, ``status`` filled in once answered."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    at: float  # time.monotonic() when it arrived
    status: int | None = None  # None: not answered yet; 0: the client had gone


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    """What the next request to a path gets instead of its normal reply."""

    status: int | None = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @classmethod
    def error(cls, status: int, **headers: str) -> Fault:
        return cls(status=status, body=b'{"error": "injected"}', headers=headers)

    @classmethod
    def rate_limited(cls, retry_after: str) -> Fault:
        return cls(status=429, body=b'{"error": "slow down"}', headers={"Retry-After": retry_after})

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        return cls(delay=seconds)

    @classmethod
    def not_json(cls) -> Fault:
        return cls(status=200, body=b'{"results": [ <html>oops')


Route = Callable[[SeenRequest], Reply]


def json_reply(document: Any, **headers: str) -> Reply:
    return Reply(200, orjson.dumps(document), {"Content-Type": "application/json", **headers})


class Document:
    """One JSON document with validators; ``update`` changes it (new ETag and Last-Modified).

    ``validators`` chooses what the server sends: both (like USGS), only an ETag, or only a date.
    """

    def __init__(
        self,
        body: bytes,
        modified: datetime = START,
        *,
        validators: tuple[str, ...] = ("etag", "last_modified"),
    ) -> None:
        self.validators = validators
        self.update(body, modified)

    def update(self, body: bytes, modified: datetime | None = None) -> None:
        self.body = body
        self.modified = (modified or datetime.now(UTC)).replace(microsecond=0)
        self.etag = f'"{hashlib.blake2b(body, digest_size=8).hexdigest()}"'

    def __call__(self, request: SeenRequest) -> Reply:
        validators = {}
        if "etag" in self.validators:
            validators["ETag"] = self.etag
        if "last_modified" in self.validators:
            validators["Last-Modified"] = email.utils.format_datetime(self.modified, usegmt=True)
        if_none_match = request.headers.get("if-none-match")
        if (
            if_none_match is not None and "etag" in self.validators
        ):  # RFC 9110: If-Modified-Since is ignored when this is sent
            tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
            if self.etag in tags or "*" in tags:
                return Reply(304, b"", validators)
        elif (
            since := request.headers.get("if-modified-since")
        ) and "last_modified" in self.validators:
            try:
                if self.modified <= email.utils.parsedate_to_datetime(since):
                    return Reply(304, b"", validators)
            except (TypeError, ValueError):
                pass  # an unusable date is ignored, as servers do
        return Reply(200, self.body, {"Content-Type": "application/json", **validators})


def measurements(count: int, *, seed: int = 5, start: datetime = START) -> list[dict[str, Any]]:
    """OpenAQ-style air-quality measurements, one dict per item."""
    rng = random.Random(seed)
    return [
        {
            "id": f"m{seed:02d}-{i:05d}",
            "location": f"Station {i % 7}",
            "parameter": "pm25",
            "value": round(rng.uniform(1, 80), 1),
            "unit": "µg/m³",
            "date": {"utc": (start + timedelta(minutes=i)).isoformat()},
            "coordinates": {
                "latitude": round(rng.uniform(-60, 70), 4),
                "longitude": round(rng.uniform(-180, 180), 4),
            },
        }
        for i in range(count)
    ]


def measurement_spec(
    name: str,
    url: str,
    pagination: PaginationSpec,
    *,
    items_path: str,
    timeout_seconds: float = 2.0,
    max_retries: int = 3,
) -> FeedSpec:
    return FeedSpec(
        name=name,
        url=url,
        items_path=items_path,
        id_field="id",
        time_field="date.utc",
        lat_field="coordinates.latitude",
        lon_field="coordinates.longitude",
        fields={"parameter": "parameter", "value": "value", "unit": "unit"},
        pagination=pagination,
        timeout_seconds=timeout_seconds,
        max_retries=max_retries,
    )


class _PagedApi:
    def __init__(self, items: Sequence[dict[str, Any]], *, corrupt_pages: Iterable[int] = ()):
        self.items = list(items)
        self.corrupt_pages = set(corrupt_pages)  # 1-based page numbers answered with broken JSON

    def _page(self, number: int, document: Any) -> Reply:
        if number in self.corrupt_pages:
            return Reply(200, b'{"results": [{"id": "m", <truncated', {})
        return json_reply(document)


class PageApi(_PagedApi):
    """``?page=N&limit=L`` -> ``{"meta": {"found": total, ...}, "results": [...]}``."""

    def __init__(self, items: Sequence[dict[str, Any]], *, report_found: bool = True, **kw: Any):
        super().__init__(items, **kw)
        self.report_found = report_found

    def __call__(self, request: SeenRequest) -> Reply:
        page, limit = int(request.query.get("page", "1")), int(request.query.get("limit", "100"))
        meta: dict[str, Any] = {"page": page, "limit": limit}
        if self.report_found:
            meta["found"] = len(self.items)
        results = self.items[(page - 1) * limit : page * limit]
        return self._page(page, {"meta": meta, "results": results})


class CursorApi(_PagedApi):
    """``?cursor=C`` -> ``{"data": [...], "meta": {"next_cursor": C' or null}}``; fixed page size."""

    def __init__(self, items: Sequence[dict[str, Any]], *, page_size: int = 10, **kw: Any):
        super().__init__(items, **kw)
        self.page_size = page_size

    def __call__(self, request: SeenRequest) -> Reply:
        offset = int(request.query.get("cursor", "c0").removeprefix("c"))
        end = offset + self.page_size
        cursor = f"c{end}" if end < len(self.items) else None
        number = offset // self.page_size + 1
        return self._page(number, {"data": self.items[offset:end], "meta": {"next_cursor": cursor}})


class NextLinkApi(_PagedApi):
    """``?offset=N`` -> ``{"items": [...], "links": {"next": "/path?offset=N'" or absent}}``."""

    def __init__(
        self, items: Sequence[dict[str, Any]], path: str, *, page_size: int = 10, **kw: Any
    ):
        super().__init__(items, **kw)
        self.path, self.page_size = path, page_size

    def __call__(self, request: SeenRequest) -> Reply:
        offset = int(request.query.get("offset", "0"))
        end = offset + self.page_size
        links = {"next": f"{self.path}?offset={end}"} if end < len(self.items) else {}
        number = offset // self.page_size + 1
        return self._page(number, {"items": self.items[offset:end], "links": links})


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.feed_server.handle(self)

    def log_message(self, format: str, *args: Any) -> None:  # one line per request otherwise
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    feed_server: FeedServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and left is an expected event here, not a traceback


class FeedServer:
    """A threaded HTTP server on 127.0.0.1 and a free port; ``stop()`` shuts it down."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.faults: dict[str, deque[Fault]] = {}
        self.requests: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.feed_server = self
        # A short poll interval: shutdown() waits up to one interval, in every test's teardown.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self) -> FeedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def route(self, path: str, handler: Route) -> str:
        self.routes[path] = handler
        return self.url(path)

    def inject(self, path: str, *faults: Fault) -> None:
        with self._lock:
            self.faults.setdefault(path, deque()).extend(faults)

    def requests_to(self, path: str) -> list[SeenRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def handle(self, handler: _Handler) -> None:
        parts = urlsplit(handler.path)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        seen = SeenRequest(parts.path, dict(parse_qsl(parts.query)), headers, time.monotonic())
        with self._lock:
            self.requests.append(seen)
            queue = self.faults.get(parts.path)
            fault = queue.popleft() if queue else None
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and (fault.status is not None or fault.body is not None):
            reply = Reply(fault.status or 200, fault.body or b"", fault.headers)
        elif (route := self.routes.get(parts.path)) is not None:
            reply = route(seen)
        else:
            reply = Reply(404, b'{"error": "no such route"}')
        # Recorded before the answer leaves: the client may look at it as soon as it has the answer.
        seen.status = reply.status
        seen.status = self._send(handler, reply)

    @staticmethod
    def _send(handler: _Handler, reply: Reply) -> int:
        try:
            handler.send_response(reply.status)
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            if reply.status != 304:
                handler.send_header("Content-Length", str(len(reply.body)))
            handler.end_headers()
            if reply.status != 304:
                handler.wfile.write(reply.body)
            return reply.status
        except (BrokenPipeError, ConnectionResetError):
            return 0
