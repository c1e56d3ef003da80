"""Feed API keys against a real local HTTP server (and Secrets Manager on moto server): the key
reaches the API, in its header or query parameter, and nothing the poller reports holds it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import boto3
import orjson
import pytest
from feed_server import Document, Fault, FeedServer
from poller_helpers import ListEmitter

from devkit.samples import usgs_document
from edge_lambdas.feed_poller.handler import build_secret_lookup
from sluice.edges.polling import FeedPoller, InMemoryCheckpointStore, PollerConfig, RetryPolicy
from sluice.edges.polling import urllib_fetch as real_fetch
from sluice.parsing.feeds import USGS_EARTHQUAKES, ApiKeySpec, FeedSpec

KEY = "k3y-Sup3r-s3cret"
PATH = "/feed.geojson"


@pytest.fixture
def server() -> Iterator[FeedServer]:
    feed_server = FeedServer().start()
    try:
        yield feed_server
    finally:
        feed_server.stop()


def spec(server: FeedServer, api_key: ApiKeySpec) -> FeedSpec:
    url = server.route(PATH, Document(usgs_document(3)))
    return USGS_EARTHQUAKES.model_copy(
        update={"url": url + "?format=geojson", "api_key": api_key, "timeout_seconds": 2.0}
    )


def poller(emit: ListEmitter, store: InMemoryCheckpointStore, **kw: Any) -> FeedPoller:
    config = PollerConfig(
        retry=RetryPolicy(base_delay=0.01, max_delay=0.02), lease_seconds=30, lease_margin_seconds=1
    )
    return FeedPoller(fetch=real_fetch, store=store, emit=emit, config=config, **kw)


@pytest.mark.parametrize(
    "api_key",
    [
        ApiKeySpec(env="TEST_FEED_KEY", query_param="appid"),
        ApiKeySpec(env="TEST_FEED_KEY", header="Authorization", prefix="Bearer "),
    ],
    ids=["query-param", "header"],
)
def test_the_key_reaches_the_api_and_nothing_reported_holds_it(
    server: FeedServer,
    api_key: ApiKeySpec,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a feed whose key is in the environment
    monkeypatch.setenv("TEST_FEED_KEY", KEY)
    emit, store = ListEmitter(), InMemoryCheckpointStore()
    feed = spec(server, api_key)
    caplog.set_level(logging.DEBUG)
    # WHEN it is polled, once fine and once against a failing API
    summary = poller(emit, store).poll(feed)
    server.inject(PATH, *[Fault.error(500)] * 5)
    failed = poller(emit, store).poll(feed.model_copy(update={"url": feed.url + "&again=1"}))
    # THEN the API saw the key, in the configured place
    (first, *_) = server.requests_to(PATH)
    if api_key.query_param:
        assert first.query == {"format": "geojson", "appid": KEY}
    else:
        assert first.headers["authorization"] == f"Bearer {KEY}"
    assert summary.status == "ok" and summary.new_items == 3, summary
    # and no envelope, checkpoint, summary or log line holds it
    assert failed.status == "failed" and failed.error
    reported = [
        *(e.model_dump_json() for e in emit.envelopes),
        repr(store.acquire(feed.name, "x", 0, 1)),
        repr(summary),
        repr(failed),
        *(r.getMessage() + repr(r.__dict__) for r in caplog.records),
    ]
    assert not [text for text in reported if KEY in text]


def test_a_missing_key_fails_the_poll_naming_the_variable(
    server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_FEED_KEY", raising=False)
    feed = spec(server, ApiKeySpec(env="TEST_FEED_KEY", header="X-API-Key"))
    summary = poller(ListEmitter(), InMemoryCheckpointStore()).poll(feed)
    assert summary.status == "failed"
    assert summary.error == "the API key variable TEST_FEED_KEY is not set"
    assert server.requests_to(PATH) == []  # nothing sent without the key


def test_the_key_from_secrets_manager(server: FeedServer, aws_env: str) -> None:
    # GIVEN the key in a JSON secret of (moto's) Secrets Manager, read by the Lambda's lookup
    boto3.client("secretsmanager").create_secret(
        Name="feeds/test", SecretString=orjson.dumps({"openaq": KEY}).decode()
    )
    feed = spec(server, ApiKeySpec(secret_id="feeds/test", secret_key="openaq", header="X-API-Key"))
    emit = ListEmitter()
    # WHEN polled THEN the API got the secret's member
    summary = poller(emit, InMemoryCheckpointStore(), secrets=build_secret_lookup()).poll(feed)
    assert summary.status == "ok", summary
    assert server.requests_to(PATH)[0].headers["x-api-key"] == KEY
    # a secret that does not exist fails that feed, naming the secret and the error class only
    missing = feed.model_copy(
        update={"api_key": ApiKeySpec(secret_id="feeds/none", header="X-API-Key")}
    )
    failed = poller(emit, InMemoryCheckpointStore(), secrets=build_secret_lookup()).poll(missing)
    assert failed.error == "cannot read the secret feeds/none: ResourceNotFoundException"
