"""Polling core: request planning, retries, de-duplication, checkpoint bounds, leases, the poll itself.

Everything here runs without a network or AWS: HTTP is a scripted ``Fetch``, time a fake clock,
checkpoints the in-memory store.
"""

from __future__ import annotations

import random
import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.core.contracts import Envelope, ErrorType, FeedItem, Source
from sluice.core.deadletters import BatchResult, dead_letter
from sluice.edges.polling import (
    Checkpoint,
    CheckpointBounds,
    FeedPoller,
    FeedPollSummary,
    HttpRequest,
    HttpResponse,
    InMemoryCheckpointStore,
    LeaseLost,
    PollerConfig,
    RetryPolicy,
    TransportError,
    decode_seen_state,
    encode_seen_state,
    urllib_fetch,
)
from sluice.edges.polling.checkpoints import CheckpointCorrupt, SeenSet, bound_checkpoint, seen_key
from sluice.edges.polling.pages import (
    PageWalk,
    WalkState,
    conditional_headers,
    next_page_url,
    with_query,
)
from sluice.edges.polling.retries import (
    FeedFetchError,
    decide_retry,
    fetch_with_retries,
    parse_retry_after,
)
from sluice.parsing.feeds import FeedSpec, PaginationSpec
from sluice.stream.envelopes import feed_event_id

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
EPOCH_NOW = NOW.timestamp()


# --- helpers ----------------------------------------------------------------------------------------


@dataclass
class FakeClock:
    """Monotonic and wall time that only move when something sleeps or a fetch takes time."""

    t: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return EPOCH_NOW + self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


class ScriptedFetch:
    """Answers each URL from a script (a queue per URL; the last answer repeats)."""

    def __init__(self, clock: FakeClock | None = None, latency: float = 0.0) -> None:
        self.script: dict[str, deque[HttpResponse | Exception]] = {}
        self.requests: list[HttpRequest] = []
        self.clock, self.latency = clock, latency

    def on(self, url: str, *answers: HttpResponse | Exception) -> None:
        self.script.setdefault(url, deque()).extend(answers)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        if self.clock is not None:
            self.clock.t += self.latency
        queue = self.script.get(request.url)
        if not queue:
            return HttpResponse(404, {}, b"{}", request.url)
        answer = queue.popleft() if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def ok(document: Any, url: str = "", **headers: str) -> HttpResponse:
    return HttpResponse(
        200, {k.replace("_", "-"): v for k, v in headers.items()}, orjson.dumps(document), url
    )


def status(code: int, **headers: str) -> HttpResponse:
    return HttpResponse(code, {k.replace("_", "-"): v for k, v in headers.items()}, b"", "")


def spec_with(
    style: str = "none", url: str = "https://api.example/v1/items", **pagination: Any
) -> FeedSpec:
    return FeedSpec(
        name="things",
        url=url,
        items_path="results",
        id_field="id",
        time_field="ts",
        updated_field="updated",
        pagination=PaginationSpec(style=style, **pagination),
        timeout_seconds=5,
        max_retries=2,
    )


def item(i: int, updated: int = 0) -> dict[str, Any]:
    ts = (NOW + timedelta(seconds=i)).isoformat()
    return {"id": f"i{i}", "ts": ts, "updated": (NOW + timedelta(seconds=i + updated)).isoformat()}


def feed_item(item_id: str, updated_s: int = 0) -> FeedItem:
    return FeedItem(
        feed="things",
        item_id=item_id,
        event_time=NOW,
        updated_time=NOW + timedelta(seconds=updated_s),
    )


def make_poller(
    fetch: ScriptedFetch, clock: FakeClock, **config: Any
) -> tuple[FeedPoller, list[Envelope], InMemoryCheckpointStore]:
    emitted: list[Envelope] = []
    store = InMemoryCheckpointStore()
    poller = FeedPoller(
        fetch=fetch,
        store=store,
        emit=emitted.extend,
        config=PollerConfig(retry=RetryPolicy(base_delay=0.1, max_delay=1.0), **config),
        wall_clock=clock.wall,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        rng=random.Random(1),
    )
    return poller, emitted, store


# --- conditional headers and URLs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("etag", "last_modified", "expected"),
    [
        pytest.param(None, None, {}, id="first-poll"),
        pytest.param("", "", {}, id="empty-validators"),
        pytest.param('"abc"', None, {"If-None-Match": '"abc"'}, id="etag"),
        pytest.param('W/"abc"', None, {"If-None-Match": 'W/"abc"'}, id="weak-etag-verbatim"),
        pytest.param(None, "Wed, 26 Nov 2026 12:00:00 GMT", {"If-Modified-Since": "Wed, 26 Nov 2026 12:00:00 GMT"}, id="date"),
        pytest.param('"e"', "Wed, 26 Nov 2026 12:00:00 GMT", {"If-None-Match": '"e"', "If-Modified-Since": "Wed, 26 Nov 2026 12:00:00 GMT"}, id="both"),
    ],
)  # fmt: skip
def test_conditional_headers_echo_the_stored_validators(etag, last_modified, expected):
    assert conditional_headers(etag, last_modified) == expected


