"""Polling JSON APIs: conditional GETs, page walking, retries, de-duplication and checkpoints.

In: ``FeedSpec`` values (``sluice.parsing.feeds``), an HTTP ``Fetch`` function (``urllib_fetch`` is
the standard-library one; tests inject others), a ``CheckpointStore`` and an ``Emit`` callable.
Out: per feed, the ``Envelope``s of items not emitted before (``wrap_feed_item``) and of dead letters
(``wrap_dead_letter``, so they travel the same stream), handed to ``emit`` in one call, and a
``FeedPollSummary`` (pages fetched, new items, duplicates skipped, not modified, errors).
Dead letters (stage ``edge.feed``): a page that is not JSON or has no item list (one per page), an item
without id or time, with an unusable time, or otherwise refused by the contract. A feed that cannot be
fetched (retry budget spent, a 4xx other than 429, a redirect loop) is *not* a dead letter, since there
is no input to keep: it is an error in the summary, which the adapter logs and counts; the next
scheduled poll tries again.

One poll of one feed (``FeedPoller.poll``):

1. Take the feed's lease: a conditional write that succeeds only when no unexpired lease exists; it
   returns the checkpoint (validators, the bounded set of seen (item id, updated time) pairs, version).
2. GET the first page with ``If-None-Match`` / ``If-Modified-Since`` from the checkpoint. A 304 ends
   the poll: nothing is parsed or emitted, the lease is released (one GET and two small writes).
3. Walk the pages (``page``/``limit`` until a short page or ``meta.found``; ``cursor``; ``next_link``),
   at most ``max_pages``, each request retried with exponential backoff and full jitter
   (``sluice.core.retry``) on connection errors, timeouts, 429 (honouring ``Retry-After``) and 5xx,
   never on other 4xx.
4. Parse each page (``parse_feed_document``) and keep the items whose (item id, updated time) is not in
   the checkpoint and not already seen in this poll; dead letters are de-duplicated by their id too.
5. Emit all envelopes of the poll in one ``emit`` call.
6. Write the checkpoint conditionally on (lease owner, version); the same write releases the lease.
   New validators are stored only when the walk was complete, so a 304 can never hide a page that was
   not read.

Delivery guarantee, exactly:

- **No two emitters.** The lease is a conditional write, so at most one invocation holds a feed's
  lease; one that cannot take it emits nothing (``lease_busy``). A holder fetches no page once less
  than ``lease_margin_seconds`` of its lease remain, and emits nothing once less than half of that
  remains. Deploy with ``lease_seconds`` greater than the Lambda timeout: then a holder is dead before
  its lease can expire, and a lease is only ever taken over from a dead holder. (Lease times are the
  callers' wall clocks, NTP-synchronised in Lambda; the margin absorbs any skew.)
- **Exactly once without crashes.** An item version is recorded as seen in the checkpoint write that
  follows its emission, conditional on the version read when the lease was taken; the next holder
  starts from that checkpoint and skips it.
- **Crash after emit, before checkpoint.** If the process dies (or ``emit`` raises after delivering some
  envelopes, or the checkpoint write fails) the checkpoint still holds the previous poll's state. The
  next poll (after the lease expires, or at once when the lease was released on an error) fetches the
  feed again and re-emits every item version still in the feed that was not recorded, with the *same*
  event ids (``feed_event_id``: feed + item id + updated time; dead-letter ids depend only on the raw
  input). It never emits a new id for an already emitted item version; only ``ingest_time`` differs.
  Downstream de-duplication by ``event_id`` makes the result exactly once.
- **Nothing lost, within the feed's window.** An item is recorded only after ``emit`` returned, i.e.
  after the stream accepted it; bounding the seen set (by count and age) can only cause re-emission
  (same ids), never a skip. An item that leaves the feed's window before any successful poll saw it
  cannot be recovered by any poller; choose a feed window much longer than the poll interval plus the
  lease time (USGS ``all_hour`` polled every minute).
"""

from __future__ import annotations

import email.utils
import http.client
import logging
import math
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from threading import Lock
from typing import Any, Literal, TypeVar

import orjson

from sluice import __version__
from sluice.core.contracts import Envelope, FeedItem, Stage
from sluice.core.deadletters import BatchResult
from sluice.core.errors import SluiceError
from sluice.core.inputs import decode_json
from sluice.core.retry import BackoffPolicy
from sluice.parsing.feeds import MAX_DOCUMENT_BYTES, FeedSpec, get_path, parse_feed_document
from sluice.stream.envelopes import wrap_dead_letter, wrap_feed_item

