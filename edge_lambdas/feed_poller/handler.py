"""Feed poller Lambda: polls the configured JSON APIs once per EventBridge Scheduler invocation.

In: a Scheduler event. Its input may name the feeds to poll, ``{"feeds": ["usgs_earthquakes"]}``
(so feeds with different rates can have different schedules); without it every configured feed
(``SLUICE_FEEDS``) is polled, one after the other.
Out: ``Envelope``s of new feed items and of dead letters, written to the Kinesis stream; per feed a
checkpoint in DynamoDB; per feed a summary (returned, logged) and EMF metrics in namespace ``Sluice``.
Dead letters: see ``sluice.edges.polling`` (pages that are not JSON, items the contract refuses;
``sluice.edges.polling.pages.read_page``).

All the logic (conditional GETs, pages, retries, de-duplication, leases, the delivery guarantee) is
in ``sluice.edges.polling`` (the poll itself and its guarantee in ``sluice.edges.polling.poller``);
this module only wires settings, DynamoDB, Kinesis and Powertools to it.
A feed that fails is logged and counted (``poll_failed``) but does not fail the invocation: a
failed invocation would only be retried by Lambda, re-polling every feed, while the next scheduled
poll retries the failed feed anyway.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Sequence
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import utils as logging_utils
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from edge_lambdas.feed_poller.settings import FeedPollerSettings, load_poller_settings
from sluice.core.contracts import Envelope, correlation_id
from sluice.core.errors import ConfigError
from sluice.edges.polling import (
    CheckpointStore,
    Emit,
    FeedPoller,
    FeedPollSummary,
    Fetch,
    SecretLookup,
    urllib_fetch,
)
from sluice.parsing.feeds import FeedSpec

__all__ = ["build_emitter", "build_poller", "lambda_handler", "select_feeds"]

SERVICE = "feed_poller"
NAMESPACE = "Sluice"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)
if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
    # The core logs retries through the standard library; give those records the same JSON format.
    # Only inside Lambda: it detaches the "sluice" loggers from the root logger, which a test
    # process or the local command must keep.
    logging_utils.copy_config_to_registered_loggers(source_logger=logger, include={"sluice"})


class PollRequest(BaseModel):
    """The part of the invocation event the poller reads; anything else is ignored."""

    model_config = ConfigDict(extra="ignore")

    feeds: list[str] | None = None


def select_feeds(configured: Sequence[FeedSpec], names: Sequence[str] | None) -> list[FeedSpec]:
    """The configured feeds named in ``names`` (all when ``None``); an unknown name is a ``ConfigError``."""
    if names is None:
        return list(configured)
    by_name = {feed.name: feed for feed in configured}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ConfigError(f"unknown feeds {unknown}; configured: {sorted(by_name)}")
    return [by_name[name] for name in names]


def build_emitter(settings: FeedPollerSettings) -> Emit:
    """The edges' shared Kinesis publisher, configured like the other edges (``EdgeSettings``:
    aggregation, PutRecords retries, dead-letter destination), writing to ``settings.stream_name``.

    Imported lazily so that the poller, its tests and ``local`` (with ``--out``) work without it.
    """
    try:
        publisher_module = importlib.import_module("edge_lambdas.shared.publisher")
        edge_settings_module = importlib.import_module("edge_lambdas.shared.settings")
    except ImportError as err:
        raise ConfigError(
            "the edges' Kinesis publisher (edge_lambdas.shared.publisher) is not available: "
            "deploy it with the poller, or inject an emitter"
        ) from err
    edge_settings = edge_settings_module.load_settings(edge_settings_module.EdgeSettings)
    edge_settings = edge_settings.model_copy(update={"stream_name": settings.stream_name})
    publisher = publisher_module.KinesisPublisher.from_settings(edge_settings, logger=logger)

    def emit(envelopes: list[Envelope]) -> None:
        # publish() returns only once every envelope is on the stream or in the dead-letter
        # destination (else it raises): exactly what the poller needs before its checkpoint write.
        report = publisher.publish(envelopes, correlation_id(logger.get_correlation_id()))
        failed = getattr(report, "failed_to_dead_letter", 0) + getattr(report, "too_large", 0)
        if failed:
            logger.warning("envelopes dead-lettered by the publisher", extra={"count": failed})

    return emit


def build_store(settings: FeedPollerSettings) -> CheckpointStore:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import NoRegionError

    from edge_lambdas.feed_poller.checkpoints import DynamoDbCheckpointStore

    # Short timeouts and standard retries: a slow DynamoDB call must not eat the lease margin.
    config = Config(connect_timeout=3, read_timeout=5, retries={"mode": "standard"})
    try:
        client = boto3.client("dynamodb", config=config)
    except NoRegionError:  # only outside Lambda, which always sets AWS_REGION
        raise ConfigError("no AWS region: set AWS_REGION or AWS_DEFAULT_REGION") from None
    return DynamoDbCheckpointStore(settings.checkpoint_table, client)


def build_secret_lookup() -> SecretLookup:
    """Secrets Manager's ``GetSecretValue`` (``SecretString``), one client per container, each
    secret read once per container (a rotated key is picked up by the next cold start)."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "secretsmanager",
        config=Config(connect_timeout=3, read_timeout=5, retries={"mode": "standard"}),
    )
    cache: dict[str, str] = {}

    def lookup(secret_id: str) -> str:
        if secret_id not in cache:
            cache[secret_id] = str(client.get_secret_value(SecretId=secret_id)["SecretString"])
        return cache[secret_id]

    return lookup