@pytest.mark.parametrize(
    ("url", "params", "expected"),
    [
        ("https://x.example/a", {"page": 2}, "https://x.example/a?page=2"),
        ("https://x.example/a?page=1&limit=5&q=b", {"page": 2}, "https://x.example/a?limit=5&q=b&page=2"),
        ("https://x.example/a?cursor=old#top", {"cursor": "n/x+y"}, "https://x.example/a?cursor=n%2Fx%2By#top"),
        ("https://x.example/a?flag=", {"page": 1}, "https://x.example/a?flag=&page=1"),
    ],
)  # fmt: skip
def test_with_query_sets_parameters_and_keeps_the_rest(url, params, expected):
    assert with_query(url, params) == expected


def test_page_style_first_request_carries_page_and_limit():
    walk = PageWalk(spec_with("page", limit=50, first_page=0, page_param="p", limit_param="n"))
    assert walk.first_url == "https://api.example/v1/items?p=0&n=50"
    assert PageWalk(spec_with("none")).first_url == "https://api.example/v1/items"


def _state(**kw: Any) -> WalkState:
    return WalkState(**{"page_number": 1, **kw})


@pytest.mark.parametrize(
    ("style", "state", "document", "items_on_page", "expected"),
    [
        pytest.param("none", _state(), {"results": [1]}, 1, None, id="none-one-request"),
        pytest.param("page", _state(items_seen=10), {}, 10, "https://api.example/v1/items?page=2&limit=10", id="page-full-page-goes-on"),
        pytest.param("page", _state(items_seen=7), {}, 7, None, id="page-short-page-ends"),
        pytest.param("page", _state(), {}, 0, None, id="page-empty-page-ends"),
        pytest.param("page", _state(items_seen=20), {"meta": {"found": 20}}, 10, None, id="page-found-reached"),
        pytest.param("page", _state(items_seen=10), {"meta": {"found": 20}}, 10, "https://api.example/v1/items?page=2&limit=10", id="page-found-not-reached"),
        pytest.param("page", _state(items_seen=10), {"meta": {"found": ">1000"}}, 10, "https://api.example/v1/items?page=2&limit=10", id="page-found-string-ignored"),
        pytest.param("page", _state(page_number=3), None, None, "https://api.example/v1/items?page=4&limit=10", id="page-invalid-page-goes-on"),
        pytest.param("cursor", _state(), {"meta": {"next_cursor": "abc"}}, 10, "https://api.example/v1/items?cursor=abc", id="cursor-next"),
        pytest.param("cursor", _state(), {"meta": {"next_cursor": 42}}, 10, "https://api.example/v1/items?cursor=42", id="cursor-number"),
        pytest.param("cursor", _state(), {"meta": {"next_cursor": None}}, 10, None, id="cursor-null-ends"),
        pytest.param("cursor", _state(), {"meta": {"next_cursor": ""}}, 10, None, id="cursor-empty-ends"),
        pytest.param("cursor", _state(), {"meta": {"next_cursor": "abc"}}, 0, None, id="cursor-empty-page-ends"),
        pytest.param("cursor", _state(visited={"https://api.example/v1/items?cursor=abc"}), {"meta": {"next_cursor": "abc"}}, 10, None, id="cursor-repeat-ends"),
        pytest.param("cursor", _state(), None, None, None, id="cursor-invalid-page-ends"),
        pytest.param("next_link", _state(), {"links": {"next": "/v1/items?after=9"}}, 10, "https://api.example/v1/items?after=9", id="link-relative"),
        pytest.param("next_link", _state(), {"links": {"next": "https://cdn.example/p2"}}, 10, "https://cdn.example/p2", id="link-absolute"),
        pytest.param("next_link", _state(), {"links": {}}, 10, None, id="link-missing-ends"),
        pytest.param("next_link", _state(visited={"https://api.example/v1/items"}), {"links": {"next": "items"}}, 10, None, id="link-loop-ends"),
    ],
)  # fmt: skip
def test_next_page_url(style, state, document, items_on_page, expected):
    spec = spec_with(style, limit=10)
    current = "https://api.example/v1/items?page=1&limit=10" if style == "page" else spec.url
    assert next_page_url(spec, state, current, document, items_on_page) == expected


def _serve(
    style: str, items: list[int], url: str, limit: int, report_found: bool
) -> dict[str, Any]:
    """A simulated API of ``style`` over ``items`` (what the functional tests do over HTTP)."""
    query = dict(part.split("=") for part in url.partition("?")[2].split("&") if part)
    if style == "page":
        page = int(query["page"])
        meta = {"found": len(items)} if report_found else {}
        return {"results": items[(page - 1) * limit : page * limit], "meta": meta}
    offset = int(query.get("cursor", query.get("after", "0")))
    nxt = offset + limit if offset + limit < len(items) else None
    if style == "cursor":
        return {"results": items[offset : offset + limit], "meta": {"next_cursor": nxt}}
    links = {} if nxt is None else {"next": f"?after={nxt}"}
    return {"results": items[offset : offset + limit], "links": links}