__all__ = [
    "DEFAULT_USER_AGENT",
    "STAGE",
    "Checkpoint",
    "CheckpointBounds",
    "CheckpointCorrupt",
    "CheckpointStore",
    "Emit",
    "FeedFetchError",
    "FeedPollSummary",
    "FeedPoller",
    "Fetch",
    "HttpRequest",
    "HttpResponse",
    "InMemoryCheckpointStore",
    "LeaseLost",
    "PageWalk",
    "PollerConfig",
    "RetryDecision",
    "RetryPolicy",
    "SeenSet",
    "TransportError",
    "WalkState",
    "bound_checkpoint",
    "conditional_headers",
    "decide_retry",
    "decode_seen_state",
    "encode_seen_state",
    "fetch_with_retries",
    "first_page_url",
    "is_retryable_status",
    "next_page_url",
    "parse_retry_after",
    "seen_key",
    "urllib_fetch",
    "with_query",
]

log = logging.getLogger(__name__)

STAGE = Stage.EDGE_FEED
"""The ``stage`` of dead letters produced while polling."""

DEFAULT_USER_AGENT = f"sluice-feed-poller/{__version__}"


# --- errors -----------------------------------------------------------------------------------------


class TransportError(SluiceError):
    """No HTTP response: connection refused or reset, DNS failure, timeout, unsupported URL."""


class FeedFetchError(SluiceError):
    """A request failed for good: retry budget spent, a non-retryable status, no time left."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class LeaseLost(SluiceError):
    """The conditional checkpoint write failed: another invocation holds the lease or moved on."""


class CheckpointCorrupt(SluiceError):
    """A stored checkpoint cannot be decoded; delete the feed's checkpoint item to start over."""


# --- HTTP -------------------------------------------------------------------------------------------


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

Emit = Callable[[list[Envelope]], None]
"""Delivers envelopes. Must raise unless every envelope was accepted (by the stream, or by the
publisher's own dead-letter destination): the checkpoint is written once it returns."""


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
    # One byte over the limit is enough for the parser to reject the document as too large,
    # without ever holding more than the limit in memory.
    raw: bytes = stream.read(limit + 1)
    if (encoding or "").strip().lower() != "gzip":
        return raw
    inflater = zlib.decompressobj(wbits=31)
    try:
        return inflater.decompress(raw, limit + 1)  # bounded: a small gzip bomb stays small
    except zlib.error as err:
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