def build_poller(
    settings: FeedPollerSettings,
    *,
    emit: Emit | None = None,
    store: CheckpointStore | None = None,
    fetch: Fetch | None = None,
    secrets: SecretLookup | None = None,
) -> FeedPoller:
    """A ``FeedPoller`` wired to production I/O unless ``emit``, ``store``, ``fetch`` or
    ``secrets`` is given (Secrets Manager only when a feed's API key is a secret)."""
    uses_secrets = any(f.api_key is not None and f.api_key.secret_id for f in settings.feeds)
    return FeedPoller(
        fetch=fetch or urllib_fetch,
        store=store or build_store(settings),
        emit=emit or build_emitter(settings),
        config=settings.poller_config(),
        # The lease owner names the log stream of the holder, so a busy lease can be traced.
        owner_prefix=os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME"),
        secrets=secrets or (build_secret_lookup() if uses_secrets else None),
    )


_runtime: tuple[FeedPollerSettings, FeedPoller] | None = None


def runtime() -> tuple[FeedPollerSettings, FeedPoller]:
    """Settings and poller, built once per container (the first invocation is the cold start)."""
    global _runtime
    if _runtime is None:
        settings = load_poller_settings()
        _runtime = settings, build_poller(settings)
    return _runtime


def publish_metrics(summary: FeedPollSummary) -> None:
    """Per-feed counters (dimension ``feed``; dead letters also by ``reason``) in one EMF blob each."""
    feed_metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    feed_metrics.add_dimension(name="feed", value=summary.feed)
    counts = {
        "pages_fetched": summary.pages_fetched,
        "received": summary.items_received,
        "emitted": summary.emitted,
        "duplicates_skipped": summary.duplicates_skipped,
        "dead_lettered": summary.dead_letters,
        "http_retries": summary.http_retries,
        "checkpoint_evicted": summary.checkpoint_evicted,
        "not_modified": int(summary.status == "not_modified"),
        "lease_busy": int(summary.status == "lease_busy"),
        "poll_failed": int(summary.status == "failed"),
        "poll_skipped": int(summary.status == "skipped"),
        "poll_incomplete": int(summary.incomplete_reason is not None),
    }
    for name, value in counts.items():
        feed_metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    feed_metrics.add_metric(
        name="poll_duration", unit=MetricUnit.Seconds, value=summary.duration_seconds
    )
    feed_metrics.flush_metrics()
    for reason, count in summary.dead_letters_by_reason.items():
        by_reason = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
        by_reason.add_dimension(name="feed", value=summary.feed)
        by_reason.add_dimension(name="reason", value=reason)
        by_reason.add_metric(name="dead_lettered", unit=MetricUnit.Count, value=count)
        by_reason.flush_metrics()


def log_summary(summary: FeedPollSummary) -> None:
    if summary.status == "failed":
        logger.error("feed poll failed", extra={"summary": summary.as_dict()})
    elif summary.status in ("lease_busy", "skipped") or summary.incomplete_reason:
        logger.warning("feed poll incomplete", extra={"summary": summary.as_dict()})
    else:
        logger.info("feed polled", extra={"summary": summary.as_dict()})


@tracer.capture_method
def poll_feed(poller: FeedPoller, spec: FeedSpec, deadline: float) -> FeedPollSummary:
    tracer.put_annotation(key="feed", value=spec.name)
    summary = poller.poll(spec, deadline=deadline)
    tracer.put_annotation(key="status", value=summary.status)
    return summary


@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any] | None, context: LambdaContext) -> dict[str, Any]:
    # One correlation id per run (its request id): the rows of every item it emits, and its logs.
    logger.set_correlation_id(correlation_id(context.aws_request_id))
    settings, poller = runtime()
    request = PollRequest.model_validate(event or {})
    feeds = select_feeds(settings.feeds, request.feeds)
    remaining = context.get_remaining_time_in_millis() / 1000
    if remaining >= settings.lease_seconds:
        logger.warning(
            "the Lambda timeout is not below lease_seconds: a lease could expire while its "
            "holder still runs, and two invocations could emit the same items",
            extra={"remaining_seconds": remaining, "lease_seconds": settings.lease_seconds},
        )
    deadline = time.monotonic() + remaining - settings.time_reserve_seconds
    summaries = []
    for spec in feeds:
        summary = poll_feed(poller, spec, deadline)
        log_summary(summary)
        publish_metrics(summary)
        summaries.append(summary)
    failed = sum(summary.status == "failed" for summary in summaries)
    metrics.add_metric(name="feeds_polled", unit=MetricUnit.Count, value=len(summaries))
    metrics.add_metric(name="feeds_failed", unit=MetricUnit.Count, value=failed)
    return {"feeds": [summary.as_dict() for summary in summaries], "failed": failed}