@given(
    style=st.sampled_from(["page", "cursor", "next_link"]),
    count=st.integers(0, 120),
    limit=st.integers(1, 25),
    report_found=st.booleans(),
    max_pages=st.integers(1, 200),
)
def test_a_page_walk_reads_every_item_once_within_max_pages(
    style, count, limit, report_found, max_pages
):
    # GIVEN an API of any style, size and page size
    spec = spec_with(style, limit=limit, max_pages=max_pages)
    items = list(range(count))
    # WHEN its pages are walked
    walk, collected = PageWalk(spec), []
    while walk.next_url is not None:
        document = _serve(style, items, walk.next_url, limit, report_found)
        collected.extend(document["results"])
        walk.fetched(walk.next_url, document, len(document["results"]))
    # THEN no page is read twice; all items are read unless max_pages cut the walk, which is said
    pages_needed = max(1, -(-count // limit))
    if style == "page" and count % limit == 0 and not (report_found and count):
        pages_needed += count > 0  # only an empty page tells the end
    assert collected == items[: len(collected)]
    assert walk.state.pages_fetched == min(pages_needed, max_pages)
    assert walk.truncated == (pages_needed > max_pages)
    if not walk.truncated:
        assert collected == items


# --- retries --------------------------------------------------------------------------------------

POLICY = RetryPolicy(max_retries=3, base_delay=1.0, max_delay=8.0, max_retry_after=30.0)


@pytest.mark.parametrize(
    ("status", "attempt", "retry_after", "retry", "reason"),
    [
        pytest.param(None, 0, None, True, "transport error", id="connection-or-timeout"),
        pytest.param(500, 0, None, True, "HTTP 500", id="500"),
        pytest.param(502, 1, None, True, "HTTP 502", id="502"),
        pytest.param(503, 2, 5.0, True, "HTTP 503", id="503-retry-after"),
        pytest.param(429, 0, 2.0, True, "HTTP 429", id="429-retry-after"),
        pytest.param(429, 0, None, True, "HTTP 429", id="429-without-header"),
        pytest.param(400, 0, None, False, "not retryable", id="400"),
        pytest.param(401, 0, None, False, "not retryable", id="401"),
        pytest.param(404, 0, None, False, "not retryable", id="404"),
        pytest.param(410, 0, None, False, "not retryable", id="410"),
        pytest.param(500, 3, None, False, "gave up after 4 attempts", id="budget-spent"),
        pytest.param(429, 0, 31.0, False, "more than the 30 s allowed", id="retry-after-too-long"),
    ],
)  # fmt: skip
def test_retry_decisions(status, attempt, retry_after, retry, reason):
    decision = decide_retry(
        POLICY, attempt, status=status, retry_after=retry_after, rng=random.Random(0)
    )
    assert decision.retry is retry and reason in decision.reason


@given(attempt=st.integers(0, 2), seed=st.integers(), retry_after=st.none() | st.floats(0, 30))
def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after(
    attempt, seed, retry_after
):
    decision = decide_retry(
        POLICY, attempt, status=503, retry_after=retry_after, rng=random.Random(seed)
    )
    step = min(POLICY.max_delay, POLICY.base_delay * 2**attempt)
    assert decision.retry
    assert 0 <= decision.delay <= max(step, retry_after or 0)  # full jitter (sluice.core.retry)
    if retry_after is not None:
        assert decision.delay >= retry_after


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("120", 120.0, id="seconds"),
        pytest.param(" 0 ", 0.0, id="zero-with-spaces"),
        pytest.param("Wed, 26 Nov 2026 12:00:30 GMT", 30.0, id="http-date-future"),
        pytest.param("Wed, 26 Nov 2026 11:59:00 GMT", 0.0, id="http-date-past"),
        pytest.param("-5", None, id="negative"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("1.5", None, id="fraction-not-allowed"),
    ],
)
def test_parse_retry_after(header, expected):
    assert parse_retry_after(header, NOW) == expected


def test_fetch_with_retries_backs_off_honours_retry_after_and_returns_the_success():
    # GIVEN a server that fails with a timeout, a 500 and a 429 asking for 7 s, then answers
    clock = FakeClock()
    fetch = ScriptedFetch()
    fetch.on(
        "https://a/",
        TransportError("timed out"),
        status(500),
        status(429, retry_after="7"),
        ok({"x": 1}),
    )
    # WHEN fetched with three retries
    response = fetch_with_retries(fetch, HttpRequest("https://a/", {}, 5), POLICY, sleep=clock.sleep,
                                  monotonic=clock.monotonic, wall_clock=clock.wall, rng=random.Random(3))  # fmt: skip
    # THEN it waited up to 1 s, up to 2 s (full jitter), then at least 7 s, and returned the answer
    assert response.status == 200 and len(fetch.requests) == 4
    assert 0 <= clock.sleeps[0] <= 1 and 0 <= clock.sleeps[1] <= 2 and clock.sleeps[2] >= 7


@pytest.mark.parametrize(
    ("answers", "attempts", "message"),
    [
        pytest.param([status(404)], 1, "HTTP 404 is not retryable", id="4xx-at-once"),
        pytest.param([status(503)], 4, "gave up after 4 attempts", id="budget"),
        pytest.param([TransportError("refused")], 4, "refused", id="transport-budget"),
        pytest.param([status(429, retry_after="3600")], 1, "retry after 3600 s", id="retry-after-too-long"),
    ],
)  # fmt: skip
def test_fetch_with_retries_gives_up_with_a_clear_error(answers, attempts, message):
    clock, fetch = FakeClock(), ScriptedFetch()
    fetch.on("https://a/", *answers)
    with pytest.raises(FeedFetchError, match=message) as raised:
        fetch_with_retries(fetch, HttpRequest("https://a/", {}, 5), POLICY, sleep=clock.sleep,
                           monotonic=clock.monotonic, wall_clock=clock.wall)  # fmt: skip
    assert len(fetch.requests) == attempts == raised.value.attempts


def test_fetch_with_retries_never_waits_past_the_deadline_and_shortens_timeouts():
    # GIVEN a failing server and 3 s left
    clock, fetch = FakeClock(), ScriptedFetch()
    fetch.on("https://a/", status(503, retry_after="5"))
    # WHEN fetched THEN it gives up instead of sleeping 5 s, and the request timeout was cut to 3 s
    with pytest.raises(FeedFetchError, match="no time left"):
        fetch_with_retries(fetch, HttpRequest("https://a/", {}, 10), POLICY, sleep=clock.sleep,
                           monotonic=clock.monotonic, wall_clock=clock.wall, deadline=3.0)  # fmt: skip
    assert clock.sleeps == [] and fetch.requests[0].timeout == 3.0


def test_urllib_fetch_refuses_urls_that_are_not_http():
    for url in ("file:///etc/passwd", "ftp://example.com/x", "data:,{}"):
        with pytest.raises(TransportError, match="not an http"):
            urllib_fetch(HttpRequest(url, {}, 1))


# --- de-duplication --------------------------------------------------------------------------------


def test_seen_set_emits_new_and_updated_versions_only():
    # GIVEN a checkpoint that saw a@0 and b@0
    checkpoint = Checkpoint("things", seen={("a", (NOW).isoformat()): 1, ("b", NOW.isoformat()): 1})
    seen = SeenSet(checkpoint, EPOCH_NOW)
    page = BatchResult(valid=[feed_item("a"), feed_item("b", 60), feed_item("c"), feed_item("c")])
    # WHEN a page with a (same), b (updated), c (new, twice) is split
    fresh, duplicates = seen.split(page)
    # THEN b's new version and c once are new; a and the second c are duplicates
    assert [(i.item_id, i.updated_time) for i in fresh.valid] == [
        ("b", NOW + timedelta(seconds=60)),
        ("c", NOW),
    ]
    assert duplicates == 2
    # AND the next checkpoint knows all versions, last seen now
    after = seen.checkpoint(checkpoint)
    assert set(after.seen) == {
        seen_key(feed_item(x, s)) for x, s in [("a", 0), ("b", 0), ("b", 60), ("c", 0)]
    }
    assert after.seen[seen_key(feed_item("a"))] == int(EPOCH_NOW)
    assert after.seen[seen_key(feed_item("b"))] == 1  # the old version was not in this page


def test_seen_key_agrees_with_the_event_id():
    # Two items with the same key must have the same event id, and vice versa.
    a, b, c = feed_item("x", 5), feed_item("x", 5), feed_item("x", 6)
    assert (seen_key(a) == seen_key(b)) and feed_event_id(a) == feed_event_id(b)
    assert seen_key(a) != seen_key(c) and feed_event_id(a) != feed_event_id(c)
    no_update = FeedItem(feed="things", item_id="y", event_time=NOW)
    assert seen_key(no_update) == ("y", NOW.isoformat())


def test_seen_set_deduplicates_dead_letters_by_id():
    letter = dead_letter(Source.FEED, "edge.feed", ErrorType.MISSING_FIELD, "no id", b'{"x": 1}')
    seen = SeenSet(Checkpoint("things", dead_letters={letter.dead_letter_id: 1}), EPOCH_NOW)
    other = dead_letter(Source.FEED, "edge.feed", ErrorType.MISSING_FIELD, "no id", b'{"x": 2}')
    fresh, duplicates = seen.split(BatchResult(dead_letters=[letter, other]))
    assert fresh.dead_letters == [other] and duplicates == 1


@given(
    versions=st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 3)), max_size=30),
    split_at=st.integers(0, 30),
)
def test_two_polls_never_emit_the_same_version_twice(versions, split_at):
    # GIVEN any sequence of item versions seen over two consecutive polls
    first, second = versions[:split_at], versions[split_at:]
    seen = SeenSet(Checkpoint("things"), EPOCH_NOW)
    emitted = seen.split(BatchResult(valid=[feed_item(i, s) for i, s in first]))[0].valid
    seen = SeenSet(seen.checkpoint(Checkpoint("things")), EPOCH_NOW + 60)
    emitted += seen.split(BatchResult(valid=[feed_item(i, s) for i, s in second]))[0].valid
    # THEN each distinct version was emitted exactly once
    assert sorted(seen_key(i) for i in emitted) == sorted(
        {seen_key(feed_item(i, s)) for i, s in versions}
    )


