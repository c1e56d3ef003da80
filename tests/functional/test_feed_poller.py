"""Feed poller against a real local HTTP server, DynamoDB in a moto server and, for the handler, Kinesis.

The HTTP server (``feed_server.FeedServer``) serves generated USGS-style GeoJSON and three paginated
measurement APIs, with ETag / Last-Modified / 304 and injected faults. Retry delays are a few
milliseconds here (``FAST_RETRY``); a Retry-After of one second is honoured for real.
"""

from __future__ import annotations

import gzip
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import orjson
import pytest
from feed_server import (
    CursorApi,
    Document,
    Fault,
    FeedServer,
    NextLinkApi,
    PageApi,
    Reply,
    measurement_spec,
    measurements,
)
from poller_helpers import (
    AtomicStore,
    CrashingEmitter,
    CrashingStore,
    FakeLambdaContext,
    KinesisEmitter,
    ListEmitter,
    read_stream,
)

from devkit.samples import usgs_document
from edge_lambdas.feed_poller import handler, local
from edge_lambdas.feed_poller.checkpoints import DynamoDbCheckpointStore, create_checkpoint_table
from edge_lambdas.feed_poller.settings import load_poller_settings
from sluice.core.contracts import Envelope, FeedItem
from sluice.core.errors import ConfigError
from sluice.edges.polling import (
    CheckpointStore,
    Emit,
    FeedPoller,
    FeedPollSummary,
    HttpRequest,
    PollerConfig,
    RetryPolicy,
    TransportError,
    urllib_fetch,
)
from sluice.parsing.feeds import (
    MAX_DOCUMENT_BYTES,
    USGS_EARTHQUAKES,
    FeedSpec,
    PaginationSpec,
    parse_feed_document,
)
from sluice.stream.envelopes import decode_envelopes, feed_event_id

FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05, max_retry_after=3.0)
USGS_PATH = "/earthquakes/feed/v1.0/summary/all_hour.geojson"


@pytest.fixture
def server() -> Iterator[FeedServer]:
    feed_server = FeedServer().start()
    try:
        yield feed_server
    finally:
        feed_server.stop()


@pytest.fixture
def dynamodb(aws_env: str) -> Any:
    return boto3.client("dynamodb")


@pytest.fixture
def store(dynamodb: Any) -> DynamoDbCheckpointStore:
    table = f"feed-checkpoints-{uuid.uuid4().hex[:8]}"
    create_checkpoint_table(dynamodb, table)
    return DynamoDbCheckpointStore(table, dynamodb)


def make_poller(
    store: CheckpointStore, emit: Emit, *, lease_seconds: float = 30.0, margin: float = 1.0
) -> FeedPoller:
    config = PollerConfig(
        lease_seconds=lease_seconds, lease_margin_seconds=margin, retry=FAST_RETRY
    )
    return FeedPoller(fetch=urllib_fetch, store=store, emit=emit, config=config)


def usgs_spec(url: str, **changes: Any) -> FeedSpec:
    return USGS_EARTHQUAKES.model_copy(update={"url": url, "timeout_seconds": 2.0, **changes})


def records(envelopes: list[Envelope]) -> list[Envelope]:
    return [e for e in envelopes if e.kind == "record"]


def dead_letters(envelopes: list[Envelope]) -> list[Envelope]:
    return [e for e in envelopes if e.kind == "dead_letter"]


def expected_event_ids(spec: FeedSpec, document: bytes) -> set[str]:
    """The ids a poll of ``document`` must emit, computed without the poller."""
    parsed = parse_feed_document(spec, document, stage="edge.feed")
    return {feed_event_id(i) for i in parsed.valid} | {
        d.dead_letter_id for d in parsed.dead_letters
    }


def revise(document: Document, index: int, **properties: Any) -> str:
    """Re-publish the USGS document with feature ``index`` revised (a later ``updated`` time)."""
    data = orjson.loads(document.body)
    feature = data["features"][index]
    feature["properties"]["updated"] += 60_000
    feature["properties"].update(properties)
    document.update(orjson.dumps(data))
    return str(feature["id"])


