"""HTTP for the feed poller: request and response values, the ``Fetch`` type, the urllib transport.

In: an ``HttpRequest`` (URL, headers, timeout).
Out: an ``HttpResponse`` whatever its status (2xx, 3xx, 4xx, 5xx alike), with lower-case header
names and a body of at most the limit plus one byte, gzip inflated within the same bound.
Dead letters: none; no response at all (connection refused or reset, DNS failure, timeout, a URL
that is not http(s), invalid gzip) is a ``TransportError``, which the retries treat as retryable.
Why: the poller only ever talks to a ``Fetch``, so tests script HTTP and production uses
``urllib_fetch``; keeping the transport's safety rules (http(s) only, even across redirects; bounded
bodies, a gzip bomb included) in one place keeps them out of the polling logic.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sluice.core.errors import SluiceError
from sluice.core.inputs import gunzip_bounded
from sluice.parsing.feeds import MAX_DOCUMENT_BYTES

__all__ = ["Fetch", "HttpRequest", "HttpResponse", "TransportError", "urllib_fetch"]


class TransportError(SluiceError):
    """No HTTP response: connection refused or reset, DNS failure, timeout, unsupported URL."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One GET. ``timeout`` bounds connecting and each read, in seconds."""

    url: str
    headers: Mapping[str, str]
    timeout: float


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """Any HTTP response (2xx, 3xx, 4xx, 5xx alike). Header names are lower case."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str = ""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


Fetch = Callable[[HttpRequest], HttpResponse]
"""Performs one request; returns the response whatever its status; raises ``TransportError``."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    # The default handler also follows redirects to ftp://, which a feed has no business using.
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise urllib.error.HTTPError(
                newurl, code, f"redirect to {newurl!r} refused", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _build_opener() -> urllib.request.OpenerDirector:
    # Built by hand rather than with build_opener(): that one always adds file://, ftp:// and data:
    # handlers, and a next link taken from a response must never read a local file.
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),  # honours HTTPS_PROXY / NO_PROXY like every other client
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        _HttpOnlyRedirects(),
        urllib.request.HTTPDefaultErrorHandler(),  # non-2xx (304 too) -> HTTPError, read below
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


_OPENER = _build_opener()


def _read_body(stream: Any, encoding: str | None, limit: int) -> bytes:
    # One byte over the limit is enough for the feed parser to reject the document as too large,
    # without ever holding more than the limit in memory: on the wire and after inflating alike.
    raw: bytes = stream.read(limit + 1)
    if (encoding or "").strip().lower() != "gzip":
        return raw
    try:
        return gunzip_bounded(raw, limit + 1, truncate=True)  # a small gzip bomb stays small
    except ValueError as err:
        if len(raw) > limit:
            # The compressed body alone is over the limit, so the read above cut it and it cannot
            # inflate completely: too large (the parser says so), not a transport failure.
            return raw
        raise TransportError(f"invalid gzip body: {err}") from None


def urllib_fetch(request: HttpRequest, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> HttpResponse:
    """``Fetch`` over the standard library: http(s) only, gzip accepted, body bounded."""
    if urllib.parse.urlsplit(request.url).scheme not in ("http", "https"):
        raise TransportError(f"not an http(s) URL: {request.url!r}")
    headers = {"Accept-Encoding": "gzip", **request.headers}
    req = urllib.request.Request(request.url, headers=headers, method="GET")
    try:
        try:
            with _OPENER.open(req, timeout=request.timeout) as resp:
                return HttpResponse(
                    status=resp.status,
                    headers={k.lower(): v for k, v in resp.headers.items()},
                    body=_read_body(resp, resp.headers.get("Content-Encoding"), max_bytes),
                    url=resp.geturl(),
                )
        except urllib.error.HTTPError as err:  # any status outside 2xx, 304 included
            err_headers = {k.lower(): v for k, v in (err.headers or {}).items()}
            body = b""
            if err.fp is not None:  # an HTTPError made without a response has no body (or url)
                with err:
                    body = _read_body(err, err_headers.get("content-encoding"), max_bytes)
            return HttpResponse(err.code, err_headers, body, getattr(err, "url", "") or request.url)
    except (OSError, http.client.HTTPException) as err:  # URLError and timeouts are OSErrors
        reason = getattr(err, "reason", None) or err
        raise TransportError(f"{type(err).__name__}: {reason}") from err