# --- checkpoint bounds and encoding ---------------------------------------------------------------


def test_bound_checkpoint_drops_entries_not_seen_for_max_age_then_the_least_recent():
    now = 1_000_000
    seen = {
        ("old", "t"): now - 1000,
        ("mid", "t"): now - 50,
        ("new", "t"): now,
        ("newer", "t"): now,
    }
    bounds = CheckpointBounds(max_items=2, max_dead_letters=1, max_age_seconds=100)
    checkpoint = Checkpoint(
        "f", seen=seen, dead_letters={"d1": now - 10, "d2": now, "d3": now - 500}
    )
    bounded, blob, evicted = bound_checkpoint(checkpoint, bounds, now)
    assert set(bounded.seen) == {("new", "t"), ("newer", "t")}
    assert set(bounded.dead_letters) == {"d2"} and evicted == 2 + 2
    assert decode_seen_state(blob) == (dict(bounded.seen), dict(bounded.dead_letters))


@settings(max_examples=25, deadline=None)
@given(count=st.integers(0, 3000), max_bytes=st.integers(2_000, 40_000), seed=st.integers(0, 99))
def test_bound_checkpoint_always_fits_max_bytes_keeping_the_most_recent(count, max_bytes, seed):
    # GIVEN many random (hard to compress) entries with distinct last-seen times
    rng = random.Random(seed)
    seen = {
        (f"{rng.getrandbits(64):x}", f"2026-11-{rng.randint(1, 28):02d}"): 10_000 + i
        for i in range(count)
    }
    bounds = CheckpointBounds(max_items=10**6, max_age_seconds=10**6, max_bytes=max_bytes)
    # WHEN bounded
    bounded, blob, evicted = bound_checkpoint(Checkpoint("f", seen=seen), bounds, 20_000)
    # THEN the encoded state fits, and whatever was kept is newer than whatever was dropped
    assert len(blob) <= max_bytes and evicted == count - len(bounded.seen)
    dropped = set(seen) - set(bounded.seen)
    if dropped and bounded.seen:
        assert min(bounded.seen.values()) > max(seen[k] for k in dropped)


