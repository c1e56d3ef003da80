"""The settings of a Kinesis read, validated at construction.

In: keyword values (the Beam job passes them to ``ReadFromKinesis(**settings)``).
Out: ``KinesisReadSettings``: the stream, where to start, call sizes and pacing, retries, shard
discovery, the watermark margin and the client's timeouts and region. Invalid values raise
pydantic's ``ValidationError`` (``ReadFromKinesis`` turns it into ``ConfigError``).

Dead letters: none; these are settings.

Why a model of its own: the reader (``sluice.stream.kinesis.reader``), the client a runtime makes
for it, and the runtime's source all read the same values, so they are checked once, in one place.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sluice.stream.kinesis.positions import StartPosition

__all__ = ["DEFAULT_POLL_INTERVAL_SECONDS", "MAX_RECORDS_PER_CALL", "KinesisReadSettings"]


MAX_RECORDS_PER_CALL = 10_000
"""Kinesis' GetRecords limit: the default and the largest value of ``max_records_per_call``."""
DEFAULT_POLL_INTERVAL_SECONDS = 0.2
"""Default wait between polls of a caught-up shard."""


class KinesisReadSettings(BaseModel):
    """Everything a Kinesis read needs (``ReadFromKinesis``'s keyword arguments); invalid values stop
    the pipeline at construction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stream_name: str = Field(
        min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_.-]+$", description="Stream to read."
    )
    start: StartPosition = Field(default_factory=StartPosition, description="Where to start.")
    max_records_per_call: int = Field(
        default=MAX_RECORDS_PER_CALL,
        ge=1,
        le=MAX_RECORDS_PER_CALL,
        description="GetRecords Limit (Kinesis allows 10,000).",
    )
    poll_interval_seconds: float = Field(
        default=DEFAULT_POLL_INTERVAL_SECONDS,
        gt=0,
        le=60,
        description=(
            "Wait between polls of a caught-up shard. A shard that is behind is polled again as "
            "soon as Kinesis' 5 calls/s per shard allow; calls are never closer than 0.2 s."
        ),
    )
    bundle_seconds: float = Field(
        default=0.0,
        ge=0,
        le=3_600,
        description=(
            "Keep polling for this long within one process call (one bundle) before deferring. "
            "Downstream writers commit once per bundle, so this is the commit interval; "
            "0: one round of polls per bundle."
        ),
    )
    split_by_lineage: bool = Field(
        default=True,
        description=(
            "Split the read into one restriction per shard lineage (shards linked by splits and "
            "merges), which a runner with several workers reads in parallel. Off: one restriction "
            "reads every shard, each round polling all of them (best on a single worker)."
        ),
    )
    stop_when_idle_seconds: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Finish once every shard is caught up and no record arrived for this long (ends a "
            "streaming pipeline: tests, `--stop-when-idle`). None: read forever."
        ),
    )
    max_retries: int = Field(
        default=8,
        ge=0,
        le=100,
        description="Throttled or failed calls retried in a row per shard before KinesisReadError.",
    )
    backoff_base_seconds: float = Field(
        default=0.1, gt=0, description="First retry waits up to this long (full jitter)."
    )
    backoff_cap_seconds: float = Field(
        default=5.0, gt=0, description="Longest wait between retries; waits double up to it."
    )
    discovery_interval_seconds: float = Field(
        default=10.0, gt=0, description="How often ListShards looks for new shards (resharding)."
    )
    watermark_margin_seconds: float = Field(
        default=2.0,
        ge=0,
        description=(
            "A caught-up shard's watermark is the poll's wall-clock time minus this, allowing for "
            "records that arrived just before the poll but were not yet visible to it."
        ),
    )
    connect_timeout_seconds: float = Field(
        default=5.0, gt=0, description="botocore connect timeout."
    )
    read_timeout_seconds: float = Field(default=10.0, gt=0, description="botocore read timeout.")
    region_name: str | None = Field(
        default=None, description="AWS region; None: from the environment (AWS_DEFAULT_REGION...)."
    )