# --- retries ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """HTTP retries of one request (a page): the project's backoff plus the ``Retry-After`` cap.

    ``max_retries`` counts retries after the first try. ``max_delay`` is the backoff's cap; a
    ``max_delay`` below ``base_delay`` caps every delay. The delays are ``backoff``'s (full jitter,
    see ``sluice.core.retry``); the poll's deadline, not elapsed time, bounds them in time.
    """

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0
    """A ``Retry-After`` longer than this is not waited for: the poll fails and the next one retries."""
    backoff: BackoffPolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        backoff = BackoffPolicy.capped(
            self.base_delay,
            self.max_delay,
            max_attempts=self.max_retries + 1,
            max_elapsed_seconds=math.inf,  # fetch_with_retries stops at the poll's deadline
        )
        object.__setattr__(self, "backoff", backoff)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    delay: float
    reason: str


def is_retryable_status(status: int) -> bool:
    """429 and 5xx are worth another try; any other 4xx will fail the same way again."""
    return status == 429 or 500 <= status <= 599


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date); ``None`` if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def decide_retry(
    policy: RetryPolicy,
    attempt: int,
    *,
    status: int | None,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> RetryDecision:
    """Whether to retry after failed ``attempt`` (0 = the first try) and how long to wait first.

    ``status`` is ``None`` for a transport error (connection, timeout), which is always retryable.
    The delay is the shared backoff's (``sluice.core.retry``: full jitter, uniform in
    ``[0, min(max_delay, base_delay * 2**attempt)]``); a ``Retry-After`` is a floor on it, so a
    server that says how long to wait is never retried sooner.
    """
    if status is not None and not is_retryable_status(status):
        return RetryDecision(False, 0.0, f"HTTP {status} is not retryable")
    delay = policy.backoff.next_delay(attempt + 1, 0.0, rng or random.Random())
    if delay is None:
        return RetryDecision(False, 0.0, f"gave up after {attempt + 1} attempts")
    if retry_after is not None and retry_after > policy.max_retry_after:
        return RetryDecision(
            False,
            0.0,
            f"server asks to retry after {retry_after:.0f} s, more than the {policy.max_retry_after:.0f} s allowed",
        )
    if retry_after is not None:
        delay = max(delay, retry_after)
    return RetryDecision(True, delay, "transport error" if status is None else f"HTTP {status}")


def fetch_with_retries(
    fetch: Fetch,
    request: HttpRequest,
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    deadline: float | None = None,
    rng: random.Random | None = None,
    on_retry: Callable[[RetryDecision], None] | None = None,
) -> HttpResponse:
    """Fetch with the retry policy. Returns a 2xx or 304 response; raises ``FeedFetchError``.

    ``deadline`` (a ``monotonic`` value) bounds waiting and each request's timeout, so a poll never
    outlives its lease or the Lambda.
    """
    attempt = 0
    while True:
        timeout = request.timeout
        if deadline is not None:
            timeout = min(timeout, deadline - monotonic())
            if timeout <= 0:
                raise FeedFetchError("no time left for the request", attempts=attempt)
        status: int | None = None
        retry_after: float | None = None
        try:
            response = fetch(replace(request, timeout=timeout))
        except TransportError as err:
            problem = str(err)
        else:
            if 200 <= response.status < 300 or response.status == 304:
                return response
            status = response.status
            problem = f"HTTP {status}"
            if status in (429, 503):  # RFC 9110 defines Retry-After for these
                now = datetime.fromtimestamp(wall_clock(), UTC)
                retry_after = parse_retry_after(response.header("retry-after"), now)
        decision = decide_retry(policy, attempt, status=status, retry_after=retry_after, rng=rng)
        if decision.retry and deadline is not None and monotonic() + decision.delay >= deadline:
            decision = RetryDecision(False, 0.0, "no time left to retry")
        if not decision.retry:
            raise FeedFetchError(
                f"GET {request.url}: {problem}; {decision.reason}",
                status=status,
                attempts=attempt + 1,
            )
        log.warning(
            "retrying feed request",
            extra={
                "url": request.url,
                "problem": problem,
                "delay_seconds": round(decision.delay, 3),
            },
        )
        if on_retry is not None:
            on_retry(decision)
        sleep(decision.delay)
        attempt += 1


# --- request planning -------------------------------------------------------------------------------


def conditional_headers(etag: str | None, last_modified: str | None) -> dict[str, str]:
    """Validators from the last complete poll, echoed verbatim as RFC 9110 asks."""
    headers: dict[str, str] = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    return headers


def with_query(url: str, params: Mapping[str, str | int]) -> str:
    """``url`` with ``params`` set in its query string (replacing same-named parameters)."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    query = [(k, v) for k, v in query if k not in params]
    query.extend((k, str(v)) for k, v in params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@dataclass(slots=True)
class WalkState:
    """Where a page walk is: the page number (``page`` style), counts, URLs already fetched."""

    page_number: int
    pages_fetched: int = 0
    items_seen: int = 0
    visited: set[str] = field(default_factory=set)


def first_page_url(spec: FeedSpec) -> tuple[str, WalkState]:
    """The first request's URL and the walk's initial state."""
    if spec.url is None:
        raise ValueError(f"feed {spec.name!r} has no url")
    pagination = spec.pagination
    url = spec.url
    if pagination.style == "page":
        url = with_query(
            url,
            {
                pagination.page_param: pagination.first_page,
                pagination.limit_param: pagination.limit,
            },
        )
    return url, WalkState(page_number=pagination.first_page)


def next_page_url(
    spec: FeedSpec,
    state: WalkState,
    current_url: str,
    document: Any | None,
    items_on_page: int | None,
) -> str | None:
    """The next page's URL after ``current_url`` was fetched, or ``None`` when the walk is over.

    ``document`` and ``items_on_page`` are ``None`` when the page was not a usable document: a
    ``page`` walk then goes on (the next page number is known and one corrupt page should not hide
    the rest); ``cursor`` and ``next_link`` walks cannot, since the way on was in that page.
    ``max_pages`` is the caller's bound, not checked here.
    """
    pagination = spec.pagination
    if pagination.style == "none":
        return None
    if pagination.style == "page":
        if items_on_page is not None:
            if items_on_page < pagination.limit:  # a short or empty page is the last one
                return None
            found = get_path(document, "meta.found")
            # OpenAQ and similar APIs report the total; some report it as a string like ">1000".
            if isinstance(found, int) and not isinstance(found, bool) and state.items_seen >= found:
                return None
        assert spec.url is not None
        return with_query(
            spec.url,
            {
                pagination.page_param: state.page_number + 1,
                pagination.limit_param: pagination.limit,
            },
        )
    if document is None or not items_on_page:
        return None  # nowhere to go on from, or an empty page: the end even if a cursor is given
    if pagination.style == "cursor":
        cursor = get_path(document, pagination.cursor_path)
        if cursor is None or cursor == "" or isinstance(cursor, dict | list):
            return None
        assert spec.url is not None
        url = with_query(spec.url, {pagination.cursor_param: str(cursor)})
    else:
        link = get_path(document, pagination.next_link_path)
        if not isinstance(link, str) or not link:
            return None
        url = urllib.parse.urljoin(current_url, link)  # next links are often relative
    return None if url in state.visited else url  # a repeated cursor or link would loop forever


class PageWalk:
    """The request plan of one poll: the first URL, then each next one from the page just read.

    Bounded by ``max_pages`` (``truncated`` then says the bound cut the walk short) and loop-proof:
    a URL already fetched is never planned again.
    """

    def __init__(self, spec: FeedSpec) -> None:
        self.spec = spec
        self.first_url, self.state = first_page_url(spec)
        self.next_url: str | None = self.first_url
        self.truncated = False

    def fetched(
        self,
        url: str,
        document: Any | None,
        items_on_page: int | None,
        *,
        final_url: str | None = None,
    ) -> str | None:
        """Record the page fetched from ``url`` (``final_url`` after redirects); plan the next."""
        state = self.state
        state.pages_fetched += 1
        state.visited.update(u for u in (url, final_url) if u)
        if items_on_page is not None:
            state.items_seen += items_on_page
        planned = next_page_url(self.spec, state, final_url or url, document, items_on_page)
        state.page_number += 1
        if planned is not None and state.pages_fetched >= self.spec.pagination.max_pages:
            self.truncated, planned = True, None
        self.next_url = planned
        return planned


# --- checkpoints and de-duplication ----------------------------------------------------------------

SeenKey = tuple[str, str]
"""(item id, updated time as ISO-8601): the identity ``feed_event_id`` hashes, minus the feed."""


def seen_key(item: FeedItem) -> SeenKey:
    # Same inputs as sluice.stream.envelopes.feed_event_id, so "seen" and "same event id" always agree.
    return item.item_id, (item.updated_time or item.event_time).isoformat()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A feed's polling state after its last successful poll (version 0: never polled).

    ``seen`` and ``dead_letters`` map (item id, updated) pairs and dead-letter ids to the epoch second
    they were last seen in the feed, so entries age out only after they have left the feed.
    """

    feed: str
    version: int = 0
    source_url: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    seen: Mapping[SeenKey, int] = field(default_factory=dict)
    dead_letters: Mapping[str, int] = field(default_factory=dict)
    committed_at: float | None = None


@dataclass(frozen=True, slots=True)
class CheckpointBounds:
    """Keeps a checkpoint well under DynamoDB's 400 KB item limit."""

    max_items: int = 20_000
    max_dead_letters: int = 1_000
    max_age_seconds: int = 7 * 86_400
    max_bytes: int = 300_000


_STATE_FORMAT = 1


def encode_seen_state(checkpoint: Checkpoint) -> bytes:
    """The seen sets as compressed JSON: sorted, so equal states encode to equal bytes."""
    state = {
        "format": _STATE_FORMAT,
        "items": sorted([i, u, t] for (i, u), t in checkpoint.seen.items()),
        "dead_letters": sorted([d, t] for d, t in checkpoint.dead_letters.items()),
    }
    return zlib.compress(orjson.dumps(state), 6)


def decode_seen_state(blob: bytes | None) -> tuple[dict[SeenKey, int], dict[str, int]]:
    """Inverse of ``encode_seen_state``; ``None`` or empty is an empty state."""
    if not blob:
        return {}, {}
    try:
        state = orjson.loads(zlib.decompress(blob))
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"unknown format {state.get('format')!r}")
        items = {(str(i), str(u)): int(t) for i, u, t in state["items"]}
        dead = {str(d): int(t) for d, t in state["dead_letters"]}
    except (
        zlib.error,
        orjson.JSONDecodeError,
        AttributeError,
        KeyError,
        TypeError,
        ValueError,
    ) as err:
        raise CheckpointCorrupt(f"seen-state blob of {len(blob)} bytes: {err}") from None
    return items, dead