def test_default_bounds_keep_a_checkpoint_far_below_the_dynamodb_item_limit():
    # A week of USGS all_day at ~300 earthquakes a day plus revisions: 20,000 realistic entries.
    seen = {(f"us7000{i:04x}", (NOW + timedelta(seconds=37 * i)).isoformat()): int(EPOCH_NOW) - i for i in range(20_000)}  # fmt: skip
    _, blob, evicted = bound_checkpoint(
        Checkpoint("usgs", seen=seen), CheckpointBounds(), EPOCH_NOW
    )
    assert evicted == 0 and len(blob) < 300_000


@given(
    seen=st.dictionaries(
        st.tuples(st.text(min_size=1), st.text()), st.integers(0, 2**40), max_size=20
    ),
    dead=st.dictionaries(st.text(min_size=1), st.integers(0, 2**40), max_size=5),
)
def test_seen_state_round_trips(seen, dead):
    blob = encode_seen_state(Checkpoint("f", seen=seen, dead_letters=dead))
    assert decode_seen_state(blob) == (seen, dead)


@pytest.mark.parametrize(
    "blob",
    [b"not zlib", b"x\x9c\x03\x00\x00\x00\x00\x01", zlib.compress(b'{"format": 99}')],
)
def test_a_corrupt_seen_state_is_a_clear_error(blob):
    with pytest.raises(CheckpointCorrupt):
        decode_seen_state(blob)


# --- the in-memory store (the contract every store implements) ---------------------------------------


def test_in_memory_store_lease_is_exclusive_until_released_or_expired():
    store = InMemoryCheckpointStore()
    assert store.acquire("f", "a", now=100, lease_seconds=10) == Checkpoint("f")
    assert store.acquire("f", "b", now=105, lease_seconds=10) is None  # a holds it
    store.release("f", "b")  # not b's to give back
    assert store.acquire("f", "b", now=109, lease_seconds=10) is None
    assert store.acquire("f", "b", now=110, lease_seconds=10) is not None  # expired


def test_in_memory_store_commit_is_conditional_on_owner_and_version():
    store = InMemoryCheckpointStore()
    store.acquire("f", "a", now=0, lease_seconds=10)
    with pytest.raises(LeaseLost):
        store.commit(Checkpoint("f", version=1), "b", expected_version=0)
    with pytest.raises(LeaseLost):
        store.commit(Checkpoint("f", version=6), "a", expected_version=5)
    store.commit(
        Checkpoint("f", version=1, etag='"e"', seen={("i", "u"): 1}), "a", expected_version=0
    )
    # the commit released the lease and the next holder reads what was written
    again = store.acquire("f", "b", now=1, lease_seconds=10)
    assert (
        again is not None
        and again.version == 1
        and again.etag == '"e"'
        and again.seen == {("i", "u"): 1}
    )


# --- the poll, with scripted HTTP -------------------------------------------------------------------

URL = "https://api.example/v1/items"


def page_url(n: int, limit: int = 2) -> str:
    return f"{URL}?page={n}&limit={limit}"


def test_a_poll_stores_validators_and_the_next_poll_is_conditional():
    clock, fetch = FakeClock(), ScriptedFetch()
    fetch.on(
        URL,
        ok({"results": [item(1)]}, etag='"v1"', last_modified="Wed, 26 Nov 2026 12:00:00 GMT"),
        status(304),
    )
    poller, emitted, _ = make_poller(fetch, clock)
    first = poller.poll(spec_with())
    second = poller.poll(spec_with())
    assert first.status == "ok" and len(emitted) == 1 and second.status == "not_modified"
    assert fetch.requests[1].headers["If-None-Match"] == '"v1"'
    assert fetch.requests[1].headers["If-Modified-Since"] == "Wed, 26 Nov 2026 12:00:00 GMT"
    assert (
        "If-None-Match" not in fetch.requests[0].headers and fetch.requests[0].headers["User-Agent"]
    )


