"""Pages of one poll: conditional headers, the request plan (page walk) and reading one page.

In: a ``FeedSpec`` (URL, pagination, item paths), stored validators, and each fetched response.
Out: the first page's URL and each next one (``PageWalk``; ``page``/``limit`` until a short page or
``meta.found``, ``cursor``, ``next_link``), at most ``max_pages`` and never the same URL twice; per
page a ``PageOutcome``: its new items and new dead letters, its duplicates, and the way on.
Dead letters (stage ``edge.feed``): a page that is not JSON or has no item list (one per page), an
item the feed parser refuses (``sluice.parsing.feeds.parse_feed_document``).
Why: planning the walk from what a page said, and reading a page into what is new, are the pure
parts of a poll; the poller only fetches, emits and checkpoints around them.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sluice.core.contracts import DEFAULT_HORIZON, DeadLetter, FeedItem, Stage, TimeHorizon
from sluice.core.deadletters import MAX_DEAD_LETTERS, BatchResult
from sluice.core.errors import RecordRejected, SluiceError
from sluice.core.inputs import decode_json
from sluice.edges.polling.checkpoints import SeenSet
from sluice.edges.polling.transport import HttpResponse
from sluice.parsing.feeds import (
    MAX_DOCUMENT_BYTES,
    FeedSpec,
    feed_items,
    get_path,
    parse_feed_document,
)

__all__ = [
    "PageOutcome",
    "PageWalk",
    "WalkState",
    "conditional_headers",
    "next_page_url",
    "read_page",
    "with_query",
]

STAGE = Stage.EDGE_FEED
"""The ``stage`` of dead letters produced while polling."""


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


@dataclass(frozen=True, slots=True)
class PageOutcome:
    """What one fetched page brought: what is new in it, how much was not, and the way on."""

    document: Any | None
    """The decoded document, for planning the next page; ``None`` when it was not usable."""
    items_on_page: int | None
    """How many entries its item list had; ``None`` when it was not a usable document."""
    items: tuple[FeedItem, ...] = ()
    """The item versions neither the checkpoint nor an earlier page of the poll had."""
    dead_letters: tuple[DeadLetter, ...] = ()
    """Its dead letters not seen before (by id)."""
    duplicates: int = 0

    @property
    def usable(self) -> bool:
        return self.items_on_page is not None

    @property
    def received(self) -> int:
        """Items and dead letters on the page, new or not."""
        return len(self.items) + len(self.dead_letters) + self.duplicates


def read_page(
    spec: FeedSpec,
    response: HttpResponse,
    seen: SeenSet,
    *,
    horizon: TimeHorizon = DEFAULT_HORIZON,
    now: datetime | None = None,
    max_dead_letters: int = MAX_DEAD_LETTERS,
) -> PageOutcome:
    """Parse one page and keep what ``seen`` has not seen (which then records it as seen).

    A 204 ("no content") is an empty page, not a broken one. ``horizon`` (around ``now``) and
    ``max_dead_letters`` are ``parse_feed_document``'s.
    """
    document: Any | None
    if response.status == 204:
        document, result = None, BatchResult[FeedItem]()
        items_on_page: int | None = 0
    else:
        try:
            document = decode_json(response.body, MAX_DOCUMENT_BYTES)
        except SluiceError:  # RecordRejected: parse_feed_document turns it into a dead letter
            document = None
        result = parse_feed_document(
            spec, response.body if document is None else document, stage=STAGE,
            horizon=horizon, now=now, max_dead_letters=max_dead_letters,
        )  # fmt: skip
        try:
            items_on_page = len(feed_items(spec, document)) if document is not None else None
        except RecordRejected:  # the document's letter says what is missing
            items_on_page = None
        if items_on_page is None:
            document = None
    fresh, duplicates = seen.split(result)
    return PageOutcome(
        document=document,
        items_on_page=items_on_page,
        items=tuple(fresh.valid),
        dead_letters=tuple(fresh.dead_letters),
        duplicates=duplicates,
    )