# --- conditional GET ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("validators", "conditional_header"),
    [
        pytest.param(("etag", "last_modified"), "if-none-match", id="etag-and-date"),
        pytest.param(("last_modified",), "if-modified-since", id="date-only"),
    ],
)
def test_first_poll_emits_every_item_and_an_unchanged_feed_is_a_cheap_304(
    server, store, validators, conditional_header
):
    # GIVEN a USGS-style feed of 20 earthquakes plus one feature without an id
    document = Document(usgs_document(20), validators=validators)
    spec = usgs_spec(server.route(USGS_PATH, document))
    emitter = ListEmitter()
    poller = make_poller(store, emitter)

    # WHEN it is polled for the first time
    first = poller.poll(spec)

    # THEN every item is emitted once and the bad feature travels as a dead letter
    emitted = emitter.take()
    assert first.status == "ok" and first.complete and first.new_items == 20
    assert {e.event_id for e in emitted} == expected_event_ids(spec, document.body)
    assert len(records(emitted)) == 20
    assert [e.payload["error_type"] for e in dead_letters(emitted)] == ["missing_field"]

    # WHEN it is polled again while the feed has not changed
    second = poller.poll(spec)

    # THEN the request was conditional, the server answered 304, and nothing was emitted
    last = server.requests_to(USGS_PATH)[-1]
    assert conditional_header in last.headers and last.status == 304
    assert second.status == "not_modified" and second.not_modified and second.emitted == 0
    assert emitter.take() == [] and emitter.calls == 1


def test_an_updated_item_is_re_emitted_alone_with_a_new_event_id(server, store):
    # GIVEN a feed that was polled once
    document = Document(usgs_document(10))
    spec = usgs_spec(server.route(USGS_PATH, document))
    emitter = ListEmitter()
    poller = make_poller(store, emitter)
    poller.poll(spec)
    first_ids = {e.payload["item_id"]: e.event_id for e in records(emitter.take())}

    # WHEN one earthquake is revised and the feed re-published (new ETag)
    revised_id = revise(document, 3, mag=4.2)
    summary = poller.poll(spec)

    # THEN only that item is emitted, with a new, deterministic event id; the dead letter is not
    # repeated either
    [envelope] = emitter.take()
    assert envelope.payload["item_id"] == revised_id and envelope.payload["fields"]["mag"] == 4.2
    assert envelope.event_id != first_ids[revised_id]
    assert envelope.event_id == feed_event_id(FeedItem.model_validate(envelope.payload))
    assert summary.new_items == 1 and summary.duplicates_skipped == 10


# --- pagination ----------------------------------------------------------------------------------


def paged_feed(server: FeedServer, style: str, items: list[dict[str, Any]], **api: Any):
    """A paginated measurement API of ``style`` on the server, and its FeedSpec."""
    if style == "page":
        path = "/openaq/v2/measurements"
        route: Any = PageApi(items, **api)
        pagination = PaginationSpec(style="page", limit=10)
        items_path = "results"
    elif style == "cursor":
        path = "/cursor/measurements"
        route = CursorApi(items, page_size=10, **api)
        pagination = PaginationSpec(style="cursor", cursor_path="meta.next_cursor")
        items_path = "data"
    else:
        path = "/linked/measurements"
        route = NextLinkApi(items, path, page_size=10, **api)
        pagination = PaginationSpec(style="next_link", next_link_path="links.next")
        items_path = "items"
    url = server.route(path, route)
    spec = measurement_spec(f"{style}_feed", url, pagination, items_path=items_path)
    return spec, path, route