def test_validators_of_another_url_are_not_sent():
    # GIVEN a checkpoint written while the feed had another URL
    clock, fetch = FakeClock(), ScriptedFetch()
    fetch.on(URL, ok({"results": [item(1)]}, etag='"v1"'))
    fetch.on(URL + "?v=2", ok({"results": [item(1)]}))
    poller, _, _ = make_poller(fetch, clock)
    poller.poll(spec_with())
    # WHEN the URL changes THEN the old ETag is not sent to the new URL
    poller.poll(spec_with(url=URL + "?v=2"))
    assert "If-None-Match" not in fetch.requests[1].headers


def test_a_truncated_walk_emits_what_it_read_but_stores_no_new_validators():
    # GIVEN a page API with 3 full pages and max_pages=2
    clock, fetch = FakeClock(), ScriptedFetch()
    for n in (1, 2, 3):
        fetch.on(page_url(n), ok({"results": [item(2 * n), item(2 * n + 1)]}, etag=f'"p{n}"'))
    spec = spec_with("page", limit=2, max_pages=2)
    poller, emitted, _ = make_poller(fetch, clock)
    # WHEN polled twice
    first = poller.poll(spec)
    poller.poll(spec)
    # THEN the first poll read 2 pages, said why it stopped, and the second was not conditional
    assert first.pages_fetched == 2 and first.incomplete_reason == "max_pages (2) reached"
    assert len(emitted) == 4 and not first.complete
    assert "If-None-Match" not in fetch.requests[2].headers


def test_a_later_page_failing_keeps_the_pages_before_it():
    # GIVEN a page API whose second page answers 500 for good
    clock, fetch = FakeClock(), ScriptedFetch()
    fetch.on(page_url(1), ok({"results": [item(1), item(2)]}))
    fetch.on(page_url(2), status(500))
    poller, emitted, store = make_poller(fetch, clock)
    # WHEN polled
    summary = poller.poll(spec_with("page", limit=2))
    # THEN the poll failed with the reason, the first page was emitted and checkpointed, and the
    # lease is free again
    assert summary.status == "failed" and "HTTP 500" in str(summary.error)
    assert len(emitted) == 2 and summary.checkpoint_version == 1 and summary.http_retries == 2
    assert store.acquire("things", "next", now=EPOCH_NOW, lease_seconds=10) is not None


def test_an_emitter_failure_commits_nothing_so_the_next_poll_re_emits_the_same_ids():
    clock, fetch = FakeClock(), ScriptedFetch()
    fetch.on(URL, ok({"results": [item(1), item(2)]}, etag='"v1"'))
    poller, emitted, _ = make_poller(fetch, clock)
    delivered: list[Envelope] = []

    def failing_emit(envelopes: list[Envelope]) -> None:
        delivered.extend(envelopes[:1])
        raise ConnectionError("stream unavailable")

    poller.emit = failing_emit
    failed = poller.poll(spec_with())
    poller.emit = emitted.extend
    recovered = poller.poll(spec_with())
    assert failed.status == "failed" and "stream unavailable" in str(failed.error)
    assert recovered.status == "ok" and "If-None-Match" not in fetch.requests[1].headers
    assert {e.event_id for e in delivered} < {e.event_id for e in emitted} and len(emitted) == 2


def test_a_poll_that_overruns_its_lease_emits_nothing():
    # GIVEN responses so slow that the walk ends far past the lease deadline
    clock = FakeClock()
    fetch = ScriptedFetch(clock, latency=25.0)
    fetch.on(URL, ok({"results": [item(1)]}))
    poller, emitted, _ = make_poller(fetch, clock, lease_seconds=30, lease_margin_seconds=10)
    # WHEN polled THEN nothing is emitted and the poll says why
    summary = poller.poll(spec_with())
    assert summary.status == "failed" and "lease" in str(summary.error) and emitted == []


def test_a_feed_is_skipped_when_not_even_one_request_fits_the_time_left():
    clock, fetch = FakeClock(), ScriptedFetch()
    poller, emitted, _ = make_poller(fetch, clock)
    summary = poller.poll(spec_with(), deadline=clock.t + 1)  # the feed's timeout is 5 s
    assert summary.status == "skipped" and fetch.requests == [] and emitted == []


def test_no_content_is_an_empty_page_and_a_busy_lease_emits_nothing():
    clock, fetch = FakeClock(), ScriptedFetch()
    fetch.on(URL, HttpResponse(204, {}, b"", URL))
    poller, emitted, store = make_poller(fetch, clock)
    assert poller.poll(spec_with()).status == "ok" and emitted == []
    store.acquire("things", "someone-else", now=EPOCH_NOW, lease_seconds=600)
    busy = poller.poll(spec_with())
    assert busy.status == "lease_busy" and len(fetch.requests) == 1


# --- how a poll ends: every path, its summary and the order of its side effects ------------------


def facts(summary: FeedPollSummary) -> dict[str, Any]:
    """The summary without its (real-time) duration."""
    return {k: v for k, v in summary.as_dict().items() if k != "duration_seconds"}


