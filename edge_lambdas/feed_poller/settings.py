"""Settings of the feed poller Lambda, validated once per container (at cold start).

Every field can be set by an environment variable ``SLUICE_<FIELD>`` (the feeds as JSON in
``SLUICE_FEEDS``, inherited from ``CoreSettings``). An invalid value stops the cold start with a
``ConfigError`` naming the setting, instead of failing feed by feed.

The defaults shared with the poller (lease, HTTP retries, seen-state bounds) are the core's
(``sluice.edges.polling``'s ``DEFAULT_*``), never repeated here.

HTTP retry settings are named ``http_retry_*``: the edges' shared ``EdgeSettings`` already uses
``SLUICE_RETRY_*`` for Kinesis PutRecords retries, and both are read in this Lambda's environment.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from sluice.core.config import CoreSettings, build_settings
from sluice.edges.polling import (
    DEFAULT_CHECKPOINT_MAX_BYTES,
    DEFAULT_LEASE_MARGIN_SECONDS,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_RETRY_BASE_DELAY,
    DEFAULT_RETRY_MAX_DELAY,
    DEFAULT_SEEN_MAX_AGE_SECONDS,
    DEFAULT_SEEN_MAX_DEAD_LETTERS,
    DEFAULT_SEEN_MAX_ITEMS,
    DEFAULT_USER_AGENT,
    CheckpointBounds,
    PollerConfig,
    RetryPolicy,
)

__all__ = ["FeedPollerSettings", "load_poller_settings"]

DYNAMODB_ITEM_LIMIT = 400 * 1024


class FeedPollerSettings(CoreSettings):
    """What the feed poller needs beyond the core settings (``feeds`` comes from there)."""

    stream_name: str = Field(
        default="sluice-events",
        min_length=1,
        description="Kinesis stream the envelopes (items and dead letters) are written to.",
    )
    checkpoint_table: str = Field(
        default="sluice-feed-checkpoints",
        min_length=3,
        max_length=255,
        description="DynamoDB table of feed checkpoints and leases (partition key 'feed', string).",
    )
    lease_seconds: float = Field(
        default=DEFAULT_LEASE_SECONDS,
        ge=5,
        le=3_600,
        description="How long one poll may hold a feed's lease. Must exceed the Lambda timeout, so "
        "a lease only expires once its holder is dead.",
    )
    lease_margin_seconds: float = Field(
        default=DEFAULT_LEASE_MARGIN_SECONDS,
        ge=0,
        description="Part of the lease kept for emitting and writing the checkpoint: no page is "
        "fetched once less than this remains, and nothing emitted once less than half of it "
        "remains.",
    )
    time_reserve_seconds: float = Field(
        default=5.0,
        ge=0,
        description="Lambda time kept back at the end of an invocation for logging and metrics; a "
        "feed is not started when less than its timeout plus this remains.",
    )
    user_agent: str = Field(
        default=DEFAULT_USER_AGENT,
        min_length=1,
        description="User-Agent of every request; API operators ask for one that identifies you.",
    )
    http_retry_base_seconds: float = Field(
        default=DEFAULT_RETRY_BASE_DELAY,
        gt=0,
        description="First HTTP retry delay; doubles on each retry (with jitter).",
    )
    http_retry_max_seconds: float = Field(
        default=DEFAULT_RETRY_MAX_DELAY, gt=0, description="Upper bound of one HTTP retry delay."
    )
    http_retry_after_max_seconds: float = Field(
        default=DEFAULT_MAX_RETRY_AFTER,
        ge=0,
        description="Longest Retry-After honoured; a longer one fails the poll (the next scheduled "
        "poll tries again) rather than sleeping through the Lambda's time.",
    )
    seen_max_items: int = Field(
        default=DEFAULT_SEEN_MAX_ITEMS,
        ge=100,
        description="Most (item id, updated time) pairs kept per feed for de-duplication. Must "
        "exceed the number of item versions the feed shows at once, or evicted ones are re-emitted.",
    )
    seen_max_dead_letters: int = Field(
        default=DEFAULT_SEEN_MAX_DEAD_LETTERS,
        ge=0,
        description="Most dead-letter ids kept per feed for de-duplication.",
    )
    seen_max_age_seconds: int = Field(
        default=DEFAULT_SEEN_MAX_AGE_SECONDS,
        ge=60,
        description="A seen entry not observed in the feed for this long is dropped.",
    )
    checkpoint_max_bytes: int = Field(
        default=DEFAULT_CHECKPOINT_MAX_BYTES,
        ge=10_000,
        le=DYNAMODB_ITEM_LIMIT - 20 * 1024,
        description="Largest compressed seen-state per checkpoint item (DynamoDB items are at "
        "most 400 KB; 20 KB is kept for the other attributes).",
    )

    @model_validator(mode="after")
    def _check_poller(self) -> FeedPollerSettings:
        if self.lease_margin_seconds >= self.lease_seconds:
            raise ValueError("lease_margin_seconds must be below lease_seconds")
        names = [feed.name for feed in self.feeds]
        if len(set(names)) != len(names):
            raise ValueError(f"feed names must be unique: {names}")
        for feed in self.feeds:
            scheme = urlsplit(feed.url or "").scheme
            if scheme not in ("http", "https"):
                raise ValueError(f"feed {feed.name!r} needs an http(s) url, got {feed.url!r}")
        return self

    def poller_config(self) -> PollerConfig:
        return PollerConfig(
            user_agent=self.user_agent,
            lease_seconds=self.lease_seconds,
            lease_margin_seconds=self.lease_margin_seconds,
            retry=RetryPolicy(
                base_delay=self.http_retry_base_seconds,
                max_delay=self.http_retry_max_seconds,
                max_retry_after=self.http_retry_after_max_seconds,
            ),
            bounds=CheckpointBounds(
                max_items=self.seen_max_items,
                max_dead_letters=self.seen_max_dead_letters,
                max_age_seconds=self.seen_max_age_seconds,
                max_bytes=self.checkpoint_max_bytes,
            ),
            horizon=self.time_horizon(),
            max_dead_letters=self.max_dead_letters,
        )


def load_poller_settings(**overrides: Any) -> FeedPollerSettings:
    """Settings from the environment and ``overrides``; any problem is one ``ConfigError``."""
    return build_settings(FeedPollerSettings, overrides, prefix="invalid feed poller configuration")