@pytest.mark.parametrize(
    ("style", "count", "api", "pages"),
    [
        pytest.param("page", 45, {}, 5, id="page-short-last-page"),
        pytest.param("page", 40, {}, 4, id="page-stops-at-meta.found"),
        pytest.param("page", 40, {"report_found": False}, 5, id="page-empty-last-page"),
        pytest.param("cursor", 45, {}, 5, id="cursor"),
        pytest.param("next_link", 45, {}, 5, id="relative-next-link"),
    ],
)
def test_every_pagination_style_collects_all_pages(server, store, style, count, api, pages):
    # GIVEN a paginated API with `count` items, 10 per page
    items = measurements(count)
    spec, path, _ = paged_feed(server, style, items, **api)
    emitter = ListEmitter()

    # WHEN it is polled
    summary = make_poller(store, emitter).poll(spec)

    # THEN every item is emitted exactly once, after walking exactly the pages needed
    ids = [e.payload["item_id"] for e in emitter.take()]
    assert sorted(ids) == sorted(item["id"] for item in items)
    assert summary.pages_fetched == pages == len(server.requests_to(path))
    assert summary.complete and summary.status == "ok"


# --- faults and retries --------------------------------------------------------------------------


def test_transient_faults_are_retried_with_backoff_then_succeed(server, store):
    # GIVEN a feed whose server fails four times in a row: a 500, a 429 asking for one second,
    # a response slower than the timeout, a 503
    document = Document(usgs_document(10))
    spec = usgs_spec(server.route(USGS_PATH, document), timeout_seconds=0.3, max_retries=4)
    server.inject(
        USGS_PATH, Fault.error(500), Fault.rate_limited("1"), Fault.slow(1.0), Fault.error(503)
    )
    emitter = ListEmitter()

    # WHEN it is polled
    summary = make_poller(store, emitter).poll(spec)

    # THEN the poll succeeded after four retries, and waited as long as Retry-After asked
    assert summary.status == "ok" and summary.http_retries == 4 and summary.new_items == 10
    arrivals = [r.at for r in server.requests_to(USGS_PATH)]
    assert len(arrivals) == 5
    assert arrivals[2] - arrivals[1] >= 1.0  # the request after the 429
    assert arrivals[1] - arrivals[0] < 1.0  # the 500 was retried after a short backoff


def test_a_feed_failing_for_good_does_not_stop_the_other_feeds(server, store):
    # GIVEN three feeds: one keeps answering 503, one answers 404, one is healthy
    unavailable = usgs_spec(
        server.route("/unavailable", Document(usgs_document(3))), name="unavailable", max_retries=2
    )
    missing = usgs_spec(server.url("/missing"), name="missing")
    healthy = usgs_spec(server.route(USGS_PATH, Document(usgs_document(5))), name="healthy")
    server.inject("/unavailable", *[Fault.error(503)] * 3)
    emitter = ListEmitter()
    poller = make_poller(store, emitter)

    # WHEN all three are polled
    summaries = poller.poll_all([unavailable, missing, healthy])

    # THEN the 503 feed failed after its retry budget, the 404 one without retrying, the third
    # was polled, and the errors say what happened
    assert [s.status for s in summaries] == ["failed", "failed", "ok"]
    assert "HTTP 503" in str(summaries[0].error) and "gave up after 3 attempts" in str(
        summaries[0].error
    )
    assert "HTTP 404" in str(summaries[1].error) and "not retryable" in str(summaries[1].error)
    assert len(server.requests_to("/unavailable")) == 3 and len(server.requests_to("/missing")) == 1
    assert {e.payload.get("feed") for e in records(emitter.take())} == {"healthy"}

    # WHEN the failing feed recovers THEN the next poll takes it (its lease was released)
    assert poller.poll(unavailable).new_items == 3