K = TypeVar("K")


def _newest(entries: Mapping[K, int], cutoff: int, limit: int) -> dict[K, int]:
    fresh = [(k, t) for k, t in entries.items() if t >= cutoff]
    if len(fresh) > limit:
        # Newest first; ties (one poll's items share a time) broken by key so the result is stable.
        fresh.sort(key=lambda kt: (kt[1], str(kt[0])), reverse=True)
        fresh = fresh[:limit]
    return dict(fresh)


def bound_checkpoint(
    checkpoint: Checkpoint, bounds: CheckpointBounds, now: float
) -> tuple[Checkpoint, bytes, int]:
    """Drop entries not seen for ``max_age_seconds``, then the least recently seen beyond the counts,
    then more until the encoded state fits ``max_bytes``. Returns the bounded checkpoint, its encoded
    seen state and how many entries were dropped.

    Dropping an entry of an item still in the feed makes the next poll emit it again (same event id):
    a duplicate, never a loss. The defaults keep a week of USGS ``all_day`` (~300 items a day).
    """
    cutoff = int(now) - bounds.max_age_seconds
    total = len(checkpoint.seen) + len(checkpoint.dead_letters)
    max_items, max_dead = bounds.max_items, bounds.max_dead_letters
    while True:
        bounded = replace(
            checkpoint,
            seen=_newest(checkpoint.seen, cutoff, max_items),
            dead_letters=_newest(checkpoint.dead_letters, cutoff, max_dead),
        )
        blob = encode_seen_state(bounded)
        kept = len(bounded.seen) + len(bounded.dead_letters)
        if len(blob) <= bounds.max_bytes or kept == 0:
            return bounded, blob, total - kept
        shrink = 0.9 * bounds.max_bytes / len(blob)  # sizes are roughly proportional to counts
        max_items = min(len(bounded.seen) - 1, int(len(bounded.seen) * shrink))
        max_dead = min(len(bounded.dead_letters), int(len(bounded.dead_letters) * shrink))
        max_items, max_dead = max(max_items, 0), max(max_dead, 0)