class RecordingStore(InMemoryCheckpointStore):
    """An in-memory store that logs its calls into a shared journal, optionally slow or stolen."""

    def __init__(
        self,
        journal: list[str],
        clock: FakeClock,
        *,
        acquire_takes: float = 0.0,
        steal: bool = False,
    ) -> None:
        super().__init__()
        self.journal, self.clock = journal, clock
        self.acquire_takes, self.steal = acquire_takes, steal

    def acquire(self, feed: str, owner: str, now: float, lease_seconds: float) -> Checkpoint | None:
        self.journal.append("acquire")
        self.clock.t += self.acquire_takes
        return super().acquire(feed, owner, now, lease_seconds)

    def commit(self, checkpoint: Checkpoint, owner: str, expected_version: int) -> None:
        self.journal.append("commit")
        if self.steal:
            raise LeaseLost("taken over by another invocation")
        super().commit(checkpoint, owner, expected_version)

    def release(self, feed: str, owner: str) -> None:
        self.journal.append("release")
        super().release(feed, owner)


def journaled_poller(
    fetch: ScriptedFetch,
    clock: FakeClock,
    *,
    store_options: dict[str, Any] | None = None,
    **config: Any,
) -> tuple[FeedPoller, list[str], list[Envelope]]:
    journal: list[str] = []
    emitted: list[Envelope] = []

    def emit(envelopes: list[Envelope]) -> None:
        journal.append(f"emit {len(envelopes)}")
        emitted.extend(envelopes)

    poller, _, _ = make_poller(fetch, clock, **config)
    poller.store = RecordingStore(journal, clock, **(store_options or {}))
    poller.emit = emit
    return poller, journal, emitted


SUMMARY_DEFAULTS: dict[str, Any] = {
    "feed": "things", "status": "ok", "pages_fetched": 0, "items_received": 0, "new_items": 0,
    "duplicates_skipped": 0, "dead_letters": 0, "dead_letters_by_reason": {}, "emitted": 0,
    "not_modified": False, "http_retries": 0, "complete": False, "incomplete_reason": None,
    "checkpoint_evicted": 0, "checkpoint_version": None, "error": None,
}  # fmt: skip


def test_a_complete_poll_emits_before_it_checkpoints_and_a_304_only_releases():
    clock, fetch = FakeClock(), ScriptedFetch()
    fetch.on(URL, ok({"results": [item(1), item(2), {"id": "no-time"}]}, etag='"v1"'), status(304))
    poller, journal, _ = journaled_poller(fetch, clock)
    first, second = poller.poll(spec_with()), poller.poll(spec_with())
    assert journal == ["acquire", "emit 3", "commit", "acquire", "release"]
    assert facts(first) == SUMMARY_DEFAULTS | {
        "pages_fetched": 1, "items_received": 3, "new_items": 2, "dead_letters": 1,
        "dead_letters_by_reason": {"missing_field": 1}, "emitted": 3, "complete": True,
        "checkpoint_version": 1,
    }  # fmt: skip
    assert facts(second) == SUMMARY_DEFAULTS | {
        "status": "not_modified", "not_modified": True, "pages_fetched": 1, "complete": True,
        "checkpoint_version": 1,
    }  # fmt: skip


def test_an_unusable_page_marks_the_poll_incomplete_and_a_page_walk_goes_on():
    clock, fetch = FakeClock(), ScriptedFetch()
    fetch.on(page_url(1), ok({"results": [item(1), item(2)]}, etag='"p1"'))
    fetch.on(page_url(2), HttpResponse(200, {}, b"<html>oops", page_url(2)))
    fetch.on(page_url(3), ok({"results": [item(5)]}))
    poller, journal, _ = journaled_poller(fetch, clock)
    summary = poller.poll(spec_with("page", limit=2))
    assert journal == ["acquire", "emit 4", "commit"]
    assert facts(summary) == SUMMARY_DEFAULTS | {
        "pages_fetched": 3, "items_received": 4, "new_items": 3, "dead_letters": 1,
        "dead_letters_by_reason": {"invalid_json": 1}, "emitted": 4,
        "incomplete_reason": "a page was not a usable document", "checkpoint_version": 1,
    }  # fmt: skip
    # AND an incomplete walk stores no validators, so the next poll is not conditional
    poller.poll(spec_with("page", limit=2))
    assert "If-None-Match" not in fetch.requests[3].headers


def test_an_unexpected_304_for_a_later_page_ends_the_walk_incomplete():
    clock, fetch = FakeClock(), ScriptedFetch()
    fetch.on(page_url(1), ok({"results": [item(1), item(2)]}))
    fetch.on(page_url(2), status(304))
    poller, journal, _ = journaled_poller(fetch, clock)
    summary = poller.poll(spec_with("page", limit=2))
    assert journal == ["acquire", "emit 2", "commit"]
    assert facts(summary) == SUMMARY_DEFAULTS | {
        "pages_fetched": 2, "items_received": 2, "new_items": 2, "emitted": 2,
        "incomplete_reason": "unexpected 304 for a later page", "checkpoint_version": 1,
    }  # fmt: skip


def test_a_first_page_failing_for_good_emits_nothing_and_releases_the_lease():
    clock, fetch = FakeClock(), ScriptedFetch()
    fetch.on(URL, status(500))
    poller, journal, emitted = journaled_poller(fetch, clock)
    summary = poller.poll(spec_with())
    assert journal == ["acquire", "release"] and emitted == []
    assert facts(summary) == SUMMARY_DEFAULTS | {
        "status": "failed", "http_retries": 2,
        "error": f"GET {URL}: HTTP 500; gave up after 3 attempts",
    }  # fmt: skip