def test_gzip_bodies_are_decoded_and_redirects_off_http_are_refused(server, store):
    # GIVEN a feed served gzip-compressed and another redirecting to a local file
    body = usgs_document(6)
    server.route(
        "/gzip",
        lambda request: Reply(
            200,
            gzip.compress(body),
            {"Content-Encoding": "gzip"} if "gzip" in request.headers["accept-encoding"] else {},
        ),
    )
    server.route("/evil", lambda request: Reply(302, b"", {"Location": "file:///etc/passwd"}))
    emitter = ListEmitter()
    poller = make_poller(store, emitter)

    # WHEN both are polled
    zipped = poller.poll(usgs_spec(server.url("/gzip"), name="zipped"))
    evil = poller.poll(usgs_spec(server.url("/evil"), name="evil"))

    # THEN the compressed feed was read, and the redirect was not followed nor retried
    assert zipped.status == "ok" and zipped.new_items == 6
    assert evil.status == "failed" and "HTTP 302" in str(evil.error)
    assert len(server.requests_to("/evil")) == 1 and len(records(emitter.take())) == 6


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        pytest.param("identity", b"[" + b"1," * 2_000 + b"1]", id="plain"),
        pytest.param("gzip", b"[" + b"1," * 2_000 + b"1]", id="gzip-inflating-over-the-limit"),
    ],
)
def test_a_body_over_the_limit_is_read_one_byte_over_never_more(server, encoding, body):
    # GIVEN a 4 KB body, plain or gzip-compressed (to far less than the limit)
    server.route(
        "/big",
        lambda request: Reply(
            200,
            gzip.compress(body) if encoding == "gzip" else body,
            {"Content-Encoding": "gzip"} if encoding == "gzip" else {},
        ),
    )
    # WHEN fetched with a 1,000-byte limit
    response = urllib_fetch(HttpRequest(server.url("/big"), {}, 2.0), max_bytes=1_000)
    # THEN one byte over the limit is kept (the feed parser refuses it as too large) and no more
    assert response.status == 200 and response.body == body[:1_001]


def test_an_invalid_gzip_body_is_a_transport_error(server):
    server.route(
        "/bad-gzip", lambda request: Reply(200, b"not gzip at all", {"Content-Encoding": "gzip"})
    )
    with pytest.raises(TransportError, match="invalid gzip body"):
        urllib_fetch(HttpRequest(server.url("/bad-gzip"), {}, 2.0))


def test_a_gzip_document_inflating_past_the_document_limit_is_a_too_large_dead_letter(
    server, store
):
    # GIVEN a small gzip body that inflates to one byte more than a feed document may have
    document = b'{"features": [' + b" " * (MAX_DOCUMENT_BYTES - 15) + b"]}"
    assert len(document) == MAX_DOCUMENT_BYTES + 1
    zipped = gzip.compress(document)
    server.route("/huge", lambda request: Reply(200, zipped, {"Content-Encoding": "gzip"}))
    emitter = ListEmitter()
    # WHEN polled
    summary = make_poller(store, emitter).poll(usgs_spec(server.url("/huge"), name="huge"))
    # THEN the parser refused the document as too large: one dead letter, holding its beginning
    (letter,) = dead_letters(emitter.take())
    assert summary.status == "ok" and summary.dead_letters_by_reason == {"too_large": 1}
    assert letter.payload["raw_size"] == MAX_DOCUMENT_BYTES + 1
    assert letter.payload["raw"].startswith('{"features": [   ')


# --- concurrency and crashes ---------------------------------------------------------------------