class SeenSet:
    """De-duplication of one poll against a checkpoint.

    An item version (item id, updated time) is new when neither the checkpoint nor an earlier page of
    this poll has it; an updated item has a new updated time, so it is new again (with a new event id).
    Every observed entry gets ``now`` as its last-seen time, so only entries that left the feed age out.
    """

    def __init__(self, checkpoint: Checkpoint, now: float) -> None:
        self._now = int(now)
        self._seen = dict(checkpoint.seen)
        self._dead = dict(checkpoint.dead_letters)
        self._known_items = set(checkpoint.seen)
        self._known_dead = set(checkpoint.dead_letters)

    def observe_item(self, item: FeedItem) -> bool:
        key = seen_key(item)
        is_new = key not in self._seen
        self._seen[key] = self._now
        return is_new

    def observe_dead_letter(self, dead_letter_id: str) -> bool:
        is_new = dead_letter_id not in self._dead
        self._dead[dead_letter_id] = self._now
        return is_new

    def split(self, result: BatchResult[FeedItem]) -> tuple[BatchResult[FeedItem], int]:
        """The new items and dead letters of a parsed page, and how many were duplicates."""
        fresh: BatchResult[FeedItem] = BatchResult()
        fresh.valid = [item for item in result.valid if self.observe_item(item)]
        fresh.dead_letters = [
            letter
            for letter in result.dead_letters
            if self.observe_dead_letter(letter.dead_letter_id)
        ]
        duplicates = len(result.valid) + len(result.dead_letters)
        duplicates -= len(fresh.valid) + len(fresh.dead_letters)
        return fresh, duplicates

    def checkpoint(self, base: Checkpoint, **changes: Any) -> Checkpoint:
        return replace(base, seen=dict(self._seen), dead_letters=dict(self._dead), **changes)


class CheckpointStore(ABC):
    """Where feed checkpoints and leases live (DynamoDB in production, memory in tests).

    Implementations must make each method one atomic conditional operation.
    """

    @abstractmethod
    def acquire(self, feed: str, owner: str, now: float, lease_seconds: float) -> Checkpoint | None:
        """Take the feed's lease if nobody holds an unexpired one; return its checkpoint, else ``None``."""

    @abstractmethod
    def commit(self, checkpoint: Checkpoint, owner: str, expected_version: int) -> None:
        """Store ``checkpoint`` (its ``version`` is the new one) and release the lease, only if
        ``owner`` still holds the lease and the stored version is ``expected_version``; otherwise
        raise ``LeaseLost`` and change nothing."""

    @abstractmethod
    def release(self, feed: str, owner: str) -> None:
        """Give the lease back if ``owner`` still holds it; a no-op otherwise."""