def test_no_time_left_for_the_first_request_emits_nothing_and_releases_the_lease():
    # GIVEN a store so slow that the poll's deadline has passed once the lease is taken
    clock, fetch = FakeClock(), ScriptedFetch()
    poller, journal, _ = journaled_poller(fetch, clock, store_options={"acquire_takes": 11.0})
    summary = poller.poll(spec_with(), deadline=10.0)
    assert journal == ["acquire", "release"] and fetch.requests == []
    assert facts(summary) == SUMMARY_DEFAULTS | {
        "status": "failed", "incomplete_reason": "time or lease ran out",
        "error": f"no time left to fetch {URL}",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("latency", "emits"),
    [
        pytest.param(12.0, True, id="walk-ends-within-half-the-margin"),
        pytest.param(13.0, False, id="walk-ends-past-half-the-margin"),
    ],
)
def test_the_lease_margin_stops_the_walk_then_emission(latency, emits):
    # GIVEN a 30 s lease with a 10 s margin (no page fetched after 20 s, nothing emitted after 25 s)
    # and pages that take `latency` seconds each
    clock = FakeClock()
    fetch = ScriptedFetch(clock, latency=latency)
    for n in (1, 2, 3):
        fetch.on(page_url(n), ok({"results": [item(2 * n), item(2 * n + 1)]}))
    poller, journal, _ = journaled_poller(fetch, clock, lease_seconds=30, lease_margin_seconds=10)
    # WHEN polled THEN the third page is never fetched, and the two read are emitted only when the
    # second ended before 25 s
    summary = poller.poll(spec_with("page", limit=2))
    assert len(fetch.requests) == 2
    if emits:
        assert journal == ["acquire", "emit 4", "commit"]
        assert summary.status == "ok" and summary.incomplete_reason == "time or lease ran out"
    else:
        assert journal == ["acquire", "release"]
        assert summary.status == "failed" and summary.emitted == 0
        assert summary.error == "the lease was about to expire before emitting; nothing emitted"
    assert summary.pages_fetched == 2 and summary.new_items == 4 and not summary.complete


def test_a_lost_lease_at_the_checkpoint_write_fails_the_poll_after_emitting():
    clock, fetch = FakeClock(), ScriptedFetch()
    fetch.on(URL, ok({"results": [item(1)]}))
    poller, journal, emitted = journaled_poller(fetch, clock, store_options={"steal": True})
    summary = poller.poll(spec_with())
    assert journal == ["acquire", "emit 1", "commit", "release"] and len(emitted) == 1
    assert facts(summary) == SUMMARY_DEFAULTS | {
        "status": "failed", "pages_fetched": 1, "items_received": 1, "new_items": 1,
        "emitted": 1, "complete": True, "error": "taken over by another invocation",
    }  # fmt: skip


def test_a_later_page_failing_is_reported_after_the_checkpoint_write():
    clock, fetch = FakeClock(), ScriptedFetch()
    fetch.on(page_url(1), ok({"results": [item(1), item(2)]}))
    fetch.on(page_url(2), status(404))
    poller, journal, _ = journaled_poller(fetch, clock)
    summary = poller.poll(spec_with("page", limit=2))
    assert journal == ["acquire", "emit 2", "commit"]
    assert facts(summary) == SUMMARY_DEFAULTS | {
        "status": "failed", "pages_fetched": 1, "items_received": 2, "new_items": 2,
        "emitted": 2, "incomplete_reason": "a page could not be fetched", "checkpoint_version": 1,
        "error": f"GET {page_url(2)}: HTTP 404; HTTP 404 is not retryable",
    }  # fmt: skip


class FailingAfterFirstPage(ScriptedFetch):
    """Serves the script for page 1; any other request raises what ``error`` says (a Fetch bug)."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.url != page_url(1) and request.url != URL:
            self.requests.append(request)
            raise self.error
        return super().__call__(request)


@pytest.mark.parametrize(
    ("style", "first_page", "error", "retries"),
    [
        pytest.param("next_link", {"results": [item(1), item(2)], "links": {"next": "http://[oops"}}, "ValueError: Invalid IPv6 URL", 0, id="unusable-next-link"),
        pytest.param("page", {"results": [item(1), item(2)]}, "RuntimeError: fetch bug", 1, id="fetch-bug-on-page-2"),
    ],
)  # fmt: skip
def test_an_unexpected_error_mid_walk_emits_nothing_and_the_summary_says_what_was_read(
    style, first_page, error, retries
):
    # GIVEN a first page (answered after one 503 on the page walk) and then an unexpected error
    clock, fetch = FakeClock(), FailingAfterFirstPage(RuntimeError("fetch bug"))
    first_url = URL if style == "next_link" else page_url(1)
    fetch.on(first_url, *([status(503)] if retries else []), ok(first_page))
    poller, journal, emitted = journaled_poller(fetch, clock)
    # WHEN polled THEN nothing is emitted, the lease is released, and the pages read are counted
    summary = poller.poll(spec_with(style, limit=2))
    assert journal == ["acquire", "release"] and emitted == []
    assert facts(summary) == SUMMARY_DEFAULTS | {
        "status": "failed", "pages_fetched": 1, "items_received": 2, "new_items": 2,
        "http_retries": retries, "error": error,
    }  # fmt: skip