def test_two_concurrent_invocations_emit_each_item_exactly_once(server, store, dynamodb):
    # GIVEN two pollers, as in two Lambda containers, with their own DynamoDB clients, and a feed
    # whose first response takes half a second, so the two polls overlap
    document = Document(usgs_document(30))
    spec = usgs_spec(server.route(USGS_PATH, document))
    emitter = ListEmitter()
    atomic = threading.Lock()  # see AtomicStore: what DynamoDB guarantees and moto does not
    pollers = [
        make_poller(
            AtomicStore(
                DynamoDbCheckpointStore(store.table_name, boto3.client("dynamodb")), atomic
            ),
            emitter,
        )
        for _ in range(2)
    ]

    def poll_concurrently() -> list[str]:
        server.inject(USGS_PATH, Fault.slow(0.5))
        barrier = threading.Barrier(2)
        summaries: list[FeedPollSummary] = []

        def invoke(poller: FeedPoller) -> None:
            barrier.wait()
            summaries.append(poller.poll(spec))

        threads = [threading.Thread(target=invoke, args=(p,)) for p in pollers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert all(s.error is None for s in summaries), [s.as_dict() for s in summaries]
        return sorted(s.status for s in summaries)

    # WHEN both poll at the same time
    statuses = poll_concurrently()

    # THEN one held the lease and emitted everything, the other emitted nothing
    assert statuses == ["lease_busy", "ok"]
    ids = [e.event_id for e in emitter.take()]
    assert len(ids) == len(set(ids)) and set(ids) == expected_event_ids(spec, document.body)

    # WHEN an item is revised and both poll at the same time again
    revised_id = revise(document, 7)
    statuses = poll_concurrently()

    # THEN only the revised item is emitted, once
    assert statuses == ["lease_busy", "ok"]
    assert [e.payload["item_id"] for e in emitter.take()] == [revised_id]


@pytest.mark.parametrize("crash", ["before_checkpoint_write", "while_emitting"])
def test_a_crash_after_emitting_re_emits_the_same_event_ids_never_new_ones(server, store, crash):
    # GIVEN a feed, and a poll that dies after (some of) its envelopes reached the stream but
    # before its checkpoint was written: killed before the write (its lease left to expire), or
    # failing in the middle of emitting (its lease released)
    document = Document(usgs_document(15))
    spec = usgs_spec(server.route(USGS_PATH, document))
    emitter = CrashingEmitter(deliver=5) if crash == "while_emitting" else ListEmitter()
    crashing_store = CrashingStore(store) if crash == "before_checkpoint_write" else store
    poller = make_poller(crashing_store, emitter, lease_seconds=1.0, margin=0.2)
    expected = expected_event_ids(spec, document.body)

    # WHEN it is polled and crashes
    crashed = poller.poll(spec)
    delivered = {e.event_id for e in emitter.take()}
    assert crashed.status == "failed" and "simulated crash" in str(crashed.error)
    assert delivered and delivered <= expected

    # THEN while a dead holder's lease lasts, nobody emits
    if crash == "before_checkpoint_write":
        assert poller.poll(spec).status == "lease_busy" and emitter.take() == []
        time.sleep(1.1)  # the lease expires

    # WHEN the next poll runs
    recovered = poller.poll(spec)

    # THEN it re-emits the same event ids, every one of the feed, and no new one
    re_emitted = [e.event_id for e in emitter.take()]
    assert recovered.status == "ok"
    assert set(re_emitted) == expected and len(re_emitted) == len(expected)
    assert delivered <= set(re_emitted)

    # AND after that the feed is checkpointed: the next poll is a 304
    assert poller.poll(spec).status == "not_modified" and emitter.take() == []


# --- dead letters --------------------------------------------------------------------------------


def test_an_invalid_json_page_is_a_dead_letter_and_a_page_walk_goes_on(server, store):
    # GIVEN a page/limit API whose second page is broken JSON
    items = measurements(45)
    spec, _, api = paged_feed(server, "page", items, corrupt_pages={2})
    emitter = ListEmitter()
    poller = make_poller(store, emitter)

    # WHEN it is polled
    summary = poller.poll(spec)

    # THEN the broken page is one invalid_json dead letter, every other page's items are emitted,
    # and the poll is marked incomplete
    emitted = emitter.take()
    assert [e.payload["error_type"] for e in dead_letters(emitted)] == ["invalid_json"]
    assert dead_letters(emitted)[0].payload["stage"] == "edge.feed"
    assert sorted(e.payload["item_id"] for e in records(emitted)) == sorted(
        item["id"] for item in items[:10] + items[20:]
    )
    assert summary.pages_fetched == 5 and not summary.complete and summary.incomplete_reason

    # WHEN the page is repaired THEN the next poll emits exactly its items
    api.corrupt_pages.clear()
    poller.poll(spec)
    assert sorted(e.payload["item_id"] for e in emitter.take()) == [i["id"] for i in items[10:20]]


def test_an_invalid_json_page_ends_a_cursor_walk_with_a_dead_letter(server, store):
    # GIVEN a cursor API whose third page is broken JSON (so the next cursor is unknown)
    items = measurements(45)
    spec, path, _ = paged_feed(server, "cursor", items, corrupt_pages={3})
    emitter = ListEmitter()

    # WHEN it is polled
    summary = make_poller(store, emitter).poll(spec)

    # THEN the first two pages are emitted, the third is a dead letter, and the walk stopped there
    emitted = emitter.take()
    assert [e.payload["item_id"] for e in records(emitted)] == [i["id"] for i in items[:20]]
    assert [e.payload["error_type"] for e in dead_letters(emitted)] == ["invalid_json"]
    assert summary.pages_fetched == 3 == len(server.requests_to(path))
    assert summary.status == "ok" and not summary.complete


def test_bad_items_become_dead_letters_on_the_same_stream(server, store):
    # GIVEN a feed with good earthquakes and three bad ones
    data = orjson.loads(usgs_document(4))
    data["features"] = data["features"][:4]
    no_time, bad_lat = orjson.loads(orjson.dumps(data["features"][:2]))
    no_time["id"], no_time["properties"]["time"] = "no-time", "soon"
    bad_lat["id"], bad_lat["geometry"]["coordinates"][1] = "bad-lat", 500
    data["features"] += [no_time, bad_lat, "not an object"]
    document = Document(orjson.dumps(data))
    spec = usgs_spec(server.route(USGS_PATH, document))
    emitter = ListEmitter()
    poller = make_poller(store, emitter)

    # WHEN it is polled
    summary = poller.poll(spec)

    # THEN the good items are records and each bad one a dead letter of the feed source, with its
    # reason and raw item
    emitted = emitter.take()
    assert len(records(emitted)) == 4
    letters = {e.payload["error_type"]: e for e in dead_letters(emitted)}
    assert set(letters) == {"invalid_timestamp", "schema_violation"}
    assert summary.dead_letters_by_reason == {"invalid_timestamp": 1, "schema_violation": 2}
    assert all(
        e.source == "feed" and e.event_id == e.payload["dead_letter_id"] for e in emitted[4:]
    )
    assert "soon" in letters["invalid_timestamp"].payload["raw"]

    # WHEN the feed changes elsewhere THEN the same bad items are not dead-lettered again
    revise(document, 0)
    poller.poll(spec)
    assert dead_letters(emitter.take()) == []


# --- the Lambda handler and the local command ------------------------------------------------------


@pytest.fixture
def poller_env(server, store, monkeypatch) -> dict[str, Any]:
    """Settings for the handler: two feeds on the local server, the moto checkpoint table."""
    usgs = Document(usgs_document(12))
    paged_spec, _, _ = paged_feed(server, "page", measurements(25))
    feeds = [usgs_spec(server.route(USGS_PATH, usgs)), paged_spec]
    monkeypatch.setenv("SLUICE_FEEDS", orjson.dumps([f.model_dump() for f in feeds]).decode())
    monkeypatch.setenv("SLUICE_CHECKPOINT_TABLE", store.table_name)
    monkeypatch.setenv("SLUICE_STREAM_NAME", "sluice-events-test")
    monkeypatch.setenv("SLUICE_LEASE_SECONDS", "120")
    monkeypatch.setenv("SLUICE_HTTP_RETRY_BASE_SECONDS", "0.01")
    monkeypatch.setattr(handler, "_runtime", None)  # a fresh cold start
    return {"feeds": feeds, "usgs": usgs}


def test_lambda_handler_polls_the_configured_feeds_into_kinesis(poller_env, monkeypatch, capsys):
    # GIVEN a Kinesis stream in moto and the handler's emitter writing to it
    kinesis = boto3.client("kinesis")
    kinesis.create_stream(StreamName="sluice-events-test", ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName="sluice-events-test")
    monkeypatch.setattr(
        handler, "build_emitter", lambda settings: KinesisEmitter(kinesis, settings.stream_name)
    )

    # WHEN EventBridge Scheduler invokes the function
    result = handler.lambda_handler({}, FakeLambdaContext())

    # THEN both feeds were polled and every envelope is in the stream, decodable, ids unique
    assert result["failed"] == 0
    assert [(f["feed"], f["new_items"]) for f in result["feeds"]] == [
        ("usgs_earthquakes", 12),
        ("page_feed", 25),
    ]
    decoded = decode_envelopes(read_stream(kinesis, "sluice-events-test"))
    assert decoded.dead_letters == [] and len(decoded.valid) == 12 + 1 + 25
    assert len({e.event_id for e in decoded.valid}) == len(decoded.valid)

    # AND per-feed EMF metrics were printed in the Sluice namespace
    blobs = [
        orjson.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line
    ]
    per_feed = {b["feed"]: b for b in blobs if "feed" in b and "reason" not in b}
    # (Powertools writes every EMF value as a list of observations)
    assert per_feed["usgs_earthquakes"]["emitted"] == [13] and per_feed["page_feed"]["emitted"] == [
        25
    ]
    assert blobs[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Sluice"

    # WHEN invoked again for one feed only THEN that feed is a 304
    again = handler.lambda_handler({"feeds": ["usgs_earthquakes"]}, FakeLambdaContext())
    assert [(f["feed"], f["status"]) for f in again["feeds"]] == [
        ("usgs_earthquakes", "not_modified")
    ]


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_lambda_handler_refuses_invalid_settings_and_unknown_feeds(poller_env, monkeypatch):
    emitter = ListEmitter()
    monkeypatch.setattr(handler, "build_emitter", lambda settings: emitter)
    # GIVEN a schedule naming a feed that is not configured THEN the invocation fails, naming it
    with pytest.raises(ConfigError, match="unknown feeds"):
        handler.lambda_handler({"feeds": ["nope"]}, FakeLambdaContext())

    # GIVEN a lease margin larger than the lease THEN the cold start fails, naming the setting
    monkeypatch.setattr(handler, "_runtime", None)
    monkeypatch.setenv("SLUICE_LEASE_MARGIN_SECONDS", "500")
    with pytest.raises(ConfigError, match="lease_margin_seconds"):
        handler.lambda_handler({}, FakeLambdaContext())
    assert emitter.calls == 0


def test_the_lease_margin_has_one_default_for_the_lambda_and_the_poller(poller_env):
    # GIVEN the settings without SLUICE_LEASE_MARGIN_SECONDS THEN the Lambda's margin is the poller's
    settings = load_poller_settings()
    assert settings.lease_margin_seconds == PollerConfig().lease_margin_seconds == 30.0
    assert settings.poller_config().lease_margin_seconds == 30.0


def test_local_main_polls_once_and_prints_a_summary_per_feed(poller_env, tmp_path, capsys):
    # GIVEN the same settings, envelopes to a file, checkpoints in DynamoDB
    out = tmp_path / "envelopes.ndjson"

    # WHEN the command runs twice
    first = local.main(["--out", str(out)])
    first_lines = capsys.readouterr().out.splitlines()
    second = local.main(["--out", str(out), "--feed", "usgs_earthquakes"])
    second_lines = capsys.readouterr().out.splitlines()

    # THEN it printed one JSON summary per feed, wrote the envelopes, and the second run was a 304
    assert first == second == 0
    summaries = [orjson.loads(line) for line in first_lines]
    assert [(s["feed"], s["new_items"], s["pages_fetched"]) for s in summaries] == [
        ("usgs_earthquakes", 12, 1),
        ("page_feed", 25, 3),
    ]
    assert {"duplicates_skipped", "not_modified", "error"} <= set(summaries[0])
    assert [orjson.loads(line)["not_modified"] for line in second_lines] == [True]
    assert len(out.read_bytes().splitlines()) == 12 + 1 + 25


def test_local_main_reports_a_failed_feed_with_exit_status_1(poller_env, server, capsys):
    # GIVEN the USGS feed answering 400
    server.inject(USGS_PATH, Fault.error(400))
    # WHEN the command runs with throw-away checkpoints
    status = local.main(["--checkpoints", "memory", "--out", "-"])
    captured = capsys.readouterr()
    # THEN the other feed's envelopes went to stdout, the summaries to stderr, and it exits 1
    summaries = [orjson.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    assert status == 1
    assert [(s["feed"], s["status"]) for s in summaries] == [
        ("usgs_earthquakes", "failed"),
        ("page_feed", "ok"),
    ]
    assert len(captured.out.splitlines()) == 25