@dataclass(slots=True)
class _StoredFeed:
    blob: bytes = b""
    checkpoint: Checkpoint | None = None
    lease_owner: str | None = None
    lease_expires: float = 0.0


class InMemoryCheckpointStore(CheckpointStore):
    """Thread-safe in-memory store for tests and local runs; keeps the encoded state like DynamoDB."""

    def __init__(self) -> None:
        self._feeds: dict[str, _StoredFeed] = {}
        self._lock = Lock()

    def acquire(self, feed: str, owner: str, now: float, lease_seconds: float) -> Checkpoint | None:
        with self._lock:
            stored = self._feeds.setdefault(feed, _StoredFeed())
            if stored.lease_owner is not None and stored.lease_expires > now:
                return None
            stored.lease_owner, stored.lease_expires = owner, now + lease_seconds
            if stored.checkpoint is None:
                return Checkpoint(feed=feed)
            seen, dead = decode_seen_state(stored.blob)
            return replace(stored.checkpoint, seen=seen, dead_letters=dead)

    def commit(self, checkpoint: Checkpoint, owner: str, expected_version: int) -> None:
        with self._lock:
            stored = self._feeds.setdefault(checkpoint.feed, _StoredFeed())
            version = stored.checkpoint.version if stored.checkpoint else 0
            if stored.lease_owner != owner or version != expected_version:
                raise LeaseLost(
                    f"feed {checkpoint.feed!r}: lease held by {stored.lease_owner!r}, "
                    f"version {version} (expected {owner!r}, {expected_version})"
                )
            stored.blob = encode_seen_state(checkpoint)
            stored.checkpoint = replace(checkpoint, seen={}, dead_letters={})
            stored.lease_owner, stored.lease_expires = None, 0.0

    def release(self, feed: str, owner: str) -> None:
        with self._lock:
            stored = self._feeds.get(feed)
            if stored is not None and stored.lease_owner == owner:
                stored.lease_owner, stored.lease_expires = None, 0.0


# --- the poller -------------------------------------------------------------------------------------

PollStatus = Literal["ok", "not_modified", "lease_busy", "failed", "skipped"]


@dataclass(slots=True)
class FeedPollSummary:
    """What one poll of one feed did; the adapters log it and turn it into metrics."""

    feed: str
    status: PollStatus = "ok"
    pages_fetched: int = 0
    items_received: int = 0
    new_items: int = 0
    duplicates_skipped: int = 0
    dead_letters: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    emitted: int = 0
    http_retries: int = 0
    complete: bool = False
    incomplete_reason: str | None = None
    checkpoint_evicted: int = 0
    checkpoint_version: int | None = None
    error: str | None = None
    duration_seconds: float = 0.0

    @property
    def not_modified(self) -> bool:
        return self.status == "not_modified"

    def as_dict(self) -> dict[str, Any]:
        return {
            "feed": self.feed,
            "status": self.status,
            "pages_fetched": self.pages_fetched,
            "items_received": self.items_received,
            "new_items": self.new_items,
            "duplicates_skipped": self.duplicates_skipped,
            "dead_letters": self.dead_letters,
            "dead_letters_by_reason": dict(self.dead_letters_by_reason),
            "emitted": self.emitted,
            "not_modified": self.not_modified,
            "http_retries": self.http_retries,
            "complete": self.complete,
            "incomplete_reason": self.incomplete_reason,
            "checkpoint_evicted": self.checkpoint_evicted,
            "checkpoint_version": self.checkpoint_version,
            "error": self.error,
            "duration_seconds": round(self.duration_seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class PollerConfig:
    """Poller-wide settings; per-feed ones (timeout, retries, pagination) are in the ``FeedSpec``."""

    user_agent: str = DEFAULT_USER_AGENT
    lease_seconds: float = 300.0
    lease_margin_seconds: float = 20.0
    """Part of the lease kept for emitting and the checkpoint write: no page is fetched and nothing
    is emitted once less than this remains."""
    retry: RetryPolicy = RetryPolicy()
    bounds: CheckpointBounds = CheckpointBounds()

    def __post_init__(self) -> None:
        if not 0 <= self.lease_margin_seconds < self.lease_seconds:
            raise ValueError("lease_margin_seconds must be >= 0 and below lease_seconds")


class _PollAborted(SluiceError):
    """Internal: the poll stops without emitting (the summary says why)."""


class FeedPoller:
    """Polls feeds with injected I/O: ``fetch`` (HTTP), ``store`` (checkpoints), ``emit`` (stream).

    The clocks, ``sleep`` and ``rng`` are injectable so tests are fast and deterministic.
    """

    def __init__(
        self,
        *,
        fetch: Fetch,
        store: CheckpointStore,
        emit: Emit,
        config: PollerConfig | None = None,
        owner_prefix: str | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.fetch = fetch
        self.store = store
        self.emit = emit
        self.config = config or PollerConfig()
        self.owner_prefix = owner_prefix or f"{socket.gethostname()}:{id(self):x}"
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.rng = rng or random.Random()

    def poll_all(
        self, specs: Iterable[FeedSpec], *, deadline: float | None = None
    ) -> list[FeedPollSummary]:
        """Poll each feed in turn; one feed's failure never stops the others."""
        return [self.poll(spec, deadline=deadline) for spec in specs]

    def poll(self, spec: FeedSpec, *, deadline: float | None = None) -> FeedPollSummary:
        """One poll of one feed (see the module docstring). Never raises for feed or store problems."""
        started = self.monotonic()
        summary = FeedPollSummary(spec.name)
        if deadline is not None and deadline - started < spec.timeout_seconds:
            # Not even one request would fit: leave the feed to the next invocation untouched.
            summary.status, summary.error = "skipped", "no time left to poll"
            return summary
        owner = f"{self.owner_prefix}:{uuid.uuid4().hex[:12]}"
        try:
            checkpoint = self.store.acquire(
                spec.name, owner, self.wall_clock(), self.config.lease_seconds
            )
        except Exception as err:  # store down or misconfigured: this feed fails, others go on
            log.exception("cannot take the feed lease", extra={"feed": spec.name})
            summary.status, summary.error = "failed", f"checkpoint store: {err}"
            return summary
        if checkpoint is None:
            summary.status = "lease_busy"
            summary.duration_seconds = self.monotonic() - started
            return summary
        lease_deadline = started + self.config.lease_seconds - self.config.lease_margin_seconds
        committed = False
        try:
            committed = self._poll_leased(
                spec, checkpoint, owner, summary, deadline=deadline, lease_deadline=lease_deadline
            )
        except (FeedFetchError, LeaseLost, CheckpointCorrupt, _PollAborted) as err:
            log.error("feed poll failed", extra={"feed": spec.name, "error": str(err)})
            summary.status, summary.error = "failed", str(err)
        except Exception as err:  # emitter or store failure: logged with its traceback
            log.exception("feed poll failed", extra={"feed": spec.name})
            summary.status, summary.error = "failed", f"{type(err).__name__}: {err}"
        finally:
            if not committed:
                self._release(spec.name, owner)
            summary.duration_seconds = self.monotonic() - started
        return summary

    def _release(self, feed: str, owner: str) -> None:
        try:
            self.store.release(feed, owner)
        except Exception:  # the lease then simply expires; nothing else depends on it
            log.exception("cannot release the feed lease", extra={"feed": feed})

    def _request(self, url: str, spec: FeedSpec, extra: Mapping[str, str]) -> HttpRequest:
        headers = {"User-Agent": self.config.user_agent, "Accept": "application/json", **extra}
        return HttpRequest(url=url, headers=headers, timeout=spec.timeout_seconds)

    def _poll_leased(
        self,
        spec: FeedSpec,
        checkpoint: Checkpoint,
        owner: str,
        summary: FeedPollSummary,
        *,
        deadline: float | None,
        lease_deadline: float,
    ) -> bool:
        """The poll under a held lease. Returns whether the checkpoint was committed."""
        deadline = lease_deadline if deadline is None else min(deadline, lease_deadline)
        policy = replace(self.config.retry, max_retries=spec.max_retries)
        now = self.wall_clock()
        seen = SeenSet(checkpoint, now)
        walk = PageWalk(spec)
        validators = (
            conditional_headers(checkpoint.etag, checkpoint.last_modified)
            if checkpoint.source_url == walk.first_url
            else {}  # validators of another URL (the feed's config changed) could wrongly match
        )
        first_response: HttpResponse | None = None
        envelopes: list[Envelope] = []
        fetch_error: FeedFetchError | None = None

        def count_retry(_: RetryDecision) -> None:
            summary.http_retries += 1

        while walk.next_url is not None:
            if self.monotonic() >= deadline:
                summary.incomplete_reason = "time or lease ran out"
                break
            current = walk.next_url
            request = self._request(current, spec, validators if first_response is None else {})
            try:
                response = fetch_with_retries(
                    self.fetch,
                    request,
                    policy,
                    sleep=self.sleep,
                    monotonic=self.monotonic,
                    wall_clock=self.wall_clock,
                    deadline=deadline,
                    rng=self.rng,
                    on_retry=count_retry,
                )
            except FeedFetchError as err:
                if first_response is None:
                    raise
                fetch_error = err  # keep the pages already read: emit and checkpoint them
                summary.incomplete_reason = "a page could not be fetched"
                break
            summary.pages_fetched += 1
            if response.status == 304:
                if first_response is None:
                    summary.status = "not_modified"
                    summary.complete = True
                    summary.checkpoint_version = checkpoint.version
                    return False
                summary.incomplete_reason = "unexpected 304 for a later page"
                break
            if first_response is None:
                first_response = response
            document, items_on_page = self._take_page(spec, response, seen, summary, envelopes)
            if items_on_page is None:
                summary.incomplete_reason = "a page was not a usable document"
            walk.fetched(current, document, items_on_page, final_url=response.url)
        if first_response is None:  # the time ran out before the first request
            raise _PollAborted(f"no time left to fetch {walk.first_url}")
        if walk.truncated:
            summary.incomplete_reason = f"max_pages ({spec.pagination.max_pages}) reached"
        summary.complete = summary.incomplete_reason is None

        if self.monotonic() >= lease_deadline + self.config.lease_margin_seconds / 2:
            # The walk stops at the deadline, but parsing or a slow last page can overrun it; with
            # less than half the margin left, the lease could expire while emitting and another
            # invocation could emit the same items: better to emit nothing and let the next poll do it.
            raise _PollAborted("the lease was about to expire before emitting; nothing emitted")
        if envelopes:
            self.emit(envelopes)
        summary.emitted = len(envelopes)

        if summary.complete:
            new_validators = {
                "source_url": walk.first_url,
                "etag": first_response.header("etag"),
                "last_modified": first_response.header("last-modified"),
            }
        else:  # keep the old validators: a 304 must not hide a page this poll did not read
            new_validators = {}
        proposed = seen.checkpoint(
            checkpoint, version=checkpoint.version + 1, committed_at=now, **new_validators
        )
        bounded, _, evicted = bound_checkpoint(proposed, self.config.bounds, now)
        self.store.commit(bounded, owner, checkpoint.version)
        summary.checkpoint_evicted = evicted
        summary.checkpoint_version = bounded.version
        if fetch_error is not None:  # the pages before it were emitted and checkpointed
            log.error("feed poll failed", extra={"feed": spec.name, "error": str(fetch_error)})
            summary.status, summary.error = "failed", str(fetch_error)
        return True

    def _take_page(
        self,
        spec: FeedSpec,
        response: HttpResponse,
        seen: SeenSet,
        summary: FeedPollSummary,
        envelopes: list[Envelope],
    ) -> tuple[Any | None, int | None]:
        """Parse one page, append the envelopes of what is new; return (document, item count)."""
        document: Any | None
        if response.status == 204:  # "no content" is an empty page, not a broken one
            document, result = None, BatchResult[FeedItem]()
            items_on_page: int | None = 0
        else:
            try:
                document = decode_json(response.body, MAX_DOCUMENT_BYTES)
            except SluiceError:  # RecordRejected: parse_feed_document turns it into a dead letter
                document = None
            result = parse_feed_document(
                spec, response.body if document is None else document, stage=STAGE
            )
            items = get_path(document, spec.items_path) if document is not None else None
            items_on_page = len(items) if isinstance(items, list) else None
            if items_on_page is None:
                document = None
        fresh, duplicates = seen.split(result)
        ingest_time = datetime.fromtimestamp(self.wall_clock(), UTC)
        summary.items_received += len(result.valid) + len(result.dead_letters)
        summary.new_items += len(fresh.valid)
        summary.duplicates_skipped += duplicates
        summary.dead_letters += len(fresh.dead_letters)
        for letter in fresh.dead_letters:
            reason = letter.error_type.value
            summary.dead_letters_by_reason[reason] = (
                summary.dead_letters_by_reason.get(reason, 0) + 1
            )
        envelopes.extend(wrap_feed_item(item, ingest_time) for item in fresh.valid)
        envelopes.extend(wrap_dead_letter(letter, ingest_time) for letter in fresh.dead_letters)
        return document, items_on_page
